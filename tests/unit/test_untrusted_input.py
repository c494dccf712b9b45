"""What servers and kubectl send is data, never instructions: escaping for the terminal, URL checks,
redirect suggestions, time bounds on trickling answers, exec requests we do not speak, cached
expiries that cannot be formatted, and Keystone answers for someone else."""
from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from types import SimpleNamespace
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubectl_caas import exec_plugin, http, keystone
from kubectl_caas.plugins import OPENSTACK
from kubectl_caas.runtime import Runtime
from kubectl_caas.errors import EXIT_AUTH, CaasError, NetworkError
from kubectl_caas.terminal import printable

CONTROL = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)),
           *map(chr, range(0x2066, 0x206A))}


# ---------------------------------------------------------------------------------------------
# The terminal


@given(st.text())
def test_printable_output_holds_no_control_character(text):
    assert not CONTROL & set(printable(text))


@given(st.text(alphabet=st.characters(blacklist_characters=sorted(CONTROL), blacklist_categories=("Cs",))))
def test_printable_leaves_ordinary_text_alone(text):
    assert printable(text) == text


def test_printable_shows_what_it_escaped():
    assert printable("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\x0ac\\u202ed"


# ---------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize("url", ["https://iam.cloud.infn.it/device", "https://h:8443/p?q=1", "http://127.0.0.1:9/x",
                                 "http://localhost/x", "http://[::1]:8080/"])
def test_secure_urls(url):
    assert http.is_secure_url(url)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "-new-window",
                                 "http://iam.example.org/device", "https://", "https://h/\x1b[2J", " https://h/",
                                 "https://h/a b", "https://h:port/", "", None, 42, "ftp://h/"])
def test_unsafe_urls(url):
    assert not http.is_secure_url(url)


@pytest.mark.parametrize("base, request_url, location, suggested", [
    ("https://a:5000/v3", "https://a:5000/v3/auth/tokens", "https://b/identity/v3/auth/tokens", "https://b/identity/v3"),
    ("https://a:5000/v3", "https://a:5000/v3/auth/tokens?nocatalog", "https://b:5000/v3/auth/tokens?nocatalog",
     "https://b:5000/v3"),
    ("https://a:5000/v3", "https://a:5000/v3/auth/tokens", "/other/v3/auth/tokens", "https://a:5000/other/v3"),
    ("https://iam.a", "https://iam.a/.well-known/openid-configuration", "http://iam.b/.well-known/openid-configuration",
     "http://iam.b"),
    ("https://a/v3", "https://a/v3/auth/tokens", "https://b/login", "https://b"),
])
def test_a_refused_redirect_suggests_where_the_service_moved(base, request_url, location, suggested):
    assert http.suggest_base(base, request_url, location) == suggested


# ---------------------------------------------------------------------------------------------
# Time: an answer that trickles in never outlives the deadline


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Plain HTTP on 127.0.0.1: headers at once, then one body byte every 0.2 s for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    listener.close()
    thread.join(5)


def test_a_trickling_answer_ends_at_the_deadline_although_no_read_times_out(trickling_server):
    session = http.new_session("the test server")
    deadline = http.Deadline("the test server", trickling_server, total=1.5)
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        http.with_retries(lambda: session.get(trickling_server, timeout=deadline.timeout()), lambda exc: False,
                          deadline, Runtime())
    elapsed = time.monotonic() - started
    assert "did not answer in time" in str(caught.value)
    assert elapsed < 10  # a per-read timeout alone would wait for 100000 bytes at 5 per second
    assert not http._armed  # the timer is disarmed afterwards


def test_nested_deadlines_never_extend_the_outer_one():
    with http.Deadline("outer", total=1.0) as outer:
        inner = http.Deadline("inner", total=60.0)
        assert inner.end <= outer.end


# ---------------------------------------------------------------------------------------------
# What kubectl asks for


def test_an_exec_api_version_we_do_not_speak_is_one_clear_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_EXEC_INFO", json.dumps(
        {"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1alpha1", "spec": {}}))
    assert exec_plugin.get_token(OPENSTACK, ["--auth-url", "https://k/v3", "--user", "u", "--project", "p"],
                                 Runtime()) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "v1alpha1" in err and "Traceback" not in err


def test_deeply_nested_exec_info_is_not_a_crash(monkeypatch):
    environ = {"KUBERNETES_EXEC_INFO": '{"a":' * 100000 + "1" + "}" * 100000}
    assert exec_plugin.exec_info(environ) == (exec_plugin.DEFAULT_EXEC_API_VERSION, None)


@pytest.mark.parametrize("expires_at", [1e300, float("inf"), float("nan"), -1, 0, "1e400", 2.6e11])
def test_a_cached_expiry_that_cannot_be_a_date_is_a_miss(expires_at):
    entry = {"tokens": {"keystone": {"value": "t", "expires_at": expires_at, "issued_at": 0}}}
    assert exec_plugin.cached_token(entry, "keystone") is None
    assert exec_plugin.fresh_token(entry, "keystone", time.time()) is None


# ---------------------------------------------------------------------------------------------
# Keystone answers are checked before anything trusts them


def fake_access(**overrides):
    now = dt.datetime.now(dt.timezone.utc)
    fields = dict(auth_token="gAAAA-token", user_id="u-1", username="alice", project_id="p-1", project_name="CMS",
                  project_scoped=True, issued=now, expires=now + dt.timedelta(hours=9))
    fields.update(overrides)
    return SimpleNamespace(**fields)


def checked(access, **identity):
    ks = keystone.Keystone(keystone.Identity(auth_url="https://k:5000", **identity), Runtime())
    return ks._checked(access, "the login", time.time(), None, True)


def test_a_token_for_the_user_and_project_asked_for_is_accepted():
    assert checked(fake_access(), user="Alice", project="cms").local_expires > time.time() + 9 * 3600 - 5


@pytest.mark.parametrize("overrides, identity, needle", [
    ({"username": "mallory"}, {"user": "alice", "project": "CMS"}, "user mallory"),
    ({"user_id": "u-2"}, {"user_id": "u-1", "project": "CMS"}, "user u-2"),
    ({"project_name": "ATLAS", "project_id": "p-2"}, {"user": "alice", "project": "CMS"}, "project ATLAS"),
    ({"project_id": "p-2"}, {"user": "alice", "project_id": "p-1"}, "not p-1"),
])
def test_a_token_for_someone_else_is_refused(overrides, identity, needle):
    with pytest.raises(CaasError) as caught:
        checked(fake_access(**overrides), **identity)
    assert needle in str(caught.value) and caught.value.exit_code == EXIT_AUTH


@pytest.mark.parametrize("overrides", [
    {"auth_token": ""}, {"auth_token": "tok\r\nX-Evil: 1"}, {"auth_token": None},
    {"expires": dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)}, {"expires": "tomorrow"},
])
def test_a_malformed_or_absurd_keystone_answer_is_refused(overrides):
    with pytest.raises(CaasError):
        checked(fake_access(**overrides), user="alice", project="CMS")


@pytest.mark.parametrize("offset_hours", [1, -2])
def test_keystone_expiry_is_counted_on_the_local_clock(offset_hours):
    # Keystone's clock is off from ours by hours; its token lives 9 h by its own clock.
    issued = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=offset_hours)
    access = checked(fake_access(issued=issued, expires=issued + dt.timedelta(hours=9)), user="alice", project="CMS")
    assert abs(access.local_expires - (time.time() + 9 * 3600)) < 5
    assert abs(access.clock_offset - offset_hours * 3600) < 5


def redirect(request_url: str, location: str, status: int = 307):
    import requests

    response = requests.Response()
    response.status_code = status
    response.headers["Location"] = location
    response.request = requests.Request("POST", request_url).prepare()
    return response


@pytest.mark.parametrize("request_url, location, hint", [
    ("https://k:5000/v3/auth/tokens", "https://k2:5000/v3/auth/tokens", "use --auth-url https://k2:5000/v3"),
    # a downgrade is never recommended, though it is what the server asked for
    ("https://k:5000/v3/auth/tokens", "http://k2:5000/v3/auth/tokens", "ask your site for the https URL"),
    # /v30 is not below /v3: no guess from a path that only looks similar
    ("https://k:5000/v30/auth/tokens", "https://k2/v30/auth/tokens", "an endpoint of it moved"),
])
def test_a_refused_redirect_hints_only_at_a_safe_url_below_the_configured_one(request_url, location, hint):
    message, said = http._describe_redirect(redirect(request_url, location), "Keystone", "https://k:5000/v3",
                                            "--auth-url")
    assert message == f"Keystone at https://k:5000/v3 redirects to {location} (HTTP 307)"
    assert hint in said


def test_an_operation_that_finishes_in_time_leaves_no_timer_behind():
    import signal

    with http.Deadline("quick", total=5.0):
        pass
    assert not http._armed and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    http._on_alarm(signal.SIGALRM, None)  # a late signal with no deadline armed changes nothing


def test_an_expired_inner_deadline_is_reported_and_the_outer_one_goes_on():
    with http.Deadline("outer", total=30.0):
        with pytest.raises(NetworkError) as caught:
            with http.Deadline("inner", "https://slow.example", total=0.2):
                threading.Event().wait(5)  # blocks until the timer interrupts it
        assert "inner at https://slow.example did not answer in time" in str(caught.value)
        assert len(http._armed) == 1
    assert not http._armed

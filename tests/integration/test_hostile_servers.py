"""Self-tests of the hostile test servers (tests/servers/faults.py and tests/servers/hostile.py).

These use plain clients (requests, http.client, a raw TLS socket), not the plugins: they show
that each server misbehaves exactly as documented, so that a plugin test built on one of them
fails only because of the plugin. Most use a Recorder as the proxy's upstream, which starts in
milliseconds; the rewrite_json tests use the real Keystone.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import tracemalloc
from typing import Callable, Iterator, List, Tuple

import pytest
import requests

from tests.integration.harness import unique
from tests.servers import faults
from tests.servers.faults import FaultProxy, huge_body
from tests.servers.hostile import (
    FORGED_LINE,
    OSC52_PAYLOAD,
    Recorder,
    control_chars_sample,
    deep_json,
    unsafe_characters,
)
from tests.servers.tls import make_pki

PASSWORD = "correct horse battery staple"
TOKENS = "/v3/auth/tokens"
DELAY = 0.2  # trickle delay: small, so the tests stay quick


@pytest.fixture
def upstream(pki) -> Iterator[Recorder]:
    """A stand-in upstream for the proxy: HTTPS with the test PKI, answers 200 {"upstream": true}."""
    with Recorder(pki.server_cert, pki.server_key, body=b'{"upstream": true}') as recorder:
        yield recorder


@pytest.fixture
def proxy(upstream, pki) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url, pki.server_cert, pki.server_key, upstream_ca=pki.ca_cert) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def web(pki) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # no proxies or CA bundles from the environment
    session.verify = str(pki.ca_cert)
    yield session
    session.close()


def tls_socket(port: int, ca_cert, timeout: float = 5.0) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca_cert))
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def send_request(sock: ssl.SSLSocket, method: str, path: str) -> None:
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())


def read_for(sock: ssl.SSLSocket, seconds: float) -> Tuple[bytes, float, bool]:
    """What arrives within ``seconds`` (each read waits only for what is left of them), the longest
    wait of a read that did return data, and whether the server closed the connection."""
    deadline = time.monotonic() + seconds
    data, longest = b"", 0.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, longest, False
        sock.settimeout(left)
        started = time.monotonic()
        try:
            piece = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return data, longest, False
        if not piece:
            return data, longest, True
        longest = max(longest, time.monotonic() - started)
        data += piece


def read_head(sock: ssl.SSLSocket, limit: float = 5.0) -> Tuple[bytes, bytes]:
    """The response head (up to the blank line) and whatever body bytes came with it."""
    data = b""
    deadline = time.monotonic() + limit
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, f"no complete head within {limit} s: {data!r}"
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        piece = sock.recv(65536)
        assert piece, f"connection closed after {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def eventually(condition: Callable[[], bool], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def threads_named(prefix: str) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


# ---------------------------------------------------------------------------------------------
# redirect


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_carries_the_location(proxy, web, pki, status):
    with Recorder(pki.server_cert, pki.server_key) as other:
        proxy.redirect("POST", TOKENS, other.url_for, status=status)
        answer = web.post(proxy.url + TOKENS + "?nocatalog", json={"a": 1}, allow_redirects=False, timeout=10)
        assert answer.status_code == status
        assert answer.headers["Location"] == other.url + TOKENS + "?nocatalog"
        assert other.requests == [] and other.connections == 0
    assert proxy.seen[-1].outcome == "redirect"


def test_redirect_to_a_fixed_plain_http_url_then_pass_through(proxy, upstream, web):
    with Recorder() as plain:
        assert plain.url.startswith("http://127.0.0.1:")
        proxy.redirect("GET", r"/v3/.*", plain.url + "/elsewhere", times=1)
        first = web.get(proxy.url + "/v3/projects", allow_redirects=False, timeout=10)
        assert first.status_code == 307 and first.headers["Location"] == plain.url + "/elsewhere"
        second = web.get(proxy.url + "/v3/projects", allow_redirects=False, timeout=10)
        assert second.status_code == 200 and second.json() == {"upstream": True}
    assert [r.path for r in upstream.requests] == ["/v3/projects"]


def test_redirect_rejects_a_status_that_is_not_3xx(proxy):
    with pytest.raises(ValueError):
        proxy.redirect("GET", "/", "https://127.0.0.1:1/", status=200)


def test_a_client_that_follows_redirects_leaks_to_a_trusted_recorder(proxy, web, pki):
    # What the Recorder is for: requests follows a 307 with the body, across hosts.
    with Recorder(pki.server_cert, pki.server_key) as other:
        proxy.redirect("POST", TOKENS, other.url_for)
        answer = web.post(proxy.url + TOKENS, json={"password": PASSWORD},
                           headers={"X-Auth-Token": "token-abc"}, timeout=10)
        assert answer.status_code == 200 and answer.json() == {}
        assert other.handshakes == 1
        (request,) = other.requests
        assert request.method == "POST" and request.path == TOKENS
        assert other.saw(PASSWORD) and other.saw("token-abc")


def test_an_untrusted_recorder_gets_connections_but_no_request(web, tmp_path):
    foreign = make_pki(tmp_path / "foreign", name="foreign")
    with Recorder(foreign.server_cert, foreign.server_key) as other:
        with pytest.raises(requests.exceptions.SSLError):
            web.post(other.url + TOKENS, data=PASSWORD, timeout=10)
        assert eventually(lambda: other.connections == 1)
        assert other.handshakes == 0 and other.requests == []


# ---------------------------------------------------------------------------------------------
# respond with headers


def test_respond_with_extra_headers_and_without_x_subject_token(proxy, web):
    body = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z"}}
    proxy.respond("POST", TOKENS, 201, json.dumps(body), "application/json",
                  headers=[("X-Openstack-Request-Id", "req-1"), ("Set-Cookie", "a=b")])
    answer = web.post(proxy.url + TOKENS, json={}, timeout=10)
    assert answer.status_code == 201 and answer.json() == body
    assert "X-Subject-Token" not in answer.headers
    assert answer.headers["X-Openstack-Request-Id"] == "req-1" and answer.headers["Set-Cookie"] == "a=b"
    assert answer.headers["Content-Type"] == "application/json"


def test_respond_headers_replace_content_type_or_leave_it_out(proxy, web):
    proxy.respond("GET", "/a", 200, "x", headers=[("content-type", "text/x-odd")])
    proxy.respond("GET", "/b", 200, "x", content_type=None)
    assert web.get(proxy.url + "/a", timeout=10).headers["Content-Type"] == "text/x-odd"
    assert "Content-Type" not in web.get(proxy.url + "/b", timeout=10).headers


def test_respond_can_lie_about_the_content_length(proxy, pki):
    proxy.respond("GET", "/short", 200, b'{"a": 1}', "application/json", headers=[("Content-Length", "1000")])
    connection = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=5,
                                             context=ssl.create_default_context(cafile=str(pki.ca_cert)))
    try:
        connection.request("GET", "/short")
        response = connection.getresponse()
        assert response.getheader("Content-Length") == "1000"
        with pytest.raises(http.client.IncompleteRead):
            response.read()  # the proxy closes the connection after 8 bytes
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# trickle


def test_trickle_sends_the_head_at_once_then_one_body_byte_per_delay(proxy, pki):
    body = b'{"padding": "' + b"y" * 200 + b'"}'
    proxy.trickle("GET", "/slow", body=body, delay=DELAY)
    with tls_socket(proxy.port, pki.ca_cert) as sock:
        send_request(sock, "GET", "/slow")
        head, early = read_head(sock, limit=DELAY * 5)
        assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {len(body)}".encode() in head
        window = 1.0
        data, longest, closed = read_for(sock, window)
    data = early + data
    assert not closed
    assert 2 <= len(data) < window / DELAY + 2, len(data)
    assert body.startswith(data)
    assert longest < 1.0  # each byte came well within any sensible per-read timeout


def test_trickle_head_sends_even_the_header_bytes_one_by_one(proxy, pki):
    proxy.trickle("GET", "/slow", delay=DELAY, head=True)
    with tls_socket(proxy.port, pki.ca_cert) as sock:
        send_request(sock, "GET", "/slow")
        window = 1.0
        data, longest, closed = read_for(sock, window)
    assert not closed
    assert 2 <= len(data) < window / DELAY + 2, data
    assert b"HTTP/1.1 200 OK\r\n".startswith(data)
    assert longest < 1.0


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_trickle_delivers_the_whole_body_in_each_framing(proxy, web, framing):
    body = b'{"ok": 1}'
    proxy.trickle("GET", "/slow", body=body, delay=0.02, framing=framing, status=202,
                  headers=[("X-Slow", "yes")])
    answer = web.get(proxy.url + "/slow", timeout=5)
    assert answer.status_code == 202 and answer.content == body and answer.headers["X-Slow"] == "yes"
    assert ("Transfer-Encoding" in answer.headers) == (framing == "chunked")
    assert ("Content-Length" in answer.headers) == (framing == "length")


def test_trickle_with_head_still_gives_a_valid_answer(proxy, web):
    proxy.trickle("GET", "/slow", body=b"{}", delay=0.005, head=True, framing="chunked")
    answer = web.get(proxy.url + "/slow", timeout=10)
    assert answer.status_code == 200 and answer.json() == {}


def test_trickle_stops_when_the_client_goes_away(proxy, pki):
    # The next byte is due in 30 s: only noticing the closed connection can end it sooner.
    proxy.trickle("GET", "/slow", body=b"z" * 10_000, delay=30)
    sock = tls_socket(proxy.port, pki.ca_cert)
    send_request(sock, "GET", "/slow")
    read_head(sock)
    assert proxy.connections == 1
    sock.close()
    assert eventually(lambda: proxy.connections == 0, within=2.0)


def test_trickle_stops_at_the_hang_limit(proxy, pki, monkeypatch):
    monkeypatch.setattr(faults, "HANG_LIMIT", 0.6)
    proxy.trickle("GET", "/slow", body=b"z" * 1000, delay=0.05)
    with tls_socket(proxy.port, pki.ca_cert) as sock:
        send_request(sock, "GET", "/slow")
        _, early = read_head(sock)
        data, _, closed = read_for(sock, 5.0)
    assert closed and 0 < len(early + data) < 1000


def test_stop_ends_slow_answers_and_leaves_no_thread(upstream, pki):
    proxy = FaultProxy(upstream.url, pki.server_cert, pki.server_key, upstream_ca=pki.ca_cert).start()
    prefix = f"fault-proxy-{proxy.port}"
    proxy.trickle("GET", "/slow", body=b"z" * 100, delay=30)  # far slower than the test
    proxy.hang("GET", "/hang")
    with tls_socket(proxy.port, pki.ca_cert) as slow, tls_socket(proxy.port, pki.ca_cert) as hung, \
            tls_socket(proxy.port, pki.ca_cert) as idle:
        send_request(slow, "GET", "/slow")
        read_head(slow)
        send_request(hung, "GET", "/hang")
        send_request(idle, "GET", "/forwarded")
        read_head(idle)  # answered; the connection stays open (keep-alive)
        assert eventually(lambda: proxy.connections == 3)
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 3.0
        assert threads_named(prefix) == []
        for sock in (slow, hung, idle):
            assert read_for(sock, 2.0)[2]  # closed by the proxy


# ---------------------------------------------------------------------------------------------
# huge


def test_huge_streams_more_than_the_client_reads_without_holding_it(proxy, web):
    size = 3 << 29  # 1.5 GiB announced
    proxy.huge("POST", "/token", size)
    wanted = 64 << 20
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer = web.post(proxy.url + "/token", data={"grant_type": "x"}, stream=True, timeout=10)
        assert answer.headers["Content-Length"] == str(size)
        received, first = 0, b""
        for piece in answer.iter_content(1 << 16):
            first = first or piece
            received += len(piece)
            if received >= wanted:
                break
        answer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received >= wanted
    assert first.startswith(b'{"padding": "xxxx')
    assert peak < 16 << 20, f"{peak} bytes at the peak"  # neither side held the body
    assert eventually(lambda: proxy.connections == 0, within=3.0)  # the stream stopped with the client


def test_huge_chunked_ends_properly(proxy, web):
    proxy.huge("GET", "/big", 300_000, chunk=4096, prefix=b"[", framing="chunked")
    answer = web.get(proxy.url + "/big", timeout=10)
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert len(answer.content) == 300_000 and answer.content.startswith(b"[xxx")


def test_huge_body_pieces_add_up():
    pieces = list(huge_body(b'{"a": "', 100_003, chunk=1000))
    assert sum(map(len, pieces)) == 100_003 and max(map(len, pieces)) == 1000
    assert b"".join(pieces).startswith(b'{"a": "xxx')
    assert list(huge_body(b"abcdef", 3)) == [b"abc"]


# ---------------------------------------------------------------------------------------------
# rewrite_json, against the real Keystone


@pytest.fixture(scope="module")
def keystone_user(keystone) -> Tuple[str, str]:
    project = unique("Hostile")
    project_id = keystone.create_project(project)
    user = unique("holly")
    keystone.create_user(user, PASSWORD, projects=[project_id])
    return user, project


@pytest.fixture
def keystone_proxy(keystone, pki) -> Iterator[FaultProxy]:
    with FaultProxy(keystone.url, pki.server_cert, pki.server_key, upstream_ca=keystone.ca_cert) as fault_proxy:
        yield fault_proxy


def password_login(web: requests.Session, url: str, user: str, project: str) -> requests.Response:
    auth = {"identity": {"methods": ["password"],
                         "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}
    return web.post(url + "/v3/auth/tokens?nocatalog", json={"auth": auth}, timeout=30)


def test_rewrite_json_edits_a_real_keystone_answer_and_keeps_the_token_header(keystone, keystone_proxy, keystone_user,
                                                                              web):
    user, project = keystone_user
    hostile = control_chars_sample()
    calls = []

    def edit(status, headers, body):
        calls.append((status, [name.lower() for name, _ in headers]))
        body["token"]["project"]["name"] = "SomeoneElse"
        body["token"]["user"]["name"] = hostile
        return status, headers + [("X-Edited", "1")], body

    keystone_proxy.rewrite_json("POST", TOKENS, edit, times=1)
    answer = password_login(web, keystone_proxy.url, user, project)
    assert answer.status_code == 201
    assert calls and calls[0][0] == 201 and "x-subject-token" in calls[0][1]
    token = answer.headers["X-Subject-Token"]
    assert keystone.validate_token(token)  # a real token, passed through untouched
    assert answer.headers["X-Edited"] == "1"
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    document = answer.json()
    assert document["token"]["project"]["name"] == "SomeoneElse"
    assert document["token"]["user"]["name"] == hostile
    assert "\u202e".encode() in answer.content  # non-ASCII goes on the wire raw, not \u-escaped
    # times=1: the next login is the real answer again.
    assert password_login(web, keystone_proxy.url, user, project).json()["token"]["project"]["name"] == project


def test_rewrite_json_can_drop_the_token_header(keystone_proxy, keystone_user, web):
    user, project = keystone_user

    def drop(status, headers, body):
        return status, [(k, v) for k, v in headers if k.lower() != "x-subject-token"], body

    keystone_proxy.rewrite_json("POST", TOKENS, drop)
    answer = password_login(web, keystone_proxy.url, user, project)
    assert answer.status_code == 201 and "X-Subject-Token" not in answer.headers
    assert answer.json()["token"]["user"]["name"] == user


def test_rewrite_json_edits_a_real_device_authorization_answer(oidc_provider, oidc_pki, web):
    hostile = control_chars_sample()

    def edit(status, headers, body):
        # The proxy has already put its own origin in place of the provider's.
        assert body["verification_uri"].startswith(proxy.url)
        return status, headers, {**body, "verification_uri_complete": "javascript:alert(1)",
                                 "verification_uri": "-oProxyCommand=sh", "user_code": hostile}

    with FaultProxy(oidc_provider.issuer, oidc_pki.server_cert, oidc_pki.server_key,
                    upstream_ca=oidc_provider.ca_cert) as proxy:
        proxy.rewrite_json("POST", "/devicecode", edit)
        answer = web.post(proxy.url + "/devicecode", data={"client_id": oidc_provider.client_id, "scope": "openid"},
                          verify=str(oidc_pki.ca_cert), timeout=10)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["verification_uri_complete"] == "javascript:alert(1)"
    assert document["verification_uri"] == "-oProxyCommand=sh"
    assert document["user_code"] == hostile
    assert document["device_code"] and document["expires_in"] == 600  # the rest is the provider's own


def test_a_failing_rewrite_json_callback_answers_500(proxy, web):
    proxy.rewrite_json("GET", "/x", lambda status, headers, body: 1 / 0)
    answer = web.get(proxy.url + "/x", timeout=10)
    assert answer.status_code == 500 and "ZeroDivisionError" in answer.text


def test_rewrite_json_gets_none_for_a_non_json_body_and_may_answer_raw_bytes(proxy, upstream, web):
    upstream.answer(200, "<html>not json</html>", "text/html")
    seen = []

    def edit(status, headers, body):
        seen.append(body)
        return 200, [("Content-Type", "application/json"), ("Content-Length", "1")], deep_json(50)

    proxy.rewrite_json("GET", "/page", edit)
    answer = web.get(proxy.url + "/page", timeout=10)
    assert seen == [None]
    assert answer.content == deep_json(50) and answer.headers["Content-Length"] == str(len(deep_json(50)))


# ---------------------------------------------------------------------------------------------
# Recorder


def test_recorder_records_method_path_headers_and_body(web, pki):
    with Recorder(pki.server_cert, pki.server_key) as recorder:
        answer = web.post(recorder.url + "/token?x=1", data={"refresh_token": "rt-1/2+3", "password": PASSWORD},
                           headers={"X-Auth-Token": "tok"}, auth=("client", "app-secret"), timeout=10)
        assert answer.status_code == 200 and answer.json() == {}
        (request,) = recorder.requests
    assert request.method == "POST" and request.path == "/token?x=1"
    assert request.header("x-auth-token") == "tok"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert b"refresh_token=rt-1%2F2%2B3" in request.body
    for secret in ("rt-1/2+3", PASSWORD, "app-secret", "tok"):
        assert recorder.saw(secret), secret
    assert not recorder.saw("never sent")


def test_plain_http_recorder_records_any_method_and_chunked_bodies(web):
    with Recorder(status=418, body="teapot", content_type="text/plain", headers=[("X-Why", "because")]) as recorder:
        assert recorder.scheme == "http"
        answer = web.put(recorder.url + "/a", data=iter([b"device-", b"code"]), timeout=10)
        assert answer.status_code == 418 and answer.text == "teapot" and answer.headers["X-Why"] == "because"
        recorder.answer(204, b"")
        assert web.request("PROPFIND", recorder.url + "/b", timeout=10).status_code == 204
        assert [(r.method, r.path, r.body) for r in recorder.requests] == [("PUT", "/a", b"device-code"),
                                                                            ("PROPFIND", "/b", b"")]
        assert recorder.saw("device-code")
        recorder.clear()
        assert recorder.requests == [] and recorder.connections == 0


def test_recorder_stop_leaves_no_thread(pki):
    recorder = Recorder(pki.server_cert, pki.server_key).start()
    prefix = f"recorder-{recorder.port}"
    with tls_socket(recorder.port, pki.ca_cert) as sock:
        send_request(sock, "GET", "/")
        read_head(sock)  # keep-alive: the connection's thread waits for a next request
        recorder.stop()
        assert threads_named(prefix) == []
        assert read_for(sock, 2.0)[2]


# ---------------------------------------------------------------------------------------------
# Hostile bodies and strings


def test_deep_json_is_valid_but_too_deep_for_a_recursive_parser():
    assert json.loads(deep_json(3)) == {"a": {"a": {"a": 1}}}
    assert json.loads(deep_json(2, "array")) == [[1]]
    with pytest.raises(RecursionError):
        json.loads(deep_json(100_000))
    assert len(deep_json(100_000)) < 1 << 20


def test_control_chars_sample_holds_every_kind_of_attack():
    sample = control_chars_sample()
    assert "\x1b[31m" in sample  # CSI colour
    assert "\x1b]52;c;" in sample and sample.count("\x07") >= 1  # OSC 52 clipboard write
    assert f"\n{FORGED_LINE}\n" in sample
    assert "\x9b" in sample and "\x7f" in sample and "\u202e" in sample
    assert OSC52_PAYLOAD not in sample  # only base64-encoded
    found = set(unsafe_characters(sample))
    assert {"\x1b", "\x07", "\n", "\r", "\x9b", "\x7f", "\x08", "\u202e"} <= found
    assert "\n" not in unsafe_characters(sample, allow="\n")
    assert unsafe_characters("plain text, tabs\tand ünïcödé") == []

"""kubectl_caas.oidc against a stub INDIGO IAM: the behaviour the real test provider cannot show.

Every HTTP request goes to a scripted fake behind requests' transport adapter (no network), ID
tokens are signed with keys made here, and the device-flow poll runs on a fake clock, so no test
sleeps. What is pinned: the RFC 8628 polling rules (default 5 s interval, slow_down, pending until
expiry), `audience` on every token request, IAM's trailing-slash issuer, clear errors for bodies
that are not JSON, ID-token verification, and refresh (rotation, failure -> login required).
"""
from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qsl

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from requests.structures import CaseInsensitiveDict

from kubectl_caas import cache, exec_plugin, http, oidc
from kubectl_caas.errors import AuthError, CaasError, LoginRequired, UsageError
from kubectl_caas.plugins import IAM
from kubectl_caas.runtime import Runtime

ISSUER = "https://iam.example.org"  # as the user configures it
ISSUER_SLASH = ISSUER + "/"  # as INDIGO IAM writes it in discovery and in its tokens
CLIENT_ID = "kubectl-client"
AUDIENCE = "https://kube.example.org"
DISCOVERY_URL = ISSUER + "/.well-known/openid-configuration"
DEVICE_URL = ISSUER + "/devicecode"
TOKEN_URL = ISSUER + "/token"
JWKS_URL = ISSUER + "/jwk"
START = 1000.0  # the fake clock's start

SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
IMPOSTOR_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, another key
ROTATED_KEY = RSAKey.generate_key(2048, parameters={"kid": "k2"})


def jwks(*keys: RSAKey) -> Dict[str, Any]:
    return KeySet(list(keys)).as_dict(private=False)


def id_token(key: RSAKey = SIGNING_KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER_SLASH, "sub": "alice-sub", "aud": CLIENT_ID, "iat": now, "exp": now + 600,
              "preferred_username": "alice"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def oauth_error(code: str, status: int = 400):
    return status, {"error": code, "error_description": f"stub says {code}"}


PENDING = oauth_error("authorization_pending")
SLOW_DOWN = oauth_error("slow_down")


def token_answer(**extra: Any):
    body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token()}
    body.update(extra)
    return 200, {k: v for k, v in body.items() if v is not None}


def device_answer(**extra: Any) -> Dict[str, Any]:
    """What IAM answers on /devicecode: no `interval`, expires_in 600."""
    body = {"device_code": "dc-1", "user_code": "ABCD-EFGH", "verification_uri": ISSUER_SLASH + "device",
            "verification_uri_complete": ISSUER_SLASH + "device?user_code=ABCD-EFGH", "expires_in": 600}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


class FakeClock:
    """The monotonic clock and sleep handed to poll_device_flow: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class EndlessBody:
    """A response body streamed in chunks; counts how much of it the client read."""

    def __init__(self, total: int, chunk: bytes = b" " * 65536) -> None:
        self.left = total
        self.read_bytes = 0
        self.chunk = chunk

    def read(self, amt: Optional[int] = None, **_: Any) -> bytes:
        if self.left <= 0:
            return b""
        n = min(amt or len(self.chunk), len(self.chunk), self.left)
        self.left -= n
        self.read_bytes += n
        return self.chunk[:n]

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


@dataclass
class Sent:
    method: str
    url: str
    form: Dict[str, str]
    headers: Dict[str, str]
    at: Optional[float]  # the fake clock when the request went out


@dataclass
class FakeIAM:
    """Scripted IAM answers per URL; records every request. Unstubbed URLs fail the test."""

    metadata: Dict[str, Any] = field(default_factory=lambda: {
        "issuer": ISSUER_SLASH, "device_authorization_endpoint": DEVICE_URL, "token_endpoint": TOKEN_URL,
        "revocation_endpoint": ISSUER + "/revoke", "jwks_uri": JWKS_URL})
    keys: List[RSAKey] = field(default_factory=lambda: [SIGNING_KEY])
    routes: Dict[str, Callable[[Sent], Any]] = field(default_factory=dict)
    requests: List[Sent] = field(default_factory=list)
    clock: Optional[FakeClock] = None
    request_cost: float = 0.0  # fake seconds each request takes
    date_offset: Optional[float] = None  # when set, answers carry a Date header this far from our clock

    def __post_init__(self) -> None:
        self.route(DISCOVERY_URL, lambda sent: (200, self.metadata))
        self.route(JWKS_URL, lambda sent: (200, jwks(*self.keys)))

    def route(self, url: str, handler: Callable[[Sent], Any]) -> None:
        self.routes[url] = handler

    def script(self, url: str, *replies: Any) -> None:
        """Answer `url` with these replies in order; one request more fails the test."""
        queue = list(replies)

        def handler(sent: Sent) -> Any:
            assert queue, f"unexpected extra {sent.method} {sent.url}"
            return queue.pop(0)
        self.route(url, handler)

    def always(self, url: str, reply: Any) -> None:
        self.route(url, lambda sent: reply)

    def sent(self, url: str) -> List[Sent]:
        return [s for s in self.requests if s.url == url]

    def send(self, adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if len(self.requests) >= 5000:
            raise AssertionError("runaway: more than 5000 requests to the stub provider")
        url = (request.url or "").split("?")[0]
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        sent = Sent(request.method or "", url, dict(parse_qsl(body, keep_blank_values=True)),
                    dict(request.headers), self.clock() if self.clock else None)
        self.requests.append(sent)
        if self.clock:
            self.clock.now += self.request_cost
        handler = self.routes.get(url)
        if handler is None:
            raise AssertionError(f"no stub for {request.method} {url}")
        status, payload = handler(sent)
        response = requests.Response()
        response.status_code = status
        response.reason = "stub"
        response.url = request.url
        response.request = request
        # The body is streamed from `raw`, as from a socket, so stream=True behaves as it would for real.
        if isinstance(payload, EndlessBody):
            response.raw = payload
            response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        elif isinstance(payload, (dict, list)):
            response.raw = io.BytesIO(json.dumps(payload).encode())
            response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        else:
            response.raw = io.BytesIO(payload.encode() if isinstance(payload, str) else payload)
            response.headers = CaseInsensitiveDict({"Content-Type": "text/html"})
        response.encoding = "utf-8"
        if self.date_offset is not None:
            response.headers["Date"] = email.utils.formatdate(time.time() + self.date_offset, usegmt=True)
        return response


@pytest.fixture(autouse=True)
def real_sleeps(tmp_path, monkeypatch) -> List[float]:
    """Isolates each test; any real time.sleep (e.g. the HTTP layer's retry back-off) is recorded, not slept."""
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("KUBERNETES_EXEC_INFO", "IAM_CLIENT_SECRET", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "KUBECTL_CAAS_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    slept: List[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


_current: Dict[str, Any] = {}


def fake_runtime() -> Runtime:
    """The side effects a backend gets: the current test's fake clock, when it has one."""
    fake = _current.get("iam")

    def monotonic() -> float:
        return fake.clock() if fake is not None and fake.clock else time.monotonic()

    def sleep(seconds: float) -> None:
        if fake is not None and fake.clock:
            fake.clock.sleep(seconds)
        else:
            time.sleep(seconds)
    # No desktop: an interactive renewal here is a device flow, never the test machine's browser.
    environ = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return Runtime(environ=environ, monotonic=monotonic, sleep=sleep)


@pytest.fixture
def iam(monkeypatch) -> FakeIAM:
    fake = FakeIAM()
    _current["iam"] = fake

    def send(adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        return fake.send(adapter, request, **kwargs)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return fake


@pytest.fixture
def clock(iam) -> FakeClock:
    iam.clock = FakeClock()
    return iam.clock


def provider(audience: Optional[str] = AUDIENCE, issuer: str = ISSUER, **kwargs: Any) -> oidc.Provider:
    return oidc.Provider(oidc.Client(issuer=issuer, client_id=CLIENT_ID, audience=audience, **kwargs), fake_runtime())


def poll(iam: FakeIAM, clock: FakeClock, device: Optional[Dict[str, Any]] = None, **kwargs: Any):
    return oidc.poll_device_flow(provider(**kwargs), device or device_answer())


def poll_times(iam: FakeIAM) -> List[float]:
    return [s.at - START for s in iam.sent(TOKEN_URL)]


OPTIONS = {"issuer": ISSUER, "client_id": CLIENT_ID, "audience": AUDIENCE}  # get-token's values


def previous_entry(refresh_token: Optional[str] = "rt-1", with_discovery: bool = False) -> Dict[str, Any]:
    """A cache entry whose bearer has expired, as get-token hands it to renew()."""
    past = time.time() - 100
    entry: Dict[str, Any] = {
        "version": 1, "plugin": "iam", "issuer": ISSUER_SLASH, "client_id": CLIENT_ID,
        "claims": {"sub": "alice-sub", "preferred_username": "alice"},
        "tokens": {"id": {"value": "old-id-token", "expires_at": past, "issued_at": past - 600},
                   "access": {"value": "old-access", "expires_at": past, "issued_at": past - 3600}}}
    if refresh_token:
        entry["refresh_token"] = refresh_token
    if with_discovery:
        entry["metadata"] = FakeIAM().metadata
        entry["jwks"] = jwks(SIGNING_KEY)
    return entry


def get_token_args(options: Dict[str, str] = OPTIONS) -> List[str]:
    return [part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", value)]


def store_for_get_token(entry: Dict[str, Any], options: Dict[str, str] = OPTIONS) -> str:
    path = IAM.entry_path(options)
    cache.write_entry(path, entry)
    return path


def run_get_token(monkeypatch, capsys, interactive: bool = False):
    info = {"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
            "spec": {"interactive": interactive}}
    monkeypatch.setenv("KUBERNETES_EXEC_INFO", json.dumps(info))
    code = exec_plugin.get_token(IAM, get_token_args(), fake_runtime())
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# (a)(b)(c)(j) device-flow polling on a fake clock


def test_without_interval_in_the_device_answer_polls_every_5_seconds(iam, clock):
    iam.script(TOKEN_URL, PENDING, PENDING, token_answer())
    tokens = poll(iam, clock, device_answer())  # IAM's answer: no interval
    assert tokens["access_token"] == "at-1"
    assert clock.sleeps == [5.0, 5.0, 5.0]
    assert poll_times(iam) == [5.0, 10.0, 15.0]


def test_interval_sent_by_the_server_is_honoured(iam, clock):
    # The counterpart of the default: 5 s must come from the missing interval, not be hard-wired.
    iam.script(TOKEN_URL, PENDING, token_answer())
    poll(iam, clock, device_answer(interval=2))
    assert clock.sleeps == [2.0, 2.0]


@pytest.mark.parametrize("interval", [0, -3, "soon", None])
def test_unusable_interval_falls_back_to_the_5_second_default(iam, clock, interval):
    iam.script(TOKEN_URL, PENDING, token_answer())
    poll(iam, clock, device_answer(interval=interval))
    assert clock.sleeps == [5.0, 5.0]


def test_slow_down_adds_5_seconds_to_the_interval_for_every_later_poll(iam, clock):
    iam.script(TOKEN_URL, SLOW_DOWN, PENDING, SLOW_DOWN, PENDING, token_answer())
    poll(iam, clock, device_answer())
    assert clock.sleeps == [5.0, 10.0, 10.0, 15.0, 15.0]
    assert poll_times(iam) == [5.0, 15.0, 25.0, 40.0, 55.0]


def test_slow_down_adds_to_the_interval_the_server_sent(iam, clock):
    iam.script(TOKEN_URL, SLOW_DOWN, token_answer())
    poll(iam, clock, device_answer(interval=3))
    assert clock.sleeps == [3.0, 8.0]


def test_repeated_authorization_pending_keeps_polling_until_approved(iam, clock):
    iam.script(TOKEN_URL, *([PENDING] * 60), token_answer(access_token="at-approved"))
    tokens = poll(iam, clock, device_answer())
    assert tokens["access_token"] == "at-approved"
    assert len(iam.sent(TOKEN_URL)) == 61
    assert all(s.form["grant_type"] == oidc.DEVICE_GRANT and s.form["device_code"] == "dc-1"
               for s in iam.sent(TOKEN_URL))


@pytest.mark.parametrize("answer", [PENDING, SLOW_DOWN], ids=["authorization_pending", "slow_down"])
@pytest.mark.parametrize("request_cost", [0.0, 7.0], ids=["instant-answers", "7s-answers"])
def test_never_polls_past_expires_in_and_ends_with_expired_token_exit_3(iam, clock, answer, request_cost):
    # IAM may keep answering authorization_pending for a denied request until the code expires.
    iam.request_cost = request_cost
    iam.always(TOKEN_URL, answer)
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer(expires_in=600))
    assert caught.value.error == "expired_token"
    assert caught.value.exit_code == 3
    times = poll_times(iam)
    assert times and max(times) <= 600.0, "a poll went out after the code expired"
    assert clock.now - START <= 600.0 + request_cost, "kept waiting after the code expired"
    if answer is PENDING and request_cost == 0.0:
        assert len(times) >= 119, "gave up long before the code expired"


def test_missing_expires_in_still_bounds_the_polling(iam, clock):
    iam.always(TOKEN_URL, PENDING)
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer(expires_in=None))
    assert caught.value.error == "expired_token" and caught.value.exit_code == 3
    assert max(poll_times(iam)) <= 600.0


def test_interval_longer_than_the_code_lifetime_never_polls(iam, clock):
    iam.always(TOKEN_URL, PENDING)
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer(interval=30, expires_in=20))
    assert caught.value.error == "expired_token"
    assert iam.sent(TOKEN_URL) == [] and clock.sleeps == []


@pytest.mark.parametrize("code", ["expired_token", "access_denied"])
def test_expired_or_denied_answer_stops_polling_with_exit_3(iam, clock, code):
    iam.script(TOKEN_URL, PENDING, oauth_error(code))
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer())
    assert caught.value.error == code and caught.value.exit_code == 3
    assert len(iam.sent(TOKEN_URL)) == 2


def test_other_oauth_error_while_polling_is_raised_not_retried(iam, clock):
    iam.script(TOKEN_URL, oauth_error("invalid_client", 401))
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer())
    assert caught.value.error == "invalid_client"
    assert "HTTP 401" in str(caught.value)
    assert len(iam.sent(TOKEN_URL)) == 1


def test_polling_waits_only_through_the_injected_sleep_and_clock(iam, clock, real_sleeps):
    # (A poll that read the real monotonic clock for its deadline would never expire under the fake
    # sleep: test_never_polls_past_expires_in... would hit the stub's runaway guard.)
    iam.script(TOKEN_URL, PENDING, SLOW_DOWN, token_answer())
    started = time.perf_counter()
    poll(iam, clock, device_answer())
    assert real_sleeps == []
    assert time.perf_counter() - started < 5.0
    assert clock.sleeps == [5.0, 5.0, 10.0] and clock.now - START == 20.0


# ---------------------------------------------------------------------------------------------
# (d) audience on every request that IAM reads it from


def test_audience_is_sent_on_the_device_request_every_poll_and_every_refresh(iam, clock):
    iam.script(DEVICE_URL, (200, device_answer()))
    iam.script(TOKEN_URL, PENDING, SLOW_DOWN, PENDING, token_answer(refresh_token="rt-1"),
               token_answer(refresh_token="rt-2"), token_answer(refresh_token="rt-3"))
    p = provider(audience=AUDIENCE)
    device = oidc.start_device_flow(p)
    oidc.poll_device_flow(p, device)
    p.refresh("rt-1")
    p.refresh("rt-2")

    (device_request,) = iam.sent(DEVICE_URL)
    assert device_request.form["audience"] == AUDIENCE
    assert device_request.form["scope"] == oidc.DEFAULT_SCOPE
    token_requests = iam.sent(TOKEN_URL)
    polls = [s for s in token_requests if s.form.get("grant_type") == oidc.DEVICE_GRANT]
    refreshes = [s for s in token_requests if s.form.get("grant_type") == "refresh_token"]
    assert len(polls) == 4 and len(refreshes) == 2
    assert [s.form.get("audience") for s in polls + refreshes] == [AUDIENCE] * 6
    assert [s.form["refresh_token"] for s in refreshes] == ["rt-1", "rt-2"]
    # a public client: authlib puts client_id in the form, never a secret
    assert all(s.form.get("client_id") == CLIENT_ID and "client_secret" not in s.form
               for s in iam.requests if s.method == "POST")


def test_audience_is_sent_on_the_refresh_made_by_get_token_renewal(iam):
    iam.script(TOKEN_URL, token_answer(refresh_token="rt-2"))
    oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=False)
    (refresh,) = iam.sent(TOKEN_URL)
    assert refresh.form["grant_type"] == "refresh_token"
    assert refresh.form["audience"] == AUDIENCE


def test_no_audience_parameter_when_none_is_configured(iam, clock):
    iam.script(DEVICE_URL, (200, device_answer()))
    iam.script(TOKEN_URL, PENDING, token_answer(), token_answer())
    p = provider(audience=None)
    oidc.poll_device_flow(p, oidc.start_device_flow(p))
    p.refresh("rt-1")
    assert all("audience" not in s.form for s in iam.requests)


# ---------------------------------------------------------------------------------------------
# (e) INDIGO IAM's trailing-slash issuer


@pytest.mark.parametrize("configured,announced", [(ISSUER, ISSUER_SLASH), (ISSUER_SLASH, ISSUER_SLASH),
                                                  (ISSUER_SLASH, ISSUER), (ISSUER, ISSUER)])
def test_trailing_slash_difference_between_configured_and_discovered_issuer_is_accepted(iam, configured, announced):
    iam.metadata["issuer"] = announced
    p = provider(issuer=configured)
    assert p.discover()["token_endpoint"] == TOKEN_URL
    assert p.issuer == announced  # kept exactly as the provider writes it
    (discovery,) = iam.requests
    assert discovery.url == DISCOVERY_URL  # no double slash when configured with one


def test_id_token_iss_must_equal_the_discovery_issuer_exactly_with_its_slash(iam):
    p = provider(issuer=ISSUER)  # configured without the slash; IAM announces it with one
    assert oidc.verify_id_token(p, id_token(iss=ISSUER_SLASH))["sub"] == "alice-sub"
    with pytest.raises(AuthError) as caught:
        oidc.verify_id_token(p, id_token(iss=ISSUER))  # what was configured, but not what IAM writes
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("announced", [
    "https://other.example.org/", "https://iam.example.org/realms/cms/", "https://iam.example.org.evil.example/",
    "http://iam.example.org/", "https://iam.example.org:8443/", "HTTPS://IAM.EXAMPLE.ORG/", None])
def test_discovery_naming_a_different_issuer_is_refused(iam, announced):
    iam.metadata["issuer"] = announced
    if announced is None:
        del iam.metadata["issuer"]
    p = provider()
    with pytest.raises(CaasError) as caught:
        oidc.start_device_flow(p)
    assert "check --issuer" in str(caught.value)
    assert iam.sent(DEVICE_URL) == [], "used the endpoints of a discovery document naming another issuer"
    assert p.metadata is None


# ---------------------------------------------------------------------------------------------
# (i) plain http only on loopback


@pytest.mark.parametrize("issuer", ["http://iam.example.org", "http://iam.example.org/", "http://10.1.2.3:8080",
                                    "http://localhost.example.org", "http://127.0.0.1.example.org",
                                    "ftp://iam.example.org", "iam.example.org", "https://"])
def test_plain_http_or_malformed_issuer_is_refused(iam, issuer):
    with pytest.raises(UsageError) as caught:
        oidc.Client(issuer=issuer, client_id=CLIENT_ID)
    assert caught.value.exit_code == 2
    if issuer.startswith("http://"):
        assert "loopback" in str(caught.value)
    with pytest.raises(UsageError):
        oidc.Client.from_values({"issuer": issuer, "client_id": CLIENT_ID})  # get-token's path too
    assert iam.requests == []


@pytest.mark.parametrize("issuer", ["http://localhost:8080", "http://127.0.0.1:9000", "http://127.0.0.2",
                                    "http://[::1]:8443/", "https://iam.example.org"])
def test_plain_http_issuer_is_allowed_on_loopback(issuer):
    # allowed, and written without the trailing slash (the one spelling kept in args and cache keys)
    assert oidc.Client(issuer=issuer, client_id=CLIENT_ID).issuer == issuer.rstrip("/")


def test_plain_http_endpoint_announced_by_an_https_issuer_is_refused(iam):
    iam.metadata["device_authorization_endpoint"] = "http://iam.example.org/devicecode"
    with pytest.raises(CaasError) as caught:
        oidc.start_device_flow(provider())
    assert "is not an https:// URL" in str(caught.value)
    assert [s.url for s in iam.requests] == [DISCOVERY_URL]


# ---------------------------------------------------------------------------------------------
# (f) answers that are not usable JSON

HTML = "<html><body><h1>403 Forbidden</h1>\n<p>nginx</p></body></html>"


def _call(p: oidc.Provider, which: str, clock: FakeClock) -> Any:
    if which == "device request":
        return oidc.start_device_flow(p)
    if which == "poll":
        return oidc.poll_device_flow(p, device_answer())
    return p.refresh("rt-1")


@pytest.mark.parametrize("which", ["device request", "poll", "refresh"])
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_non_json_4xx_is_one_clear_caas_error_naming_the_http_status(iam, clock, which, status):
    if (which, status) == ("device request", 404):
        pytest.skip("INDIGO IAM's answer for an unknown client: its own message, below")
    iam.always(DEVICE_URL if which == "device request" else TOKEN_URL, (status, HTML))
    with pytest.raises(CaasError) as caught:
        _call(provider(), which, clock)
    error = caught.value
    assert not isinstance(error, oidc.OAuthError)
    assert f"HTTP {status}" in str(error) and "not JSON" in str(error)
    assert "\n" not in str(error) and "<html>" not in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no chained JSON traceback


def test_non_json_4xx_in_get_token_prints_one_error_line_without_traceback(iam, monkeypatch, capsys):
    store_for_get_token(previous_entry())
    iam.always(TOKEN_URL, (403, HTML))
    code, out, err = run_get_token(monkeypatch, capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kubectl-iam: error: ") and "HTTP 403" in lines[0]
    assert "Traceback" not in err and "unexpected error" not in err


@pytest.mark.parametrize("which", ["device request", "poll", "refresh"])
@pytest.mark.parametrize("status,body", [(500, HTML), (502, ""), (503, {"error": "temporarily_unavailable"})])
def test_5xx_is_a_caas_error_naming_the_http_status(iam, clock, which, status, body):
    iam.always(DEVICE_URL if which == "device request" else TOKEN_URL, (status, body))
    with pytest.raises(CaasError) as caught:
        _call(provider(), which, clock)
    assert f"HTTP {status}" in str(caught.value)
    assert "\n" not in str(caught.value) and "<html>" not in str(caught.value)
    assert not isinstance(caught.value, oidc.OAuthError)  # not mistaken for a verdict on the grant
    # the HTTP layer may retry a transient 5xx, but boundedly
    assert 1 <= len(iam.sent(DEVICE_URL if which == "device request" else TOKEN_URL)) <= 3


def test_discovery_failure_names_the_http_status(iam):
    iam.always(DISCOVERY_URL, (500, HTML))
    with pytest.raises(CaasError) as caught:
        provider().discover()
    assert "HTTP 500" in str(caught.value) and DISCOVERY_URL in str(caught.value)


def _padded(size: int) -> Dict[str, Any]:
    """A well-formed device answer whose JSON is exactly `size` bytes."""
    answer = device_answer(pad="")
    answer["pad"] = "x" * (size - len(json.dumps(answer)))
    assert len(json.dumps(answer)) == size
    return answer


def test_oversized_body_is_refused_with_one_clear_error(iam):
    iam.always(DEVICE_URL, (200, _padded(http.MAX_ANSWER_BYTES + 1)))
    with pytest.raises(CaasError) as caught:
        oidc.start_device_flow(provider())
    assert "oversized" in str(caught.value) and "HTTP 200" in str(caught.value)


def test_body_at_the_size_limit_is_still_read(iam):
    iam.always(DEVICE_URL, (200, _padded(http.MAX_ANSWER_BYTES)))
    assert oidc.start_device_flow(provider())["device_code"] == "dc-1"


def test_oversized_body_is_not_downloaded_beyond_the_limit(iam):
    body = EndlessBody(32 * http.MAX_ANSWER_BYTES)
    iam.always(DEVICE_URL, (200, body))
    with pytest.raises(CaasError):
        oidc.start_device_flow(provider())
    assert body.read_bytes <= 2 * http.MAX_ANSWER_BYTES


# ---------------------------------------------------------------------------------------------
# (g) ID-token verification


def test_well_formed_id_token_is_accepted(iam):
    # The control for the refusals below: only the one thing each of them changes is wrong.
    claims = oidc.verify_id_token(provider(), id_token())
    assert claims["sub"] == "alice-sub" and claims["iss"] == ISSUER_SLASH


def test_id_token_with_audience_list_containing_the_client_is_accepted(iam):
    assert oidc.verify_id_token(provider(), id_token(aud=[AUDIENCE, CLIENT_ID]))["sub"] == "alice-sub"


@pytest.mark.parametrize("token", [
    pytest.param(lambda: id_token(key=IMPOSTOR_KEY), id="signed-by-another-key-same-kid"),
    pytest.param(lambda: id_token(aud="someone-else"), id="wrong-aud"),
    pytest.param(lambda: id_token(aud=["someone-else", AUDIENCE]), id="aud-list-without-client"),
    pytest.param(lambda: id_token(iss="https://other.example.org/"), id="wrong-iss"),
    pytest.param(lambda: id_token(exp=int(time.time()) - 3600), id="expired"),
    pytest.param(lambda: id_token(exp=int(time.time()) - 5), id="expired-seconds-ago"),
    pytest.param(lambda: id_token(exp=None), id="no-exp"),
])
def test_bad_id_token_is_refused_with_auth_error(iam, token):
    with pytest.raises(AuthError) as caught:
        oidc.verify_id_token(provider(), token())
    assert caught.value.exit_code == 3


def test_id_token_with_alg_none_is_refused(iam):
    def b64(data: Dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    good = jwt.decode(id_token(), SIGNING_KEY).claims
    unsigned = b64({"alg": "none", "kid": "k1"}) + "." + b64(good) + "."
    with pytest.raises(AuthError):
        oidc.verify_id_token(provider(), unsigned)


def test_unknown_kid_refetches_the_jwks_once_and_accepts_the_rotated_key(iam):
    p = oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID), fake_runtime(), jwks=jwks(SIGNING_KEY))  # cached, old
    iam.keys = [SIGNING_KEY, ROTATED_KEY]
    assert oidc.verify_id_token(p, id_token(key=ROTATED_KEY))["sub"] == "alice-sub"
    assert len(iam.sent(JWKS_URL)) == 1
    assert p.jwks == jwks(SIGNING_KEY, ROTATED_KEY)  # the new set is kept for the cache entry


def test_unknown_kid_after_the_refetch_is_refused_without_fetching_again(iam):
    p = oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID), fake_runtime(), jwks=jwks(SIGNING_KEY))
    with pytest.raises(AuthError):
        oidc.verify_id_token(p, id_token(key=ROTATED_KEY))  # the provider does not publish k2 either
    assert len(iam.sent(JWKS_URL)) == 1


def test_known_kid_does_not_refetch_the_cached_jwks(iam):
    p = oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID), fake_runtime(), jwks=jwks(SIGNING_KEY))
    oidc.verify_id_token(p, id_token())
    with pytest.raises(AuthError):
        oidc.verify_id_token(p, id_token(key=IMPOSTOR_KEY))  # bad signature is not a reason to refetch
    assert iam.sent(JWKS_URL) == []


# ---------------------------------------------------------------------------------------------
# (h) refresh


def test_rotated_refresh_token_is_stored(iam):
    iam.script(TOKEN_URL, token_answer(refresh_token="rt-2"))
    entry = oidc.renew(OPTIONS, previous_entry("rt-1"), fake_runtime(), interactive=False)
    assert iam.sent(TOKEN_URL)[0].form["refresh_token"] == "rt-1"
    assert entry["refresh_token"] == "rt-2"
    assert entry["issuer"] == ISSUER_SLASH
    assert entry["tokens"]["id"]["value"] != "old-id-token"


def test_refresh_token_that_is_not_rotated_is_kept(iam):
    iam.script(TOKEN_URL, token_answer())  # IAM: probably no new refresh token
    entry = oidc.renew(OPTIONS, previous_entry("rt-1"), fake_runtime(), interactive=False)
    assert entry["refresh_token"] == "rt-1"
    assert entry["tokens"]["access"]["value"] == "at-1"


def test_rotated_refresh_token_reaches_the_cache_file_through_get_token(iam, monkeypatch, capsys):
    path = store_for_get_token(previous_entry("rt-1", with_discovery=True))
    fresh = id_token(preferred_username="alice-renewed")
    iam.script(TOKEN_URL, token_answer(refresh_token="rt-2", id_token=fresh))
    code, out, err = run_get_token(monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["status"]["token"] == fresh
    stored = cache.read_entry(path)
    assert stored["refresh_token"] == "rt-2"
    assert stored["tokens"]["id"]["value"] == fresh
    assert iam.sent(DISCOVERY_URL) == [] and iam.sent(JWKS_URL) == []  # cached metadata and keys reused


def test_refresh_answer_without_id_token_is_a_failed_refresh_when_the_id_token_is_the_bearer(iam):
    iam.script(TOKEN_URL, token_answer(id_token=None, refresh_token="rt-2"))
    with pytest.raises(LoginRequired) as caught:
        oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=False)
    assert caught.value.exit_code == 5
    assert "no ID token" in str(caught.value) and "run `kubectl iam login`" in str(caught.value)
    assert iam.sent(DEVICE_URL) == []


def test_refresh_is_not_resent_after_a_500_which_may_have_rotated_the_token(iam):
    iam.always(TOKEN_URL, (500, HTML))
    with pytest.raises(CaasError, match="HTTP 500"):
        oidc.renew(OPTIONS, previous_entry("rt-1"), fake_runtime(), interactive=False)
    assert len(iam.sent(TOKEN_URL)) == 1


def test_refresh_is_retried_after_a_gateway_error(iam):
    iam.script(TOKEN_URL, (503, HTML), (502, ""), token_answer(refresh_token="rt-2"))
    entry = oidc.renew(OPTIONS, previous_entry("rt-1"), fake_runtime(), interactive=False)
    assert entry["refresh_token"] == "rt-2" and len(iam.sent(TOKEN_URL)) == 3


def test_refresh_answer_without_id_token_keeps_the_previous_one_when_the_access_token_is_the_bearer(iam):
    previous = previous_entry()
    iam.script(TOKEN_URL, token_answer(id_token=None, access_token="at-2"))
    entry = oidc.renew({**OPTIONS, "token": "access"}, previous, fake_runtime(), interactive=False)
    assert entry["tokens"]["id"] == previous["tokens"]["id"]


def test_refresh_answer_without_id_token_is_fine_when_the_access_token_is_the_bearer(iam):
    iam.script(TOKEN_URL, token_answer(id_token=None, access_token="at-2"))
    entry = oidc.renew({**OPTIONS, "token": "access"}, previous_entry(), fake_runtime(), interactive=False)
    assert entry["tokens"]["access"]["value"] == "at-2"
    assert entry["claims"]["preferred_username"] == "alice"  # kept from the previous entry


@pytest.mark.parametrize("code", ["invalid_grant", "invalid_token"])
def test_refused_refresh_token_means_login_required_when_not_interactive(iam, code):
    iam.script(TOKEN_URL, oauth_error(code))
    with pytest.raises(LoginRequired) as caught:
        oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=False)
    assert caught.value.exit_code == 5
    assert code in str(caught.value) and caught.value.hint == "run `kubectl iam login`"
    assert iam.sent(DEVICE_URL) == []


def test_invalid_grant_in_get_token_prints_one_line_telling_to_run_login(iam, monkeypatch, capsys):
    store_for_get_token(previous_entry())
    iam.script(TOKEN_URL, oauth_error("invalid_grant"))
    code, out, err = run_get_token(monkeypatch, capsys, interactive=False)
    assert code == 5 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kubectl-iam: error: ") and "run `kubectl iam login`" in lines[0]
    assert "Traceback" not in err


def test_no_refresh_token_means_login_required_without_any_request(iam):
    with pytest.raises(LoginRequired):
        oidc.renew(OPTIONS, previous_entry(refresh_token=None), fake_runtime(), interactive=False)
    assert iam.requests == []


def test_other_refresh_errors_are_not_turned_into_login_required(iam):
    iam.script(TOKEN_URL, oauth_error("invalid_client", 401))
    with pytest.raises(oidc.OAuthError) as caught:
        oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=False)
    assert caught.value.error == "invalid_client"


def test_invalid_grant_when_interactive_falls_back_to_a_device_login(iam, clock, monkeypatch, capsys):
    iam.script(DEVICE_URL, (200, device_answer()))
    iam.script(TOKEN_URL, oauth_error("invalid_grant"), PENDING, token_answer(refresh_token="rt-new"))
    entry = oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=True)
    assert entry["refresh_token"] == "rt-new"
    assert "ABCD-EFGH" in capsys.readouterr().err
    assert [s.form.get("audience") for s in iam.requests if s.method == "POST"] == [AUDIENCE] * 4


# ---------------------------------------------------------------------------------------------
# (j) hostile answers: claims, times, strings a person will see


@pytest.mark.parametrize("overrides, needle", [
    pytest.param({"exp": 1e300}, "absurd", id="exp-1e300"),
    pytest.param({"exp": int(time.time()) + 10 * 365 * 86400}, "absurd", id="exp-in-ten-years"),
    pytest.param({"exp": "tomorrow"}, "no expiry", id="exp-not-a-number"),
    pytest.param({"nbf": int(time.time()) + 3600}, "not valid until", id="nbf-in-an-hour"),
    pytest.param({"iat": int(time.time()) + 3600}, "issued at", id="iat-in-an-hour"),
    pytest.param({"iat": "yesterday"}, "iat", id="iat-not-a-number"),
    pytest.param({"azp": "someone-else"}, "issued to client", id="azp-of-another-client"),
])
def test_id_token_with_hostile_claims_is_refused(iam, overrides, needle):
    with pytest.raises(AuthError) as caught:
        oidc.verify_id_token(provider(), id_token(**overrides))
    assert needle in str(caught.value)


def test_id_token_with_azp_of_this_client_and_a_small_clock_step_is_accepted(iam):
    claims = oidc.verify_id_token(provider(), id_token(azp=CLIENT_ID, nbf=int(time.time()) + 20, iat=int(time.time()) + 20))
    assert claims["azp"] == CLIENT_ID


def test_an_absurd_expiry_never_reaches_the_cache(iam, monkeypatch, capsys):
    # Before: exp 1e300 was cached, and every later get-token died formatting it (OverflowError).
    path = store_for_get_token(previous_entry(with_discovery=True))
    iam.script(TOKEN_URL, token_answer(id_token=id_token(exp=1e300), refresh_token="rt-2"))
    assert exec_plugin.get_token(IAM, get_token_args(), fake_runtime()) == 3
    assert "absurd" in capsys.readouterr().err
    assert cache.read_entry(path)["tokens"]["id"]["value"] == "old-id-token"


@pytest.mark.parametrize("offset", [3600.0, -7200.0])
def test_expiry_is_counted_on_the_local_clock_when_the_clocks_disagree(iam, offset, capsys, monkeypatch):
    # The provider's clock is `offset` from ours; its token lives 600 s by its clock. kubectl judges
    # expiry by ours, so the cache must say "600 s from now", not the provider's exp.
    iam.date_offset = offset
    server_now = int(time.time() + offset)
    answer = token_answer(id_token=id_token(iat=server_now, exp=server_now + 600),
                          access_token=access_jwt(iat=server_now, exp=server_now + 3600))
    iam.script(TOKEN_URL, answer, answer)
    path = store_for_get_token(previous_entry(with_discovery=True))
    before = time.time()
    assert exec_plugin.get_token(IAM, get_token_args(), fake_runtime()) == 0
    after = time.time()
    entry = cache.read_entry(path)
    assert before - 2 <= entry["tokens"]["id"]["expires_at"] - 600 <= after + 1
    assert before - 2 <= entry["tokens"]["access"]["expires_at"] - 3600 <= after + 1
    notice = capsys.readouterr().err
    assert "clock" in notice and ("behind" if offset > 0 else "ahead of") in notice
    # said once: a later renewal (another process) measuring the same difference is silent
    entry["tokens"]["id"]["expires_at"] = time.time() - 5
    cache.write_entry(path, entry)
    assert exec_plugin.get_token(IAM, get_token_args(), fake_runtime()) == 0
    assert "clock" not in capsys.readouterr().err


def test_a_small_clock_difference_is_not_mentioned(iam, capsys):
    iam.date_offset = 30.0
    iam.script(TOKEN_URL, token_answer())
    oidc.renew(OPTIONS, previous_entry(with_discovery=True), fake_runtime(), interactive=False)
    assert capsys.readouterr().err == ""


def access_jwt(**claims: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": SIGNING_KEY.kid}, {"iss": ISSUER_SLASH, "sub": "alice-sub", **claims},
                      SIGNING_KEY)


@pytest.mark.parametrize("exp", [1e300, -5, "soon"])
def test_access_token_with_unusable_exp_falls_back_to_expires_in(iam, exp):
    iam.script(TOKEN_URL, token_answer(access_token=access_jwt(exp=exp), expires_in=1200))
    entry = oidc.renew(OPTIONS, previous_entry(with_discovery=True), fake_runtime(), interactive=False)
    assert abs(entry["tokens"]["access"]["expires_at"] - (time.time() + 1200)) < 5


def test_access_token_with_control_characters_is_refused(iam):
    iam.script(TOKEN_URL, token_answer(access_token="at\r\nX-Evil: 1"))
    with pytest.raises(AuthError):
        oidc.renew(OPTIONS, previous_entry(with_discovery=True), fake_runtime(), interactive=False)


def test_oversized_key_set_is_used_but_not_cached(iam):
    # The cache must stay readable: an entry larger than its read limit would be lost for logout.
    big = jwks(SIGNING_KEY)
    big["keys"] += [{**big["keys"][0], "kid": f"pad-{i}"} for i in range(200)]
    iam.always(JWKS_URL, (200, big))
    iam.script(TOKEN_URL, token_answer())
    entry = oidc.renew(OPTIONS, previous_entry(), fake_runtime(), interactive=False)
    assert "jwks" not in entry and entry["metadata"]["issuer"] == ISSUER_SLASH


@pytest.mark.parametrize("field, value", [
    ("verification_uri", "javascript:alert(1)"),
    ("verification_uri", "http://iam.example.org/device"),
    ("verification_uri", "-remote-debugging-port=9222"),
    ("user_code", "AB\x1b]52;c;Y3VybCB4fHNo\x07CD"),
    ("user_code", "X" * 200),
])
def test_device_answer_a_person_could_be_misled_by_is_refused(iam, field, value):
    iam.always(DEVICE_URL, (200, device_answer(**{field: value})))
    with pytest.raises(CaasError) as caught:
        oidc.start_device_flow(provider())
    assert field.replace("_", " ").split()[0] in str(caught.value) or "code" in str(caught.value)


@pytest.mark.parametrize("complete", ["javascript:alert(1)", "file:///etc/passwd", "data:text/html,hi", "-new-window",
                                      "https://iam.example.org/device?code=\x1b[2J"])
def test_unsafe_verification_uri_complete_is_dropped_not_shown(iam, complete, capsys):
    iam.always(DEVICE_URL, (200, device_answer(verification_uri_complete=complete)))
    device = oidc.start_device_flow(provider())
    assert "verification_uri_complete" not in device
    oidc.announce(device, fake_runtime())
    shown = capsys.readouterr().err
    assert complete not in shown and ISSUER_SLASH + "device" in shown


def test_error_description_with_escape_sequences_reaches_the_terminal_escaped(iam, monkeypatch, capsys):
    store_for_get_token(previous_entry(with_discovery=True))
    evil = "nope\x1b]52;c;Y3VybCB4fHNo\x07\n\x9bkubectl configured correctly\u202e"
    iam.script(TOKEN_URL, (400, {"error": "invalid_request", "error_description": evil}))
    assert exec_plugin.get_token(IAM, get_token_args(), fake_runtime()) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert not any(ch in err.rstrip("\n") for ch in "\x1b\x07\x9b\u202e\n")
    assert "\\x1b]52" in err


# ---------------------------------------------------------------------------------------------
# (k) INDIGO IAM's own answers, as its source gives them


def test_an_unknown_client_at_the_device_endpoint_is_named_as_such(iam):
    iam.always(DEVICE_URL, (404, "<html>Not Found</html>"))
    with pytest.raises(UsageError) as caught:
        oidc.start_device_flow(provider())
    assert str(caught.value).startswith(f"client id {CLIENT_ID} is not registered at {ISSUER}")


def test_a_scope_the_client_may_not_ask_for_names_the_scopes_and_the_way_out(iam):
    iam.always(DEVICE_URL, (400, {"error": "invalid_scope", "error_description": "Invalid scope: email"}))
    with pytest.raises(UsageError) as caught:
        oidc.start_device_flow(provider())
    message = str(caught.value)
    assert "openid profile email offline_access" in message and "Invalid scope: email" in message
    assert "--scope" in message


def test_a_client_without_the_device_grant_says_what_to_ask_for(iam):
    iam.always(DEVICE_URL, (401, {"error": "invalid_client", "error_description": "Unauthorized grant type"}))
    with pytest.raises(AuthError) as caught:
        oidc.start_device_flow(provider())
    assert "Unauthorized grant type" in str(caught.value) and "device code grant" in str(caught.value)


def test_a_confidential_client_names_itself_in_the_device_form_and_in_basic(iam):
    iam.always(DEVICE_URL, (200, device_answer()))
    confidential = oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID), fake_runtime(), "s3cret")
    oidc.start_device_flow(confidential)
    (sent,) = iam.sent(DEVICE_URL)
    assert sent.form["client_id"] == CLIENT_ID
    assert base64.b64decode(sent.headers["Authorization"].split()[1]).decode() == f"{CLIENT_ID}:s3cret"
    assert "client_secret" not in sent.form


def test_a_public_client_names_itself_once_in_the_device_form(iam):
    iam.always(DEVICE_URL, (200, device_answer()))
    oidc.start_device_flow(provider())
    (sent,) = iam.sent(DEVICE_URL)
    assert sent.form["client_id"] == CLIENT_ID and "Authorization" not in sent.headers


@pytest.mark.parametrize("status, code", [(401, "invalid_token"), (401, "unauthorized"), (400, "invalid_grant")])
def test_every_refresh_refusal_iam_gives_means_login_required(iam, status, code):
    iam.script(TOKEN_URL, (status, {"error": code}))
    with pytest.raises(LoginRequired):
        oidc.renew(OPTIONS, previous_entry(with_discovery=True), fake_runtime(), interactive=False)
    assert len(iam.sent(TOKEN_URL)) == 1  # no retry: fast


def test_the_waiting_line_gives_the_expiry_time_and_how_to_cancel(capsys):
    oidc.announce(device_answer(expires_in=600), Runtime(clock=lambda: 0.0))
    shown = capsys.readouterr().err
    until = time.strftime("%H:%M", time.localtime(600))
    assert f"valid until {until}, 10 min" in shown and "Ctrl-C cancels" in shown


def test_an_expired_code_may_have_been_denied_and_the_message_says_so(iam, clock):
    iam.always(TOKEN_URL, oauth_error("authorization_pending"))
    with pytest.raises(oidc.OAuthError) as caught:
        poll(iam, clock, device_answer(expires_in=20))
    assert "or the request was denied" in str(caught.value)


def test_an_access_token_issuer_without_the_slash_is_recorded_as_it_is(iam):
    iam.script(TOKEN_URL, token_answer(access_token=access_jwt(exp=int(time.time()) + 3600, iss=ISSUER)))
    entry = oidc.renew({**OPTIONS, "token": "access"}, previous_entry(with_discovery=True), fake_runtime(),
                       interactive=False)
    assert entry["tokens"]["access"]["issuer"] == ISSUER and entry["issuer"] == ISSUER_SLASH

"""kubectl_caas.oidc.browser_flow against a stub provider and a scripted browser.

The provider is the stub of test_oidc_backend (requests' transport faked, no network); the
"browser" is the Runtime's open_browser, which here reads the authorization URL and sends the
provider's answer to the real loopback listener with http.client, as a browser would after the
provider's redirect. Waiting is on an injected monotonic clock: no test sleeps to hope for timing.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from kubectl_caas import errors, oidc
from kubectl_caas.errors import EXIT_AUTH, EXIT_USAGE, AuthError, CaasError
from kubectl_caas.oidc import browser_flow
from kubectl_caas.runtime import Runtime
from tests.unit.test_oidc_backend import (AUDIENCE, CLIENT_ID, ISSUER, ISSUER_SLASH, OPTIONS, TOKEN_URL, FakeIAM,
                                          id_token, oauth_error, previous_entry, token_answer)

AUTHORIZE_URL = ISSUER + "/authorize"


@pytest.fixture
def iam(monkeypatch) -> FakeIAM:
    fake = FakeIAM()
    fake.metadata["authorization_endpoint"] = AUTHORIZE_URL
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send",
                        lambda adapter, request, **kwargs: fake.send(adapter, request, **kwargs))
    for name in ("KUBERNETES_EXEC_INFO", "IAM_CLIENT_SECRET", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return fake


def get(port: int, target: str, host: Optional[str] = None, method: str = "GET") -> Tuple[int, str]:
    """One request to the loopback listener, with the Host header a browser would send (or `host`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Browser:
    """The Runtime's open_browser: records the authorization request, then answers it (or not)."""

    def __init__(self, answer: Optional[Callable[[Dict[str, str]], Dict[str, str]]] = None,
                 before: Optional[Callable[[int], None]] = None) -> None:
        self.answer = answer if answer is not None else (lambda req: {"code": "code-1", "state": req["state"],
                                                                      "iss": ISSUER_SLASH})
        self.before = before  # stray requests first, say
        self.request: Dict[str, str] = {}
        self.pages: List[Tuple[int, str]] = []
        self.opened = threading.Event()
        self.stdout_was_stderr: Optional[bool] = None

    def __call__(self, url: str) -> bool:
        self.url = url
        self.stdout_was_stderr = os.path.sameopenfile(1, 2)
        self.request = dict(parse_qsl(urlsplit(url).query))
        redirect = urlsplit(self.request["redirect_uri"])
        self.port = redirect.port
        if self.before:
            self.before(self.port)
        params = self.answer(self.request)
        if params is not None:
            self.pages.append(get(self.port, redirect.path + "?" + urlencode(params)))
        self.opened.set()
        return True


def runtime(browser: Callable[[str], bool], monotonic: Optional[Callable[[], float]] = None,
            environ: Optional[Dict[str, str]] = None) -> Runtime:
    return Runtime(environ=environ if environ is not None else {}, monotonic=monotonic, stderr=io.StringIO(),
                   open_browser=browser, sleep=lambda s: None)


def make_provider(rt: Runtime, audience: Optional[str] = AUDIENCE) -> oidc.Provider:
    return oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID, audience=audience), rt)


def exchange_stub(iam: FakeIAM, browser: Browser, **token_overrides: Any) -> List[Dict[str, str]]:
    """The token endpoint: checks the exchange against the authorization request, answers tokens."""
    forms: List[Dict[str, str]] = []

    def handler(sent):
        forms.append(sent.form)
        nonce = token_overrides.pop("nonce", browser.request["nonce"])
        return token_answer(id_token=id_token(nonce=nonce), refresh_token="rt-1", **token_overrides)
    iam.route(TOKEN_URL, handler)
    return forms


def shown_port(rt: Runtime) -> int:
    """The listener's port, from the authorization URL shown on stderr."""
    url = rt.stderr.getvalue().split("To sign in, open ", 1)[1].split()[0]
    return urlsplit(dict(parse_qsl(urlsplit(url).query))["redirect_uri"]).port


def listener_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_pkce_s256_challenge_is_rfc_7636_appendix_b():
    assert browser_flow.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_are_long_random_and_of_the_allowed_characters():
    verifiers = {browser_flow.new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert all(43 <= len(v) <= 128 and set(v) <= allowed for v in verifiers)


def test_authorization_url_keeps_a_query_the_endpoint_already_has():
    assert browser_flow.authorization_url("https://op.example/auth?tenant=a", {"x": "1 2"}) == \
        "https://op.example/auth?tenant=a&x=1+2"


def test_a_browser_sign_in_exchanges_the_code_with_the_verifier_and_checks_the_nonce(iam):
    browser = Browser()
    rt = runtime(browser)
    forms = exchange_stub(iam, browser)
    entry = oidc.browser_login(make_provider(rt), rt)
    request = browser.request
    assert request["response_type"] == "code" and request["client_id"] == CLIENT_ID
    assert request["scope"] == oidc.DEFAULT_SCOPE and request["code_challenge_method"] == "S256"
    assert len(request["state"]) >= 32 and len(request["nonce"]) >= 32 and request["state"] != request["nonce"]
    assert request["prompt"] == "consent"  # offline_access is asked for: OIDC Core §11
    assert browser.url.startswith(AUTHORIZE_URL + "?")
    redirect = urlsplit(request["redirect_uri"])
    assert (redirect.scheme, redirect.hostname, redirect.path) == ("http", "127.0.0.1", "/callback")
    (form,) = forms
    assert form["grant_type"] == "authorization_code" and form["code"] == "code-1"
    assert form["redirect_uri"] == request["redirect_uri"] and form["audience"] == AUDIENCE
    assert browser_flow.pkce_challenge(form["code_verifier"]) == request["code_challenge"]
    digest = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == request["code_challenge"]
    assert form["code_verifier"] not in browser.url  # only the challenge travels through the browser
    assert entry["refresh_token"] == "rt-1" and entry["tokens"]["id"]["value"]
    assert entry["claims"]["preferred_username"] == "alice"
    ((status, page),) = browser.pages
    assert status == 200 and "return to the terminal" in page
    assert listener_is_closed(browser.port)
    shown = rt.stderr.getvalue()
    assert f"To sign in, open {browser.url}" in shown and "Ctrl-C cancels" in shown


def test_without_offline_access_no_consent_is_forced(iam):
    browser = Browser()
    rt = runtime(browser)
    exchange_stub(iam, browser)
    provider = oidc.Provider(oidc.Client(issuer=ISSUER, client_id=CLIENT_ID, scope="openid profile"), rt)
    oidc.browser_login(provider, rt)
    assert browser.request["scope"] == "openid profile" and "prompt" not in browser.request


def test_an_id_token_with_another_nonce_is_refused(iam):
    browser = Browser()
    rt = runtime(browser)
    exchange_stub(iam, browser, nonce="someone-elses-nonce")
    with pytest.raises(AuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert "nonce" in caught.value.message


def test_an_id_token_without_a_nonce_is_refused(iam):
    browser = Browser()
    rt = runtime(browser)
    exchange_stub(iam, browser, nonce=None)
    with pytest.raises(AuthError, match="nonce"):
        oidc.browser_login(make_provider(rt), rt)


def test_a_wrong_state_ends_the_sign_in_with_one_line_and_no_exchange(iam, capsys):
    browser = Browser(lambda req: {"code": "code-1", "state": "not-" + req["state"], "iss": ISSUER_SLASH})
    rt = runtime(browser)
    with pytest.raises(AuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert caught.value.exit_code == EXIT_AUTH and "state does not match" in caught.value.message
    assert iam.sent(TOKEN_URL) == []
    ((status, page),) = browser.pages
    assert status == 200 and "does not belong" in page
    errors.report("kubectl-iam", caught.value)
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_answer_without_state_is_not_ours_either(iam):
    browser = Browser(lambda req: {"code": "code-1", "iss": ISSUER_SLASH})
    rt = runtime(browser)
    with pytest.raises(AuthError, match="state does not match"):
        oidc.browser_login(make_provider(rt), rt)
    assert iam.sent(TOKEN_URL) == []


def test_an_answer_from_another_issuer_is_refused_before_any_exchange(iam):
    # RFC 9207: the provider names itself in the answer; a mix-up sends another's answer here.
    browser = Browser(lambda req: {"code": "code-1", "state": req["state"], "iss": "https://evil.example/"})
    rt = runtime(browser)
    with pytest.raises(AuthError, match="evil.example"):
        oidc.browser_login(make_provider(rt), rt)
    assert iam.sent(TOKEN_URL) == []


def test_iss_is_required_when_discovery_promises_it(iam):
    iam.metadata["authorization_response_iss_parameter_supported"] = True
    browser = Browser(lambda req: {"code": "code-1", "state": req["state"]})
    rt = runtime(browser)
    with pytest.raises(AuthError, match="lacks the issuer"):
        oidc.browser_login(make_provider(rt), rt)
    assert iam.sent(TOKEN_URL) == []


def test_a_provider_without_the_iss_parameter_is_fine(iam):
    browser = Browser(lambda req: {"code": "code-1", "state": req["state"]})  # INDIGO IAM sends no iss
    rt = runtime(browser)
    exchange_stub(iam, browser)
    assert oidc.browser_login(make_provider(rt), rt)["refresh_token"] == "rt-1"


HOSTILE = "<script>alert(1)</script>\x1b]52;c;cGF5bG9hZA==\x07\nsecond line"


def test_an_error_answer_is_one_escaped_line_with_its_code_and_description(iam, capsys):
    browser = Browser(lambda req: {"error": "access_denied", "error_description": HOSTILE, "state": req["state"],
                                   "iss": ISSUER_SLASH})
    rt = runtime(browser)
    with pytest.raises(oidc.OAuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert caught.value.error == "access_denied" and caught.value.exit_code == EXIT_AUTH
    assert "access_denied" in caught.value.message and "alert(1)" in caught.value.message
    assert iam.sent(TOKEN_URL) == []
    errors.report("kubectl-iam", caught.value)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "\x1b" not in line and "\\x1b" in line and "\\x0a" in line
    ((status, page),) = browser.pages
    assert "<script>" not in page and "alert" not in page  # the description never reaches the page
    assert "access_denied" in page


def test_an_error_code_with_markup_is_escaped_on_the_page(iam):
    browser = Browser(lambda req: {"error": "<b>x</b>", "state": req["state"], "iss": ISSUER_SLASH})
    rt = runtime(browser)
    with pytest.raises(oidc.OAuthError):
        oidc.browser_login(make_provider(rt), rt)
    ((status, page),) = browser.pages
    assert "<b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_a_scope_the_client_may_not_have_is_a_usage_error(iam):
    browser = Browser(lambda req: {"error": "invalid_scope", "state": req["state"], "iss": ISSUER_SLASH})
    rt = runtime(browser)
    with pytest.raises(oidc.OAuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert caught.value.exit_code == EXIT_USAGE and "--scope" in str(caught.value)


def test_stray_requests_get_404_and_the_wait_goes_on(iam):
    strays: List[Tuple[int, str]] = []

    def before(port: int) -> None:
        strays.append(get(port, "/favicon.ico"))
        strays.append(get(port, "/"))
        strays.append(get(port, "/callback"))  # neither code nor error: not an answer
        strays.append(get(port, "/callback?code=a&code=b&state=x"))  # a parameter twice
        strays.append(get(port, "/callback?code=x&state=y", host=f"evil.example:{port}"))  # DNS rebinding
        strays.append(get(port, "/callback?code=x&state=y", method="POST"))

    browser = Browser(before=before)
    rt = runtime(browser)
    forms = exchange_stub(iam, browser)
    entry = oidc.browser_login(make_provider(rt), rt)
    assert [status for status, _ in strays] == [404, 404, 404, 404, 404, 405]
    assert entry["refresh_token"] == "rt-1" and len(forms) == 1 and forms[0]["code"] == "code-1"


def test_the_listener_takes_one_answer_then_closes():
    with browser_flow._Listener("the-state") as listener:
        first = get(listener.port, "/callback?code=c1&state=the-state")
        second = get(listener.port, "/callback?code=c2&state=the-state")
        assert first[0] == 200 and second[0] == 409
        assert listener.answers.get_nowait() == {"code": "c1", "state": "the-state"}
        assert listener.answers.empty()
    assert listener_is_closed(listener.port)


def test_the_listener_takes_the_first_free_fixed_port_else_any(monkeypatch):
    # INDIGO IAM matches a registered loopback redirect URI's port exactly: fixed ports first.
    with socket.socket() as busy, socket.socket() as probe:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        monkeypatch.setattr(browser_flow, "LOOPBACK_PORTS", (busy.getsockname()[1], free))
        with browser_flow._listen("s") as listener:
            assert listener.port == free and listener.redirect_uri == f"http://127.0.0.1:{free}/callback"
        monkeypatch.setattr(browser_flow, "LOOPBACK_PORTS", (busy.getsockname()[1],))
        with browser_flow._listen("s") as listener:
            assert listener.port not in (busy.getsockname()[1], 0)


def test_the_wait_is_bounded_by_the_runtimes_clock(iam):
    readings = iter([1000.0, 1000.0 + 601])  # start, then past the 10 minutes
    browser = Browser(lambda req: None)  # the person never finishes
    rt = runtime(browser, monotonic=lambda: next(readings))
    started = time.monotonic()
    with pytest.raises(AuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert "no answer came back from the browser within 10 min" in caught.value.message
    assert time.monotonic() - started < browser_flow.TICK  # no real waiting: the clock said the time was up
    assert iam.sent(TOKEN_URL) == []
    assert listener_is_closed(shown_port(rt))


def test_ctrl_c_while_waiting_closes_the_listener_and_exchanges_nothing(iam):
    calls = {"n": 0}

    def monotonic() -> float:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return 1000.0
    browser = Browser(lambda req: None)
    rt = runtime(browser, monotonic=monotonic)
    with pytest.raises(KeyboardInterrupt):
        oidc.browser_login(make_provider(rt), rt)
    assert iam.sent(TOKEN_URL) == []
    assert listener_is_closed(shown_port(rt))


def test_the_browser_gets_stderr_as_its_stdout_and_stdout_comes_back(iam):
    # Under get-token our stdout is kubectl's pipe: a browser holding it would hold kubectl up.
    if os.path.sameopenfile(1, 2):
        pytest.skip("stdout and stderr are the same file here")
    browser = Browser()
    rt = runtime(browser)
    exchange_stub(iam, browser)
    oidc.browser_login(make_provider(rt), rt)
    assert browser.stdout_was_stderr is True
    assert not os.path.sameopenfile(1, 2)


class Notices(io.StringIO):
    """stderr that says when a line containing `awaited` has been written."""

    def __init__(self, awaited: str) -> None:
        super().__init__()
        self.awaited, self.seen = awaited, threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.awaited in self.getvalue():
            self.seen.set()
        return written


def test_the_exchange_waits_for_a_browser_command_that_returns_after_answering(iam):
    # browser.open_url puts the real environment back when the command returns: not mid-exchange.
    events: List[str] = []

    class Returning(Browser):
        def __call__(self, url: str) -> bool:
            super().__call__(url)
            time.sleep(0.2)  # the command exits a little after the page loaded
            events.append("browser returned")
            return True
    browser = Returning()
    rt = runtime(browser)
    forms = exchange_stub(iam, browser)
    iam.route(TOKEN_URL, lambda sent, inner=iam.routes[TOKEN_URL]: (events.append("exchange"), inner(sent))[1])
    oidc.browser_login(make_provider(rt), rt)
    assert events == ["browser returned", "exchange"] and len(forms) == 1


def test_a_browser_command_that_never_returns_does_not_hold_the_sign_in(iam, monkeypatch):
    monkeypatch.setattr(browser_flow, "SETTLE", 0.1)
    release = threading.Event()

    class Staying(Browser):
        def __call__(self, url: str) -> bool:
            super().__call__(url)
            return release.wait(30)  # a browser that runs until the person quits it
    browser = Staying()
    rt = runtime(browser)
    exchange_stub(iam, browser)
    try:
        assert oidc.browser_login(make_provider(rt), rt)["refresh_token"] == "rt-1"
    finally:
        release.set()


def test_a_browser_that_cannot_open_leaves_the_link_on_the_terminal(iam):
    notices = Notices("no browser could be opened")
    readings = iter([lambda: 1000.0, lambda: (notices.seen.wait(10), 1000.0 + 601)[1]])
    rt = runtime(lambda url: False, monotonic=lambda: next(readings)())
    rt.stderr = notices
    with pytest.raises(AuthError):
        oidc.browser_login(make_provider(rt), rt)
    shown = notices.getvalue()
    assert "To sign in, open https://iam.example.org/authorize?" in shown
    assert "no browser could be opened" in shown


@pytest.mark.parametrize("endpoint", ["http://iam.example.org/authorize", "javascript:alert(1)", "",
                                      "https://iam.example.org/authorize#frag", "https://iam.example.org/a b"])
def test_an_authorization_endpoint_that_is_not_https_is_refused_before_anything_opens(iam, endpoint):
    iam.metadata["authorization_endpoint"] = endpoint
    browser = Browser()
    rt = runtime(browser)
    with pytest.raises(CaasError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert "authorization_endpoint" in caught.value.message and "\n" not in str(caught.value)
    assert not browser.opened.is_set() and rt.stderr.getvalue() == ""


def test_a_refused_code_exchange_is_one_line(iam):
    browser = Browser()
    rt = runtime(browser)
    iam.script(TOKEN_URL, oauth_error("invalid_grant"))
    with pytest.raises(oidc.OAuthError) as caught:
        oidc.browser_login(make_provider(rt), rt)
    assert caught.value.exit_code == EXIT_AUTH and "invalid_grant" in str(caught.value)


def test_interactive_renewal_on_a_desktop_signs_in_through_the_browser(iam):
    browser = Browser()
    rt = runtime(browser, environ={"DISPLAY": ":0"})
    forms = exchange_stub(iam, browser)
    entry = oidc.renew(OPTIONS, previous_entry(refresh_token=None), rt, interactive=True)
    assert entry["refresh_token"] == "rt-1" and forms[0]["grant_type"] == "authorization_code"
    assert "there is no refresh token; sign in again" in rt.stderr.getvalue()


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS always has a desktop")
def test_interactive_renewal_without_a_desktop_keeps_the_device_flow(iam):
    def no_browser(url: str) -> bool:
        raise AssertionError("no browser without a desktop")
    rt = runtime(no_browser, environ={})
    iam.script(iam.metadata["device_authorization_endpoint"], (400, {"error": "invalid_client"}))
    with pytest.raises(CaasError):
        oidc.renew(OPTIONS, previous_entry(refresh_token=None), rt, interactive=True)
    assert [s.url for s in iam.requests if s.method == "POST"] == [iam.metadata["device_authorization_endpoint"]]

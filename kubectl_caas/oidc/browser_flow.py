"""Browser sign-in: the authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636) and a
loopback redirect (RFC 8252 §7.3), the way kubectl-iam signs a person in on a desktop.

It makes a PKCE S256 verifier and challenge, a random `state` and `nonce`, listens on
127.0.0.1 on a free port (one of three fixed ones first, for providers that match the port of a
registered redirect URI exactly), shows the provider's authorization page's address on
stderr and opens it in the person's browser (Runtime.open_browser), then waits, bounded, for the
one answer the provider sends back through the browser to http://127.0.0.1:PORT/callback. The
answer must carry our `state`, and `iss` when the provider sends one (RFC 9207); the code is then
exchanged at the token endpoint with the verifier, and the ID token must carry our nonce.

The listener answers one sign-in answer and then closes; any other request (favicon.ico, a
stray path, another host name) gets 404 and changes nothing. The browser is shown a short fixed
page: nothing the provider sent is put into it unescaped.
"""
from __future__ import annotations

import base64
import hashlib
import html
import os
import queue
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

from kubectl_caas import http
from kubectl_caas.errors import EXIT_AUTH, EXIT_USAGE, AuthError, CaasError
from kubectl_caas.oidc.device import DEFAULT_CODE_LIFETIME
from kubectl_caas.oidc.provider import OAuthError
from kubectl_caas.oidc.tokens import entry_from_tokens

if TYPE_CHECKING:
    from kubectl_caas.oidc.provider import Provider
    from kubectl_caas.runtime import Runtime

CALLBACK_PATH = "/callback"
# The listener's ports, the first one free: INDIGO IAM (Spring's redirect resolver) matches a
# loopback redirect URI's port exactly, so a client registered there lists these; providers that
# follow RFC 8252 §7.3 take any port. With all three busy the kernel picks one.
LOOPBACK_PORTS = (38181, 38182, 38183)
# How long the person has to finish in the browser: as long as a device code lasts.
ANSWER_WAIT = DEFAULT_CODE_LIFETIME
TICK = 1.0  # the longest single wait, so that the Runtime's clock is read again at least this often
SETTLE = 3.0  # how long, once the answer is in, a browser command still running is given to return
REQUEST_TIMEOUT = 10.0  # a connection that sends no request in this time (a browser's spare one) is dropped
RETURN_NOTE = "You can close this tab and return to the terminal."

_NO_BROWSER_HINT = ("if the provider's page showed an error instead (the client may lack the authorization code "
                    "grant or a loopback redirect URI), sign in with a device code: `kubectl iam login --no-browser`")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a code verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """A code verifier: 86 characters of [A-Za-z0-9_-], 512 random bits (RFC 7636 §4.1 asks 43 to 128)."""
    return secrets.token_urlsafe(64)


def authorization_url(endpoint: str, params: Mapping[str, str]) -> str:
    """The endpoint with the request's parameters added to any query it already has (RFC 6749 §3.1)."""
    return endpoint + ("&" if urlsplit(endpoint).query else "?") + urlencode(params)


class _Listener(ThreadingHTTPServer):
    """The loopback redirect target: takes the first sign-in answer and hands it to `answers`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, state: str, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.port = self.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.redirect_uri = f"http://{self.host}{CALLBACK_PATH}"
        self.answers: "queue.Queue[Dict[str, str]]" = queue.Queue(maxsize=1)
        self.taken = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "_Listener":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def page_for(self, answer: Mapping[str, str]) -> Tuple[str, str]:
        """The title and text the browser is shown for an answer; only the error code is the provider's."""
        if answer.get("state") != self.state:
            return "Not this sign-in", "This answer does not belong to the sign-in kubectl-iam is waiting for."
        if "error" in answer:
            return "Sign-in refused", f"The provider answered: {answer['error'][:100]}."
        return "Sign-in received", "kubectl-iam received the sign-in and finishes it in the terminal."


def _listen(state: str) -> _Listener:
    """A listener on the first free port of LOOPBACK_PORTS, else on one the kernel picks."""
    for port in LOOPBACK_PORTS:
        try:
            return _Listener(state, port)
        except OSError:
            continue
    return _Listener(state)


class _Handler(BaseHTTPRequestHandler):
    server: _Listener
    protocol_version = "HTTP/1.0"  # one request per connection
    timeout = REQUEST_TIMEOUT
    server_version = "kubectl-iam"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        listener = self.server
        parts = urlsplit(self.path)
        answer = _single_values(parts.query)
        if (parts.path != CALLBACK_PATH or self.headers.get("Host") != listener.host
                or answer is None or not ({"code", "error"} & answer.keys())):
            self._send(404, "Not found", "This is kubectl-iam's sign-in listener.")
            return
        with listener.lock:
            first, listener.taken = not listener.taken, True
        if not first:
            self._send(409, "Already answered", "kubectl-iam has already received an answer to this sign-in.")
            return
        self._send(200, *listener.page_for(answer))
        listener.answers.put(answer)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, "Not allowed", "")

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD

    def _send(self, status: int, title: str, text: str) -> None:
        note = RETURN_NOTE if status == 200 else ""
        body = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
                f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p><p>{note}</p></body></html>\n")
        data = body.encode("utf-8")
        self.send_response(status)
        for name, value in (("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                            ("Content-Security-Policy", "default-src 'none'"), ("X-Content-Type-Options", "nosniff"),
                            ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"),
                            ("Connection", "close")):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - nothing goes to stderr
        pass


def _single_values(query: str) -> Optional[Dict[str, str]]:
    """The query's parameters, or None when one is given twice (RFC 6749 §3.1: each at most once)."""
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except ValueError:
        return None
    if any(len(values) != 1 for values in parsed.values()):
        return None
    return {key: values[0] for key, values in parsed.items()}


def _open_aside(runtime: Runtime, url: str) -> Callable[[float], None]:
    """Open `url` through the Runtime in a thread of its own, and return what ends that.

    Python's webbrowser waits for a BROWSER command it does not know until the command exits,
    which for a browser may be when the person quits it; the wait for the answer must not depend
    on that. The browser gets our stderr as its stdout: under get-token our stdout is kubectl's
    pipe, which kubectl reads to its end, so a browser holding it would hold kubectl up until the
    browser quits (and what it printed would spoil the credential). Ending puts stdout back at once;
    `settle` seconds are first given to the opening to finish, since browser.open_url holds a
    secret-free copy of the environment in os.environ while the browser command runs, and puts the
    real one back when it returns (usually just after the command delivered the answer): the code
    exchange that follows reads the environment (proxies), and must not do so while it changes.
    """
    lock = threading.Lock()
    saved: Dict[str, Any] = {"fd": None, "over": False}

    def restore() -> None:
        with lock:
            if saved["fd"] is not None:
                os.dup2(saved["fd"], 1)
                os.close(saved["fd"])
                saved["fd"] = None

    def run() -> None:
        with lock:
            if saved["over"]:
                return
            try:
                if sys.stdout is not None:
                    sys.stdout.flush()
                saved["fd"] = os.dup(1)
                os.dup2(2, 1)
            except (OSError, ValueError):
                saved["fd"] = None  # no stdout or stderr to speak of: the browser gets what there is
        try:
            opened = runtime.open_browser(url)
        except Exception:  # noqa: BLE001 - a browser that cannot start leaves the link on the terminal
            opened = False
        finally:
            restore()
        with lock:
            if not opened and not saved["over"]:
                runtime.notice("(no browser could be opened: open the link above yourself)")

    def end(settle: float = 0.0) -> None:
        if settle > 0:
            opener.join(settle)
        with lock:
            saved["over"] = True
        restore()

    opener = threading.Thread(target=run, name="kubectl-iam-browser", daemon=True)
    opener.start()
    return end


def _wait_for_answer(listener: _Listener, runtime: Runtime, wait: float) -> Dict[str, str]:
    """The browser's answer, waiting at most `wait` seconds by the Runtime's monotonic clock."""
    deadline = runtime.monotonic() + wait
    while True:
        left = deadline - runtime.monotonic()
        if left <= 0:
            raise AuthError(f"no answer came back from the browser within {int(wait // 60) or 1} min",
                            "run the login again and finish it in the browser in time; " + _NO_BROWSER_HINT)
        try:
            return listener.answers.get(timeout=min(left, TICK))
        except queue.Empty:
            continue


def _explained_refusal(provider: Provider, error: str, description: Optional[str]) -> OAuthError:
    """The provider's error answer (RFC 6749 §4.1.2.1) as one line, with what to do."""
    text = f"the OIDC provider refused the sign-in: {error}" + (f" ({description})" if description else "")
    client = provider.client
    if error == "access_denied":
        hint, code = "run the login again and approve it", EXIT_AUTH
    elif error == "invalid_scope":
        hint, code = (f"ask only for scopes client {client.client_id} is registered for, with --scope "
                      f"(now '{client.scopes}')"), EXIT_USAGE
    elif error in ("unauthorized_client", "unsupported_response_type", "invalid_request", "invalid_client"):
        hint, code = (f"client {client.client_id} must be registered with the authorization code grant and a "
                      "loopback redirect URI (http://127.0.0.1/callback, any port); or sign in with a device code: "
                      "`kubectl iam login --no-browser`"), EXIT_AUTH
    else:
        hint, code = "run the login again, or sign in with a device code: `kubectl iam login --no-browser`", EXIT_AUTH
    return OAuthError(error, text, hint, exit_code=code, description=description)


def _checked_code(provider: Provider, answer: Mapping[str, str], state: str) -> str:
    """The authorization code of the browser's answer, once the answer is known to be ours."""
    if not secrets.compare_digest(answer.get("state", "").encode(), state.encode()):
        raise AuthError("the answer that reached kubectl-iam is not for this sign-in (its state does not match); "
                        "nothing was exchanged", "run the login again, in the browser tab it opens")
    issuer = answer.get("iss")
    if issuer is None and provider.discover().get("authorization_response_iss_parameter_supported") is True:
        raise AuthError("the provider's answer lacks the issuer (iss) its discovery document promises",
                        "run the login again; if it persists, tell the provider's administrators")
    if issuer is not None and issuer != provider.issuer:
        raise AuthError(f"the answer that reached kubectl-iam comes from issuer '{issuer[:200]}', not "
                        f"'{provider.issuer}'; nothing was exchanged", "run the login again")
    if "error" in answer:
        description = answer.get("error_description")
        raise _explained_refusal(provider, answer["error"][:100] or "invalid_request",
                                 description[:300] if description else None)
    code = answer.get("code", "")
    if not code or len(code) > 4096 or not code.isprintable():
        raise AuthError("the provider's answer carries no usable authorization code", "run the login again")
    return code


def _authorization_endpoint(provider: Provider) -> str:
    url = provider.discover().get("authorization_endpoint")
    if not isinstance(url, str) or not url:
        raise CaasError(f"the OIDC provider at {provider.client.issuer} has no authorization_endpoint",
                        "it cannot sign in through a browser; use `kubectl iam login --no-browser` for a device code")
    parts = urlsplit(url)
    if parts.scheme != "https" or not http.is_secure_url(url) or parts.fragment:
        raise CaasError(f"refusing the provider's authorization_endpoint '{url[:300]}': not an https:// URL",
                        "check --issuer, or use `kubectl iam login --no-browser` for a device code")
    return url


def browser_login(provider: Provider, runtime: Runtime, wait: float = ANSWER_WAIT) -> Dict[str, Any]:
    """The whole browser sign-in: the authorization request, the answer, the code exchange, the
    checks. Returns a cache entry (as device.device_login does)."""
    endpoint = _authorization_endpoint(provider)
    client = provider.client
    verifier, state, nonce = new_verifier(), secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with _listen(state) as listener:
        params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": listener.redirect_uri,
                  "scope": client.scopes, "state": state, "nonce": nonce,
                  "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
        if "offline_access" in client.scopes.split():
            params["prompt"] = "consent"  # OIDC Core §11: else a provider may drop offline_access
        url = authorization_url(endpoint, params)
        runtime.notice(f"To sign in, open {url}")
        until = time.strftime("%H:%M", time.localtime(runtime.clock() + wait))
        runtime.notice(f"(opening it in your browser; waiting for its answer until {until}, "
                       f"{int(wait // 60) or 1} min; Ctrl-C cancels)")
        end_opening = _open_aside(runtime, url)
        answer: Optional[Dict[str, str]] = None
        try:
            answer = _wait_for_answer(listener, runtime, wait)
        finally:
            end_opening(SETTLE if answer is not None else 0.0)
        redirect_uri = listener.redirect_uri
    code = _checked_code(provider, answer, state)
    data = provider.with_audience({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                   "code_verifier": verifier})
    try:
        # A code is good once: not again after a 500, which may come after the server used it.
        tokens = provider.post_form("token_endpoint", data, "the authorization code exchange",
                                    retry_statuses=(502, 503, 504))
    except OAuthError as exc:
        raise OAuthError(exc.error, exc.message, "run the login again", exit_code=EXIT_AUTH,
                         description=exc.description) from None
    if client.bearer == "id" and not tokens.get("id_token"):
        raise AuthError("the provider returned no ID token", "check that the scope includes openid")
    return entry_from_tokens(provider, tokens, nonce=nonce)

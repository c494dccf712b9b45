"""HTTP plumbing shared by the backends: sessions, time and size bounds, CA handling, redirects,
and turning network failures into one clear line (--debug's redacted log is http_log.py).

Every session either backend uses comes from `prepare`, which installs one response hook. The
hook runs before requests reads the body (and before keystoneauth1 or requests would follow a
redirect), so it is the one place that:

- reads the body, at most MAX_ANSWER_BYTES of it: a huge or endless answer is refused unread;
- refuses every redirect: keystoneauth1 and requests would repeat the request, body and
  headers included, at the new address, so a password, application-credential secret, refresh
  token or device code would follow a 307 to any host (plain http included);
- prints the exchange for --debug (http_log.py), secrets redacted and control characters escaped.

Time is bounded by `Deadline`: one budget for a whole operation, retries included, enforced
with an interval timer, so a server that trickles its answer a byte at a time (which never trips
a per-read socket timeout) still ends the operation on time.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, TypeVar, Union
from urllib.parse import urljoin, urlsplit

import requests

from kubectl_caas import http_log
from kubectl_caas.errors import CaasError, NetworkError, UsageError
from kubectl_caas.terminal import printable

if TYPE_CHECKING:
    from kubectl_caas.runtime import Runtime

# An operation gives up after 30 s in all (retries included): at most 10 s to connect, the rest to
# answer. KUBECTL_CAAS_TIMEOUT (seconds) changes the total for slow networks.
CONNECT_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 30.0
RETRY_ATTEMPTS = 3
RETRY_FIRST_DELAY = 0.5
TRANSIENT_STATUS = (500, 502, 503, 504)
# No answer we expect comes near this: Keystone tokens without a catalog, discovery documents and
# key sets are a few kB.
MAX_ANSWER_BYTES = 1 << 20

T = TypeVar("T")


def total_timeout(environ: Optional[Mapping[str, str]] = None) -> float:
    """KUBECTL_CAAS_TIMEOUT from the run's environment (seconds), else 30."""
    environ = os.environ if environ is None else environ
    try:
        value = float(environ.get("KUBECTL_CAAS_TIMEOUT") or DEFAULT_TOTAL_TIMEOUT)
    except ValueError:
        return DEFAULT_TOTAL_TIMEOUT
    return value if 0 < value < 86400 else DEFAULT_TOTAL_TIMEOUT


# ---------------------------------------------------------------------------------------------
# Time


class DeadlineExceeded(BaseException):
    """Raised by the interval timer inside whatever was blocking. A BaseException, so no library's
    `except Exception` can swallow it; the Deadline that catches it turns it into a NetworkError."""


_armed: List["Deadline"] = []  # deadlines being enforced, outermost first
_previous_handler: Any = None


def _on_alarm(signum: int, frame: Any) -> None:
    # Only while a deadline really has run out: a signal that arrives late, after its deadline was
    # left, must not break whatever runs now.
    if _armed and min(d.end for d in _armed) <= time.monotonic() + 0.01:
        raise DeadlineExceeded()


def _can_use_timer() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _rearm() -> None:
    """Point the interval timer at the earliest armed deadline, or stop it."""
    global _previous_handler
    if not _can_use_timer():
        return
    if _armed:
        if _previous_handler is None:
            _previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
        left = min(d.end for d in _armed) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if _previous_handler is not None:
            signal.signal(signal.SIGALRM, _previous_handler)
            _previous_handler = None


class Deadline:
    """The time budget of one operation against `service` at `url`, shared by its attempts.

    As a context manager it is enforced: when it runs out, whatever is blocking (connect, TLS,
    reading headers or a trickling body, a retry's back-off) is interrupted and the operation
    fails with one line. Nested deadlines never extend an outer one.
    """

    def __init__(self, service: str = "the server", url: str = "", total: Optional[float] = None):
        total = total if total is not None else total_timeout()
        self.service, self.url = service, url
        now = time.monotonic()
        self.end = now + total
        if _armed:
            self.end = min(self.end, min(d.end for d in _armed))
        self.total = self.end - now  # what this operation really gets, when an outer budget is shorter

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def timeout(self) -> tuple:
        """(connect, read) timeouts for the next attempt."""
        left = max(self.remaining(), 0.1)
        return (min(CONNECT_TIMEOUT, left), left)

    def __enter__(self) -> "Deadline":
        _armed.append(self)
        try:
            _rearm()
        except DeadlineExceeded:  # an outer deadline ran out just now
            self._leave()
            raise self._failure() from None
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        expired = exc_type is DeadlineExceeded
        try:
            self._leave()
        except DeadlineExceeded:  # the timer fired while we were leaving
            expired = True
            self._leave()
        if expired:
            raise self._failure() from None

    def _leave(self) -> None:
        """Stop enforcing this deadline. May raise DeadlineExceeded for an outer one that ran out
        too, which that one's own __exit__ then reports."""
        if self in _armed:
            _armed.remove(self)
        _rearm()

    def _failure(self) -> NetworkError:
        where = f" at {self.url}" if self.url else ""
        return NetworkError(f"{self.service}{where} did not answer in time (gave up after {self.total:.3g} s)",
                            "check the URL and your network, then retry; KUBECTL_CAAS_TIMEOUT sets the "
                            "time limit in seconds")


def with_retries(call: Callable[[], T], transient: Callable[[BaseException], bool], deadline: Deadline,
                 runtime: Runtime, attempts: int = RETRY_ATTEMPTS) -> T:
    """Run `call` under the deadline, again after 0.5 s and 1 s when it fails with a transient error
    (waiting with the run's sleep; saying so with --debug)."""
    delay = RETRY_FIRST_DELAY
    with deadline:
        for attempt in range(attempts):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - re-raised unless transient
                if attempt == attempts - 1 or not transient(exc) or deadline.remaining() < delay + 1.0:
                    raise
                if runtime.debug:
                    runtime.notice(f"kubectl-caas: transient failure ({exc}); retrying in {delay:.1f} s")
                runtime.sleep(delay)  # back off before retrying a failing server
                delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# What a server may send


class RedirectRefused(NetworkError):
    """A server answered with a redirect; we never repeat a request elsewhere."""


class AnswerTooLarge(CaasError):
    pass


def suggest_base(base_url: str, request_url: str, location: str) -> str:
    """Where `base_url` seems to have moved, judging by one redirect of a request below it.

    https://a/v3 + https://a/v3/auth/tokens -> https://b/identity/v3/auth/tokens gives
    https://b/identity/v3; when the paths do not line up, the new location's origin.
    """
    target = urljoin(request_url, location)
    base = base_url.rstrip("/")
    request_path = request_url.split("?", 1)[0].split("#", 1)[0]
    target_path = target.split("?", 1)[0].split("#", 1)[0]
    if is_below(request_path, base):
        suffix = request_path[len(base):]
        if suffix and target_path.endswith(suffix):
            return target_path[: -len(suffix)]
        if not suffix:
            return target_path.rstrip("/")
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else target


def is_below(url: str, base: str) -> bool:
    """`url` is `base` or a path under it (https://h/v3 holds https://h/v3/auth, not https://h/v30)."""
    base = base.rstrip("/")
    return url == base or url.startswith(base + "/")


def prepare(session: requests.Session, service: str = "the server", base_url: str = "",
            url_option: str = "", debug: bool = False) -> requests.Session:
    """Install the response hook (size bound, redirect refusal, --debug log) on a requests session
    (plain, keystoneauth1's underlying one, or authlib's OAuth2Session).

    `base_url` and `url_option` let a refused redirect say what to pass instead
    ("use --auth-url https://new/v3"). `debug`: this run's --debug.
    """

    def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = _read_bounded(response, MAX_ANSWER_BYTES)
        if debug:
            http_log.log_exchange(response, body[:MAX_ANSWER_BYTES])
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"{service} answered HTTP {response.status_code} with an oversized body "
                                 f"(more than {MAX_ANSWER_BYTES >> 20} MiB)",
                                 "check the URL; rerun with --debug to see the start of the answer")
        if response.is_redirect:
            raise RedirectRefused(*_describe_redirect(response, service, base_url, url_option))

    session.hooks.setdefault("response", []).append(on_response)
    return session


def _describe_redirect(response: requests.Response, service: str, base_url: str, url_option: str) -> tuple:
    """(message, hint) for a refused redirect. The hint names a new URL only when one can be told
    and is safe to use: a request below the configured URL moved to an https (or loopback) place."""
    request_url = response.request.url or ""
    location = urljoin(request_url, response.headers.get("Location", ""))
    message = f"{service} at {base_url or request_url} redirects to {location} (HTTP {response.status_code})"
    hint = "kubectl-caas never repeats a request, which may carry your credentials, at another address"
    if url_option and base_url and is_below(request_url.split("?", 1)[0], base_url):
        suggested = suggest_base(base_url, request_url, location)
        if is_secure_url(suggested):
            hint = f"use {url_option} {suggested}"
        else:
            hint = f"it points at plain http, which would expose your credentials; ask your site for the https URL " \
                   f"to pass as {url_option}"
    elif url_option:
        hint = f"an endpoint of it moved, not {url_option} itself; tell its administrators ({hint})"
    return message, hint


def new_session(service: str = "the server", base_url: str = "", url_option: str = "",
                debug: bool = False) -> requests.Session:
    return prepare(requests.Session(), service, base_url, url_option, debug)


def _read_bounded(response: requests.Response, limit: int) -> bytes:
    """Read the body, stopping one byte past `limit`; the bytes read become `response.content`."""
    if getattr(response, "_content_consumed", False):
        return response.content or b""
    chunks = []
    size = 0
    try:
        for chunk in response.iter_content(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    finally:
        response.close()
    body = b"".join(chunks)[: limit + 1]
    response._content = body  # requests' own attribute: later `.content` returns what was read
    response._content_consumed = True
    return body


def parse_json(body: bytes) -> Any:
    """JSON from a server; ValueError for anything that is not (including nesting deep enough to
    exhaust Python's recursion limit, which json reports as RecursionError)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# ---------------------------------------------------------------------------------------------
# TLS and errors


def verify_for(cacert: Optional[str]) -> Union[str, bool]:
    """What to pass as `verify` on each request.

    An explicit CA path is passed per request: requests lets REQUESTS_CA_BUNDLE override a
    Session's `verify`, but not one given to the request itself.
    """
    if cacert:
        path = os.path.abspath(os.path.expanduser(cacert))
        if not os.path.isfile(path):
            raise UsageError(f"CA file {cacert} does not exist",
                             "check the --cacert path (for kubectl's renewals: log in again to record a new one)")
        return path
    return True


def network_error(exc: BaseException, url: str, service: str, cacert_hint: Optional[str] = None) -> CaasError:
    """One line for a failure to talk to `service` at `url`."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
        return NetworkError(f"TLS verification of {service} at {url} failed: its certificate is not trusted",
                            cacert_hint or "pass the CA bundle that signed its certificate with --cacert")
    if isinstance(exc, requests.exceptions.SSLError) or "SSLError" in type(exc).__name__ or "SSL" in text:
        reason = re.search(r"\[SSL: ([A-Z_]+)\]", text)
        detail = f" ({reason.group(1).lower().replace('_', ' ')})" if reason else ""
        return NetworkError(f"TLS handshake with {service} at {url} failed{detail}",
                            "check that the URL is https:// and the port is the right one")
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return NetworkError(f"{service} at {url} did not answer in time",
                            "check the URL and your network, then retry")
    return NetworkError(f"cannot reach {service} at {url}", "check the URL and your network, then retry")


def describe_http_error(status: int, body: bytes, service: str, action: str) -> str:
    """'<service> answered HTTP <status> to <action>: <message from the body, if any>'."""
    message = ""
    try:
        data = parse_json(body)
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("title") or "")
            elif isinstance(err, str):
                message = err + (f": {data['error_description']}" if data.get("error_description") else "")
            else:
                message = str(data.get("message") or "")
    except ValueError:
        pass
    text = f"{service} answered HTTP {status} to {action}"
    return f"{text}: {message[:300]}" if message else text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_secure_url(url: object) -> bool:
    """https:// with a host, or http:// on loopback only; nothing a shell, browser or terminal could
    take for something else (no whitespace or control characters, no leading dash)."""
    if not isinstance(url, str) or not url or url != url.strip() or printable(url) != url or " " in url:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme == "https" and host:
        return True
    return parts.scheme == "http" and bool(host) and is_loopback(host)

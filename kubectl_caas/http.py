"""HTTP plumbing shared by the backends: sessions, timeouts, CA handling, --debug logging with
secrets redacted, and turning network failures into one clear line for the user."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, TypeVar, Union
from urllib.parse import parse_qsl, urlencode

import requests

from kubectl_caas.errors import CaasError, NetworkError, UsageError

# A login request gives up after 30 s in all (retries included): at most 10 s to connect, the
# rest to answer. KUBECTL_CAAS_TIMEOUT (seconds) changes the total for slow networks.
CONNECT_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 30.0
RETRY_ATTEMPTS = 3
RETRY_FIRST_DELAY = 0.5
TRANSIENT_STATUS = (500, 502, 503, 504)

T = TypeVar("T")


def total_timeout() -> float:
    try:
        value = float(os.environ.get("KUBECTL_CAAS_TIMEOUT") or DEFAULT_TOTAL_TIMEOUT)
    except ValueError:
        return DEFAULT_TOTAL_TIMEOUT
    return value if value > 0 else DEFAULT_TOTAL_TIMEOUT


class Deadline:
    """The time budget of one user-visible operation, shared by its attempts."""

    def __init__(self, total: Optional[float] = None):
        self.total = total if total is not None else total_timeout()
        self.end = time.monotonic() + self.total

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def timeout(self) -> tuple:
        """(connect, read) timeouts for the next attempt."""
        left = max(self.remaining(), 0.1)
        return (min(CONNECT_TIMEOUT, left), left)


def with_retries(call: Callable[[], T], transient: Callable[[BaseException], bool], deadline: Deadline,
                 attempts: int = RETRY_ATTEMPTS) -> T:
    """Run `call`, again after 0.5 s and 1 s when it fails with a transient error, within the deadline."""
    delay = RETRY_FIRST_DELAY
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - re-raised unless transient
            if attempt == attempts - 1 or not transient(exc) or deadline.remaining() < delay + 1.0:
                raise
            if _debug:
                print(f"kubectl-caas: transient failure ({exc}); retrying in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)  # back off before retrying a failing server
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover

_debug = False

SECRET_HEADERS = {"authorization", "x-auth-token", "x-subject-token", "cookie", "set-cookie",
                  "openstack-auth-receipt"}
# Keys whose values are secrets wherever they appear in a JSON or form body.
SECRET_KEYS = re.compile(r"(password|secret|token|device_code|code_verifier|passcode|assertion)$", re.I)
REDACTED = "<redacted>"


def enable_debug() -> None:
    global _debug
    _debug = True


def redact_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        # Only scalar values are hidden: a nested mapping under "password" still shows the user.
        return {k: (REDACTED if isinstance(k, str) and SECRET_KEYS.search(k) and v not in (None, "")
                    and not isinstance(v, (dict, list)) else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def redact_body(body: Union[bytes, str, None], content_type: str = "") -> str:
    if body is None or body == b"" or body == "":
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return json.dumps(redact_value(json.loads(text)))
    except ValueError:
        pass
    if "=" in text and " " not in text.strip():
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs:
            return urlencode([(k, REDACTED if SECRET_KEYS.search(k) else v) for k, v in pairs])
    if len(text) > 2000:
        text = text[:2000] + "..."
    return text


def _log_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    request = response.request
    out = sys.stderr
    print(f"> {request.method} {_redact_url(request.url or '')}", file=out)
    for key, value in redact_headers(request.headers).items():
        print(f">   {key}: {value}", file=out)
    body = redact_body(request.body, request.headers.get("Content-Type", ""))
    if body:
        print(f">   {body}", file=out)
    print(f"< HTTP {response.status_code} {response.reason} ({response.elapsed.total_seconds():.3f} s)",
          file=out)
    for key, value in redact_headers(response.headers).items():
        print(f"<   {key}: {value}", file=out)
    if not getattr(response, "_content_consumed", True):
        return  # streamed: read_limited() prints the body once it has read (a bounded part of) it
    text = redact_body(response.content, response.headers.get("Content-Type", ""))
    if text:
        print(f"<   {text}", file=out)


def read_limited(response: requests.Response, limit: int) -> bytes:
    """Read a streamed answer's body, stopping one byte past `limit`: a huge or endless body is
    refused without downloading it. The bytes read become `response.content`."""
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
    if _debug:
        text = redact_body(body, response.headers.get("Content-Type", ""))
        if text:
            print(f"<   {text}", file=sys.stderr)
    return body


def _redact_url(url: str) -> str:
    if "?" not in url:
        return url
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    return base + "?" + urlencode([(k, REDACTED if SECRET_KEYS.search(k) else v) for k, v in pairs])


def prepare(session: requests.Session) -> requests.Session:
    """Attach --debug logging to a requests session (requests, or authlib's OAuth2Session)."""
    if _debug:
        session.hooks.setdefault("response", []).append(_log_response)
    return session


def new_session() -> requests.Session:
    return prepare(requests.Session())


def verify_for(cacert: Optional[str]) -> Union[str, bool]:
    """What to pass as `verify` on each request.

    An explicit CA path is passed per request: requests lets REQUESTS_CA_BUNDLE override a
    Session's `verify`, but not one given to the request itself.
    """
    if cacert:
        import os

        path = os.path.abspath(os.path.expanduser(cacert))
        if not os.path.isfile(path):
            raise UsageError(f"CA file {cacert} does not exist", "check the --cacert path")
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
        data = json.loads(body)
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

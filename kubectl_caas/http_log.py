"""What --debug prints of each HTTP exchange, and how secrets are kept out of it.

http.py's response hook hands every exchange here when the run has --debug: request line,
headers and body, then the answer's status, headers and body, on stderr, each line with control
characters escaped. Secrets are replaced by REDACTED wherever they can appear: the headers that
carry tokens and cookies, and any JSON, form or query value whose key ends in a secret's name
(password, secret, token, device_code, ...). docs/security.md promises this.

A module of its own so that the rules for what is secret sit in one short place that can be read
and tested without the session, retry and time-limit machinery around it. It depends on nothing
in http.py; http.py imports it.
"""
from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any, Dict, Mapping, Union
from urllib.parse import parse_qsl, urlencode

from kubectl_caas.terminal import printable

if TYPE_CHECKING:
    import requests

# Headers that carry a token, a password or a session: Keystone's tokens and MFA receipts, bearer
# and basic authorization, cookies.
SECRET_HEADERS = {"authorization", "x-auth-token", "x-subject-token", "cookie", "set-cookie",
                  "openstack-auth-receipt"}
# Keys whose values are secrets wherever they appear in a JSON or form body or a query string.
SECRET_KEYS = re.compile(r"(password|secret|token|device_code|code_verifier|passcode|assertion)$", re.I)
REDACTED = "<redacted>"


def redact_headers(headers: Mapping[str, str]) -> Dict[str, str]:
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def redact_value(value: Any) -> Any:
    """Parsed JSON with the value of every secret key replaced, at any depth."""
    if isinstance(value, dict):
        # Only scalar values are hidden: a nested mapping under "password" still shows the user.
        return {k: (REDACTED if isinstance(k, str) and SECRET_KEYS.search(k) and v not in (None, "")
                    and not isinstance(v, (dict, list)) else redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def redact_body(body: Union[bytes, str, None], content_type: str = "") -> str:
    """A request or answer body as text to print: JSON and form bodies redacted, other text cut at
    2000 characters. JSON is recognised by parsing it, whatever `content_type` says."""
    if body is None or body == b"" or body == "":
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        # Parsed as bytes, as the server sent them: json then reads a UTF-8 byte order mark too.
        data = json.loads(text.encode())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        pass
    else:
        return json.dumps(redact_value(data))
    if "=" in text and " " not in text.strip():
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs:
            return urlencode([(k, REDACTED if SECRET_KEYS.search(k) else v) for k, v in pairs])
    if len(text) > 2000:
        text = text[:2000] + "..."
    return text


def log_exchange(response: requests.Response, body: bytes) -> None:
    """Print one request and its answer on stderr, secrets redacted. `body`: the answer as http.py
    read it, cut at its size limit."""
    request = response.request
    lines = [f"> {request.method} {_redact_url(request.url or '')}"]
    lines += [f">   {key}: {value}" for key, value in redact_headers(request.headers).items()]
    sent = redact_body(request.body, request.headers.get("Content-Type", ""))
    if sent:
        lines.append(f">   {sent}")
    lines.append(f"< HTTP {response.status_code} {response.reason} ({response.elapsed.total_seconds():.3f} s)")
    lines += [f"<   {key}: {value}" for key, value in redact_headers(response.headers).items()]
    received = redact_body(body, response.headers.get("Content-Type", ""))
    if received:
        lines.append(f"<   {received[:4000]}")
    for line in lines:
        print(printable(line), file=sys.stderr)


def _redact_url(url: str) -> str:
    if "?" not in url:
        return url
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    return base + "?" + urlencode([(k, REDACTED if SECRET_KEYS.search(k) else v) for k, v in pairs])

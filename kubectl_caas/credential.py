"""What get-token hands kubectl, and for how long it may: the ExecCredential, and the freshness
rule (renew a little before expiry). Standard library only: the get-token hit path (exec_plugin)
and the ready credential (ready.py) share it, so the Python hit and the shell front agree.
"""
from __future__ import annotations

from kubectl_caas import hotpath

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
DEFAULT_EXEC_API_VERSION = EXEC_API_VERSIONS[0]

MAX_RENEW_MARGIN = 60.0
LAST_EXPIRY = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment an RFC 3339 timestamp can say


def renew_margin(lifetime: float) -> float:
    """Renew this long before expiry: at most 60 s and at most a tenth of the token's lifetime."""
    return max(0.0, min(MAX_RENEW_MARGIN, lifetime / 10.0))


def cached_token(entry: Optional[Mapping[str, Any]], kind: str) -> Optional[Mapping[str, Any]]:
    """The entry's bearer of this kind, or None when the entry does not hold a well-formed one."""
    tokens = entry.get("tokens") if isinstance(entry, dict) else None
    token = tokens.get(kind) if isinstance(tokens, dict) else None
    if not isinstance(token, dict) or not isinstance(token.get("value"), str) or not token["value"]:
        return None
    try:
        expires_at = float(token["expires_at"])
        issued_at = float(token.get("issued_at") or 0)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    # NaN and infinity fail these comparisons too; beyond year 9999 no date can be formatted.
    if not (0 < expires_at < LAST_EXPIRY and 0 <= issued_at < LAST_EXPIRY):
        return None
    return token


def fresh_token(entry: Optional[Mapping[str, Any]], kind: str, now: float) -> Optional[Mapping[str, Any]]:
    """The cached bearer of this kind when it is still good beyond the renewal margin."""
    token = cached_token(entry, kind)
    if token is None:
        return None
    expires_at = float(token["expires_at"])
    issued_at = float(token.get("issued_at") or now)
    if now < expires_at - renew_margin(expires_at - issued_at):
        return token
    return None


def exec_credential(api_version: str, token: Mapping[str, Any]) -> str:
    import time

    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(token["expires_at"])))
    return hotpath.dumps_flat({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": token["value"], "expirationTimestamp": expiry},
    })


def ready_path(entry_path: str, kind: str) -> str:
    """The entry's ready credential for bearers of this kind (ready.py): `<entry name>.<kind>.ready`."""
    base = entry_path[: -len(".json")] if entry_path.endswith(".json") else entry_path
    return f"{base}.{kind}.ready"

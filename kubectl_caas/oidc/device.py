"""The device authorization grant (RFC 8628), the way kubectl-iam signs a person in: ask the
provider for a code, show the person where to enter it, poll the token endpoint until they
approve, then check what comes back and make a cache entry of it.

Waiting goes through the Runtime (its monotonic clock and sleep), so tests run a whole sign-in on
a fake clock; what the person sees goes through its notices, escaped.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping

from kubectl_caas import http
from kubectl_caas.errors import EXIT_AUTH, AuthError, CaasError, UsageError
from kubectl_caas.oidc.provider import OAuthError
from kubectl_caas.oidc.tokens import entry_from_tokens

if TYPE_CHECKING:
    from kubectl_caas.oidc.provider import Provider
    from kubectl_caas.runtime import Runtime

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2: when the server gives none (INDIGO IAM never does)
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: every slow_down adds this to the interval for good
DEFAULT_CODE_LIFETIME = 600.0  # when the answer gives no usable expires_in: what INDIGO IAM gives its codes


def start_device_flow(provider: Provider) -> Dict[str, Any]:
    """Ask for a device code (RFC 8628 §3.1-3.2); the answer, checked for what a person will see."""
    data = provider.with_audience({"scope": provider.client.scopes})
    try:
        answer = provider.post_form("device_authorization_endpoint", data, "the device authorization request",
                                    client_id_in_form=True)
    except OAuthError as exc:
        raise _explained(provider, exc) from None
    for key in ("device_code", "user_code", "verification_uri"):
        if not isinstance(answer.get(key), str) or not answer[key]:
            raise CaasError(f"the OIDC provider's device authorization answer lacks {key}")
    # A person opens these: only an https page (http on loopback), nothing a browser would run
    # (javascript:, data:, file:) or take for an option.
    if not http.is_secure_url(answer["verification_uri"]):
        raise CaasError(f"the OIDC provider's verification URI '{answer['verification_uri']}' is not an https:// "
                        "URL", "check --issuer")
    if not http.is_secure_url(answer.get("verification_uri_complete")):
        answer.pop("verification_uri_complete", None)
    if len(answer["user_code"]) > 64 or not answer["user_code"].isprintable():
        raise CaasError(f"the OIDC provider's user code '{answer['user_code']}' is not a code a person can type")
    return answer


def _explained(provider: Provider, exc: OAuthError) -> CaasError:
    """What a refused device request means for the person and what to do (INDIGO IAM's answers)."""
    client, issuer = provider.client, provider.client.issuer
    if exc.error == "invalid_scope":
        return UsageError(f"{issuer} does not allow client {client.client_id} the scopes '{client.scopes}' "
                          f"({exc.description or 'invalid_scope'})",
                          "ask for the scopes the client is registered for with --scope (or `scope:` in the "
                          "config file), e.g. --scope 'openid profile offline_access'")
    if exc.error in ("invalid_client", "unauthorized_client"):
        return AuthError(f"{issuer} refused client {client.client_id} ({exc.error}: {exc.description or 'no reason'})",
                         "check --client-id and its secret; the client must be registered with the device code "
                         "grant (see the operator guide)")
    return exc


def _code_expired() -> OAuthError:
    # INDIGO IAM keeps a denied code pending until it expires, so an expiry may be a refusal.
    return OAuthError("expired_token", "the code expired before the sign-in was approved (or the request was denied: "
                      "the provider does not say which)", "run the login again and approve it within the time shown",
                      exit_code=EXIT_AUTH)


def poll_device_flow(provider: Provider, device: Mapping[str, Any]) -> Dict[str, Any]:
    """Poll the token endpoint (RFC 8628 §3.4-3.5) until the person approves, refuses, or the code
    expires; the token answer, unchecked. No poll goes out after the code has expired."""
    interval = _positive_number(device.get("interval"), DEFAULT_INTERVAL)
    expires_in = _positive_number(device.get("expires_in"), DEFAULT_CODE_LIFETIME)
    clock, sleep = provider.runtime.monotonic, provider.runtime.sleep
    deadline = clock() + expires_in
    data = provider.with_audience({"grant_type": DEVICE_GRANT, "device_code": device["device_code"]})
    while True:
        if clock() + interval > deadline:
            raise _code_expired()
        sleep(interval)
        try:
            return provider.post_form("token_endpoint", dict(data), "the device code poll")
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if exc.error == "access_denied":
                raise OAuthError("access_denied", "the sign-in was refused in the browser",
                                 "run the login again and approve it", exit_code=EXIT_AUTH) from None
            if exc.error == "expired_token":
                raise _code_expired() from None
            raise


def device_login(provider: Provider, announce: Callable[[Mapping[str, Any]], None]) -> Dict[str, Any]:
    """The whole device flow: ask for a code, show it (`announce`), poll, verify. Returns a cache entry."""
    device = start_device_flow(provider)
    announce(device)
    tokens = poll_device_flow(provider, device)
    if provider.client.bearer == "id" and not tokens.get("id_token"):
        raise AuthError("the provider returned no ID token", "check that the scope includes openid")
    return entry_from_tokens(provider, tokens)


def _draws_blocks(runtime: Runtime) -> bool:
    """stderr is a terminal that takes UTF-8 (the QR code is drawn with block characters)."""
    stream = runtime.stderr or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"


def announce(device: Mapping[str, Any], runtime: Runtime, qr: bool = True) -> None:
    """Show the person where to go and what to type (on stderr, escaped)."""
    runtime.notice(f"To sign in, open {device['verification_uri']} and enter the code {device['user_code']}")
    complete = device.get("verification_uri_complete")
    if isinstance(complete, str) and complete:
        runtime.notice(f"or open {complete}")
        if qr and _draws_blocks(runtime):
            from kubectl_caas.oidc.qr import qr_lines

            lines = qr_lines(complete)
            if lines:
                runtime.notice("or scan it with a phone (--no-qr hides this):")
                for line in lines:
                    runtime.notice(line)
    lifetime = min(_positive_number(device.get("expires_in"), DEFAULT_CODE_LIFETIME), 3600)
    until = time.strftime("%H:%M", time.localtime(runtime.clock() + lifetime))
    runtime.notice(f"(the code is valid until {until}, {int(lifetime // 60) or 1} min; waiting... Ctrl-C cancels)")


def _positive_number(value: Any, default: float) -> float:
    """A finite number above zero from a server's answer, else `default`."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if 0 < number < float("inf") else default

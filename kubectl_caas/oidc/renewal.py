"""get-token's renewal: the backend's answer to the core's one question (exec_plugin calls
`renew` when the cached bearer is missing or about to expire, under the entry's lock).

It refreshes with the refresh token when there is one and the provider still honours it; when
not, it tells a person at a terminal to sign in again (in the desktop's browser when there is one,
else with a device code), and tells kubectl (no one to ask) that a login is required.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from kubectl_caas.errors import LoginRequired
from kubectl_caas.oidc.browser_flow import browser_login
from kubectl_caas.oidc.client import Client, normalise_issuer
from kubectl_caas.oidc.device import announce, device_login
from kubectl_caas.oidc.provider import OAuthError, Provider
from kubectl_caas.oidc.tokens import entry_from_tokens

if TYPE_CHECKING:
    from kubectl_caas.runtime import Runtime

# Error codes (RFC 6749 §5.2; invalid_token: RFC 6750 §3.1) saying this refresh token, or refreshing
# at all, is no longer accepted: a new sign-in is the way on. INDIGO IAM answers a dead refresh
# token with 401 invalid_token, a suspended account with 401 `unauthorized`, and a terms-of-use
# (AUP) signature due with 400 invalid_grant. Others, such as invalid_client, would fail a sign-in
# too, so they are raised as they are.
REFRESH_REFUSED = ("invalid_grant", "invalid_token", "unauthorized_client", "unauthorized")


def provider_for(client: Client, runtime: Runtime, client_secret: Optional[str] = None,
                 entry: Optional[Mapping[str, Any]] = None) -> Provider:
    """A Provider reusing the discovery document and keys cached in the entry, if any."""
    metadata = jwks = None
    if entry and normalise_issuer(str(entry.get("issuer", ""))) == normalise_issuer(client.issuer):
        metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else None
        jwks = entry.get("jwks") if isinstance(entry.get("jwks"), dict) else None
    return Provider(client, runtime, client_secret, metadata, jwks)


def renew(values: Mapping[str, str], entry: Optional[Dict[str, Any]], runtime: Runtime,
          interactive: bool) -> Dict[str, Any]:
    """A fresh bearer for get-token: refresh, else (a person at a terminal) a new sign-in."""
    if values.get("oidc_agent"):  # the person's oidc-agent keeps the refresh token: ask it again
        from kubectl_caas.oidc.agent import renew as ask_agent

        return ask_agent(values, runtime)
    entry = entry or {}
    client = Client.from_values(values)
    if client.grant:  # a service account: its secret only ever comes from the environment
        from kubectl_caas.oidc.service import client_credentials_login

        provider = provider_for(client, runtime, runtime.getenv("IAM_CLIENT_SECRET"), entry)
        return client_credentials_login(provider, renewing=True)
    secret = entry.get("client_secret") or runtime.getenv("IAM_CLIENT_SECRET")
    provider = provider_for(client, runtime, secret, entry)
    refresh_token = entry.get("refresh_token")
    why = "there is no refresh token"
    if refresh_token:
        try:
            answer = provider.refresh(refresh_token)
            if client.bearer == "id" and not answer.get("id_token"):
                why = "the refresh answer carried no ID token"
            else:
                return entry_from_tokens(provider, answer, entry)
        except OAuthError as exc:
            if exc.error not in REFRESH_REFUSED:
                raise
            why = f"the refresh token was refused ({exc.error})"
    if not interactive:
        raise LoginRequired(f"cannot renew the token from {client.issuer}: {why}", "run `kubectl iam login`")
    runtime.notice(f"kubectl-iam: {why}; sign in again")
    from kubectl_caas.browser import can_open

    if can_open(runtime.environ):  # a desktop: sign in in its browser
        return browser_login(provider, runtime)
    return device_login(provider, lambda device: announce(device, runtime))

"""Service accounts: the client credentials grant (RFC 6749 §4.4) for CI jobs and services.

No person takes part: the client authenticates with its secret and gets an access token (with
the audience asked for), and nothing renews it but the same request again. So the secret is
never stored by us, not even in the 0600 cache: login and every renewal read it from
IAM_CLIENT_SECRET (kubectl hands its environment to get-token), and without it an expired token
cannot be renewed, which get-token says in one line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from kubectl_caas.errors import AuthError, LoginRequired, UsageError
from kubectl_caas.oidc.provider import OAuthError
from kubectl_caas.oidc.tokens import entry_from_tokens

if TYPE_CHECKING:
    from kubectl_caas.oidc.provider import Provider

GRANT = "client-credentials"  # the value of the identity's `grant` field


def client_credentials_login(provider: Provider, renewing: bool = False) -> Dict[str, Any]:
    """A cache entry holding an access token from the client credentials grant (no refresh
    token, no ID token, no client secret)."""
    client = provider.client
    if not provider.client_secret:
        message = f"client {client.client_id} has no secret: a service account authenticates with it"
        hint = "set IAM_CLIENT_SECRET in the environment kubectl runs in"
        raise LoginRequired(message, hint) if renewing else UsageError(message, hint)
    data: Dict[str, str] = {"grant_type": "client_credentials"}
    if client.scope:  # the default scope (openid, offline_access) means nothing without a person
        data["scope"] = client.scope
    try:
        answer: Dict[str, Any] = provider.post_form("token_endpoint", provider.with_audience(data),
                                                    "the client credentials grant")
    except OAuthError as exc:
        if exc.error not in ("invalid_client", "unauthorized_client", "unauthorized"):
            raise
        raise AuthError(f"{client.issuer} refused client {client.client_id} ({exc.error}: "
                        f"{exc.description or 'no reason given'})",
                        "check --client-id and IAM_CLIENT_SECRET; the client must be registered with the client "
                        "credentials grant") from None
    # A refresh token would outlive what the grant promises (RFC 6749 §4.4.3 says none is issued).
    answer = {k: v for k, v in answer.items() if k in ("access_token", "expires_in", "token_type", "scope")}
    entry = entry_from_tokens(provider, answer)
    entry.pop("client_secret", None)
    if not (entry.get("tokens") or {}).get("access"):
        raise AuthError("the OIDC provider's answer to the client credentials grant holds no access token")
    return entry

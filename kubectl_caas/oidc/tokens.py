"""What a token answer becomes: a verified ID token, an access token with a known expiry, and
the cache entry that holds them with what renews them (the refresh token).

The ID token is checked as kube-apiserver will check it (signature, iss, aud, azp, times), so a
token it would refuse never reaches the cache. Times are judged on the provider's clock, read
from the Date header of its answers (Provider.server_now), and stored in local time, since
kubectl compares expiries with this machine's clock (see clock.py).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from kubectl_caas import clock, http
from kubectl_caas.errors import AuthError

if TYPE_CHECKING:
    from kubectl_caas.oidc.provider import Provider

ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Discovery documents and key sets larger than this are used but not cached: every cache entry
# must stay well below the cache's size limit.
MAX_CACHED_DOCUMENT = 64 << 10
# What the cache keeps of the ID token's claims: who signed in, for `status` and the login line.
KEPT_CLAIMS = ("sub", "preferred_username", "name", "email", "groups", "wlcg.groups")


def verify_id_token(provider: Provider, id_token: str, nonce: Optional[str] = None) -> Dict[str, Any]:
    """The ID token's claims, once its signature checks out against the issuer's keys and iss,
    aud, azp and the times are what kube-apiserver will require, and it carries `nonce` when the
    sign-in sent one (OIDC Core §3.1.3.7); AuthError otherwise."""
    from joserfc import jwt
    from joserfc.errors import InvalidKeyIdError, JoseError

    client_id = provider.client.client_id
    try:
        try:
            token = jwt.decode(id_token, provider.signing_keys(), algorithms=list(ID_TOKEN_ALGORITHMS))
        except InvalidKeyIdError:  # keys rotated since we cached them
            token = jwt.decode(id_token, provider.signing_keys(refetch=True), algorithms=list(ID_TOKEN_ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise AuthError(f"the ID token from {provider.client.issuer} failed verification: {exc}") from None
    claims = dict(token.claims)
    now = provider.server_now()
    if claims.get("iss") != provider.issuer:
        raise AuthError(f"the ID token's issuer {claims.get('iss')!r} is not {provider.issuer!r}")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise AuthError(f"the ID token is not meant for client {client_id} (aud {audience!r})")
    if "azp" in claims and claims["azp"] != client_id:
        raise AuthError(f"the ID token was issued to client {claims['azp']!r}, not {client_id}")
    if nonce is not None and claims.get("nonce") != nonce:
        raise AuthError("the ID token's nonce is not the one this sign-in sent", "run the login again")
    exp = clock.finite_number(claims.get("exp"))
    # No leeway here: an ID token that is already expired would be handed to kubectl dead.
    if exp is None or exp <= now:
        raise AuthError("the ID token has expired or carries no expiry")
    if exp - now > clock.MAX_LIFETIME:
        raise AuthError(f"the ID token's expiry ({claims['exp']!r}) is absurd")
    for name, meaning in (("nbf", "is not valid until"), ("iat", "claims to be issued at")):
        if name in claims:
            moment = clock.finite_number(claims[name])
            if moment is None:
                raise AuthError(f"the ID token's {name} ({claims[name]!r}) is not a time")
            if moment > now + clock.LEEWAY:
                raise AuthError(f"the ID token {meaning} {moment - now:.0f} s in the future (by the provider's "
                                "own clock)", "the provider is misbehaving; tell its administrators")
    return claims


def _unverified_claims(token: str) -> Optional[Dict[str, Any]]:
    """Claims of a JWT access token, read only for its expiry (the API server checks it)."""
    import base64

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = http.parse_json(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def access_token_expiry(provider: Provider, access_token: str, expires_in: Any) -> float:
    """When the access token expires, on the provider's clock: its JWT `exp` (IAM's are JWTs, and
    the API server checks that claim), else `expires_in` (RFC 6749), else five minutes."""
    now = provider.server_now()
    exp = clock.finite_number((_unverified_claims(access_token) or {}).get("exp"))
    if exp is not None and now < exp <= now + clock.MAX_LIFETIME:
        return exp
    lifetime = clock.finite_number(expires_in)
    if lifetime is not None and 0 < lifetime <= clock.MAX_LIFETIME:
        return now + lifetime
    return now + 300.0


def entry_from_tokens(provider: Provider, tokens: Mapping[str, Any],
                      previous: Optional[Mapping[str, Any]] = None, nonce: Optional[str] = None) -> Dict[str, Any]:
    """A cache entry from a token answer, checking the ID token first.

    A refresh answer may omit the refresh token (not rotated) or the ID token; what it omits is
    kept from `previous`. (When the ID token is the bearer, `renew` counts its absence as a failed
    refresh before it gets here.) Expiries are stored in local time: when we sent the request plus
    what the provider's clock says was left (see clock.py).
    """
    previous = previous or {}
    kept = previous.get("tokens")
    entry_tokens: Dict[str, Any] = dict(kept) if isinstance(kept, dict) else {}
    claims = dict(previous.get("claims") or {})
    # The token answer's times: checking the ID token may fetch keys, a later exchange.
    sent_at, server_now = provider.sent_at, provider.server_now()

    def local(expiry: float) -> Dict[str, float]:
        issued, expires = clock.local_window(sent_at, server_now, expiry)
        return {"issued_at": issued, "expires_at": expires}

    id_token = tokens.get("id_token")
    if isinstance(id_token, str) and id_token:
        claims = verify_id_token(provider, id_token, nonce)
        entry_tokens["id"] = {"value": id_token, **local(float(claims["exp"]))}
    access_token = tokens.get("access_token")
    if isinstance(access_token, str) and access_token:
        if not access_token.isprintable() or len(access_token) > 16384:
            raise AuthError("the OIDC provider returned an access token that is not a usable bearer token")
        entry_tokens["access"] = {"value": access_token,
                                  **local(access_token_expiry(provider, access_token, tokens.get("expires_in")))}
        # The API server compares a JWT's `iss` with the issuer it is configured with, exactly:
        # INDIGO IAM may write it without the slash its discovery document has (IAM issue #1118).
        access_issuer = (_unverified_claims(access_token) or {}).get("iss")
        if isinstance(access_issuer, str):
            entry_tokens["access"]["issuer"] = access_issuer
    entry: Dict[str, Any] = {
        "version": 1,
        "plugin": "iam",
        "issuer": provider.issuer,
        "client_id": provider.client.client_id,
        "claims": {k: claims[k] for k in KEPT_CLAIMS if k in claims},
        "tokens": entry_tokens,
        "clock_offset": server_now - sent_at,
    }
    # Discovery and keys are cached only to save round trips; oversized ones are fetched again.
    for key, document in (("metadata", provider.discover()), ("jwks", provider.jwks)):
        if document and len(json.dumps(document)) <= MAX_CACHED_DOCUMENT:
            entry[key] = document
    refresh_token = tokens.get("refresh_token") or previous.get("refresh_token")
    if refresh_token:
        entry["refresh_token"] = refresh_token
    if provider.client_secret:
        entry["client_secret"] = provider.client_secret
    return entry

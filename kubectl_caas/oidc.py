"""OIDC device-flow backend (authlib for client authentication, joserfc for ID-token checks):
discovery, the device authorization grant (RFC 8628), refresh, revocation (RFC 7009).

Like the Keystone backend it answers the core's one question with a cache entry holding the
bearer tokens, their expiry and what renews them (the refresh token).
"""
from __future__ import annotations

import email.utils
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session

from kubectl_caas import http
from kubectl_caas.errors import EXIT_AUTH, AuthError, CaasError, LoginRequired, UsageError
from kubectl_caas.identity import identity_type, to_args
from kubectl_caas.plugins import IAM_OPTIONS
from kubectl_caas.runtime import Runtime

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid profile email offline_access"
DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2: when the server gives none (INDIGO IAM never does)
SLOW_DOWN_STEP = 5.0
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Discovery documents and key sets larger than this are used but not cached: every cache entry
# must stay well below the cache's size limit.
MAX_CACHED_DOCUMENT = 64 << 10


def normalise_issuer(issuer: str) -> str:
    """Compare issuers without the trailing slash INDIGO IAM writes; nothing else is forgiven."""
    return issuer.strip().rstrip("/")


def check_issuer_url(issuer: str) -> None:
    if http.is_secure_url(issuer):
        return
    if urlsplit(issuer).scheme == "http":
        raise UsageError(f"refusing issuer {issuer}: plain http is allowed only on loopback",
                         "use the issuer's https:// URL")
    raise UsageError(f"the issuer {issuer!r} is not an https:// URL")


class OAuthError(CaasError):
    """An error answer from the provider (RFC 6749 §5.2): `error` holds its code."""

    def __init__(self, error: str, message: str, hint: Optional[str] = None, exit_code: Optional[int] = None):
        super().__init__(message, hint, exit_code)
        self.error = error


class _Transient(Exception):
    """A 5xx answer worth another try; carries the answer for when the tries run out."""

    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _ClientMeaning:
    """What an OIDC client identity's fields mean (the fields come from the plugin's option table:
    identity.identity_type and plugins.IAM_OPTIONS). A default is stored as None, so that the
    exec args and the cache key of a login that spells out a default stay those of one that does
    not; `scopes` and `bearer` give the values in force."""

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not self.issuer or not self.client_id:
            raise UsageError("an OIDC login needs an issuer and a client id", "pass --issuer and --client-id")
        # One spelling everywhere we write it (kubeconfig args, cache key); the exact form the
        # provider uses, which ID tokens must carry, comes from its discovery document.
        put(self, "issuer", normalise_issuer(self.issuer))
        check_issuer_url(self.issuer)
        if self.scope == DEFAULT_SCOPE:
            put(self, "scope", None)
        if self.token == "id":
            put(self, "token", None)
        if self.bearer not in ("id", "access"):
            raise UsageError(f"--token must be 'id' or 'access', not {self.bearer!r}")
        if self.bearer == "id" and "openid" not in self.scopes.split():
            raise UsageError("the ID token is the bearer but the scope lacks `openid`",
                             "add openid to --scope, or use --token access")
        if self.cacert:
            put(self, "cacert", os.path.abspath(os.path.expanduser(self.cacert)))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Client":
        """From get-token's values (the exec args login wrote), or any mapping of field names."""
        if not values.get("issuer") or not values.get("client_id"):
            raise UsageError("get-token needs --issuer and --client-id", "run `kubectl iam login` again")
        return cls(**{f: values.get(f) for f in cls.__dataclass_fields__})

    def values(self) -> Dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def exec_args(self) -> List[str]:
        return to_args(IAM_OPTIONS, self.values())

    @property
    def scopes(self) -> str:
        return self.scope or DEFAULT_SCOPE

    @property
    def bearer(self) -> str:
        """Which token kubectl gets: id (the ID token) or access."""
        return self.token or "id"

    @property
    def host(self) -> str:
        return urlsplit(self.issuer).netloc


# One OIDC client at one issuer: every non-secret setting (frozen); its secret travels apart.
Client = identity_type("Client", IAM_OPTIONS, _ClientMeaning)


class Provider:
    """A connection to one issuer: discovery, the token endpoint, revocation, ID-token checks."""

    def __init__(self, client: Client, runtime: Runtime, client_secret: Optional[str] = None,
                 metadata: Optional[Dict[str, Any]] = None, jwks: Optional[Dict[str, Any]] = None):
        self.client = client
        self.runtime = runtime
        self.client_secret = client_secret
        self.verify = http.verify_for(client.cacert)
        self.metadata = metadata
        self.jwks = jwks
        method = "client_secret_basic" if client_secret else "none"
        self.session = http.prepare(OAuth2Session(client.client_id, client_secret, scope=client.scopes,
                                                  token_endpoint_auth_method=method,
                                                  revocation_endpoint_auth_method=method),
                                    "the OIDC provider", client.issuer, "--issuer", debug=runtime.debug)
        # The provider's clock, from the Date header of its last answer, and when we sent that
        # request by ours: token lifetimes are measured on the provider's clock (see clock.py).
        self.server_time: Optional[float] = None
        self.sent_at = runtime.clock()

    # -- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, url: str, action: str, retry_statuses=http.TRANSIENT_STATUS,
                 **kwargs: Any) -> requests.Response:
        """One HTTP exchange, retried (within the time budget) while the server answers a transient 5xx.

        The session's hook bounds the body (http.MAX_ANSWER_BYTES) and refuses redirects.
        """
        deadline = http.Deadline(f"the OIDC provider ({action})", url)

        def attempt() -> requests.Response:
            sent = self.runtime.clock()
            try:
                response = self.session.request(method, url, withhold_token=True, verify=self.verify,
                                                timeout=deadline.timeout(), **kwargs)
            except requests.exceptions.RequestException as exc:
                raise http.network_error(exc, url, f"the OIDC provider ({action})",
                                         "pass the issuer's CA bundle with --cacert") from None
            if response.status_code in retry_statuses:
                raise _Transient(response)
            self.sent_at, self.server_time = sent, _server_time(response)
            return response

        try:
            return http.with_retries(attempt, lambda exc: isinstance(exc, _Transient), deadline,
                                     debug=self.runtime.debug)
        except _Transient as exc:
            return exc.response

    def _json(self, response: requests.Response, action: str) -> Dict[str, Any]:
        try:
            data = http.parse_json(response.content)
        except ValueError:
            raise CaasError(f"the OIDC provider answered HTTP {response.status_code} to {action} with a body that "
                            "is not JSON", "check the issuer URL; rerun with --debug to see the answer") from None
        if not isinstance(data, dict):
            raise CaasError(f"the OIDC provider answered HTTP {response.status_code} to {action} with unexpected JSON")
        return data

    def _endpoint_call(self, endpoint: str, data: Dict[str, str], action: str,
                       retry_statuses=http.TRANSIENT_STATUS) -> Dict[str, Any]:
        """POST a form to the token or device endpoint with client authentication (via authlib).

        authlib's client auth adds client_id to the form for a public client, or sends HTTP Basic
        for a confidential one, so `data` never carries client_id itself.
        """
        url = self.endpoint(endpoint)
        auth = self.session.client_auth(self.session.token_endpoint_auth_method)
        response = self._request("POST", url, action, retry_statuses, data=data, auth=auth,
                                 headers={"Accept": "application/json"})
        if response.status_code >= 500:
            raise CaasError(http.describe_http_error(response.status_code, response.content,
                                                     "the OIDC provider", action))
        body = self._json(response, action)
        if "error" in body or response.status_code >= 400:
            error = str(body.get("error") or "invalid_request")
            description = body.get("error_description")
            text = f"the OIDC provider refused {action}: {error}" + (f" ({description})" if description else "")
            raise OAuthError(error, text + f" (HTTP {response.status_code})")
        return body

    # -- discovery -----------------------------------------------------------------------------

    def discover(self) -> Dict[str, Any]:
        if self.metadata is None:
            url = normalise_issuer(self.client.issuer) + "/.well-known/openid-configuration"
            response = self._request("GET", url, "discovery")
            if response.status_code != 200:
                raise CaasError(f"OIDC discovery at {url} answered HTTP {response.status_code}",
                                "check --issuer")
            metadata = self._json(response, "discovery")
            announced = metadata.get("issuer")
            if not isinstance(announced, str) or normalise_issuer(announced) != normalise_issuer(self.client.issuer):
                raise CaasError(f"the discovery document at {url} names issuer {announced!r}, not "
                                f"{self.client.issuer}", "check --issuer: tokens from it would be refused")
            self.metadata = metadata
        return self.metadata

    @property
    def issuer(self) -> str:
        """The issuer exactly as the provider writes it (INDIGO IAM: with a trailing slash)."""
        return self.discover()["issuer"]

    def endpoint(self, name: str) -> str:
        url = self.discover().get(name)
        if not isinstance(url, str) or not url:
            raise CaasError(f"the OIDC provider at {self.client.issuer} has no {name}",
                            "it may not support the device flow; ask its administrators")
        if not http.is_secure_url(url):
            raise CaasError(f"the provider's {name} {url} is not an https:// URL", "check --issuer")
        return url

    # -- grants --------------------------------------------------------------------------------

    def _with_audience(self, data: Dict[str, str]) -> Dict[str, str]:
        # INDIGO IAM honours `audience` only on the request that carries it: send it every time.
        if self.client.audience:
            data["audience"] = self.client.audience
        return data

    def start_device_flow(self) -> Dict[str, Any]:
        data = self._with_audience({"scope": self.client.scopes})
        answer = self._endpoint_call("device_authorization_endpoint", data, "the device authorization request")
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

    def poll_device_flow(self, device: Mapping[str, Any]) -> Dict[str, Any]:
        """Poll the token endpoint until the person approves, refuses, or the code expires."""
        interval = _positive_number(device.get("interval"), DEFAULT_INTERVAL)
        expires_in = _positive_number(device.get("expires_in"), 600.0)
        clock, sleep = self.runtime.monotonic, self.runtime.sleep
        deadline = clock() + expires_in
        data = self._with_audience({"grant_type": DEVICE_GRANT, "device_code": device["device_code"]})
        while True:
            if clock() + interval > deadline:
                raise OAuthError("expired_token", "the code expired before the sign-in was approved",
                                 "run the login again and approve it within the time shown", exit_code=EXIT_AUTH)
            sleep(interval)
            try:
                return self._endpoint_call("token_endpoint", dict(data), "the device code poll")
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
                    raise OAuthError("expired_token", "the code expired before the sign-in was approved",
                                     "run the login again and approve it within the time shown",
                                     exit_code=EXIT_AUTH) from None
                raise

    def refresh(self, refresh_token: str) -> Dict[str, Any]:
        data = self._with_audience({"grant_type": "refresh_token", "refresh_token": refresh_token})
        # Not after a 500: the server may have rotated the refresh token before failing, and sending
        # the old one again could revoke the whole grant. 502-504 come from proxies in front of it.
        return self._endpoint_call("token_endpoint", data, "the token refresh", retry_statuses=(502, 503, 504))

    def revoke(self, token: str, hint: str = "refresh_token") -> None:
        url = self.endpoint("revocation_endpoint")
        auth = self.session.client_auth(self.session.revocation_endpoint_auth_method)
        response = self._request("POST", url, "revocation", auth=auth,
                                 data={"token": token, "token_type_hint": hint})
        if response.status_code != 200:
            raise CaasError(http.describe_http_error(response.status_code, response.content,
                                                     "the OIDC provider", "the revocation"))

    # -- ID tokens -----------------------------------------------------------------------------

    def _keys(self, refetch: bool = False):
        from joserfc.jwk import KeySet

        if self.jwks is None or refetch:
            url = self.endpoint("jwks_uri")
            response = self._request("GET", url, "fetching its signing keys")
            if response.status_code != 200:
                raise CaasError(f"the provider's signing keys at {url} answered HTTP {response.status_code}")
            self.jwks = self._json(response, "fetching its signing keys")
        try:
            return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a malformed JWKS is the provider's fault, said plainly
            raise CaasError("the provider's signing keys (JWKS) cannot be read") from None

    def server_now(self) -> float:
        """The provider's clock at its last answer (its Date header), else ours."""
        return self.server_time if self.server_time is not None else self.runtime.clock()

    def verify_id_token(self, id_token: str) -> Dict[str, Any]:
        """Signature against the issuer's JWKS, then iss, aud, azp and the times, as kube-apiserver
        will check them. Times are judged on the provider's clock (see clock.py)."""
        from joserfc import jwt
        from joserfc.errors import InvalidKeyIdError, JoseError

        try:
            try:
                token = jwt.decode(id_token, self._keys(), algorithms=list(ID_TOKEN_ALGORITHMS))
            except InvalidKeyIdError:  # keys rotated since we cached them
                token = jwt.decode(id_token, self._keys(refetch=True), algorithms=list(ID_TOKEN_ALGORITHMS))
        except (JoseError, ValueError) as exc:
            raise AuthError(f"the ID token from {self.client.issuer} failed verification: {exc}") from None
        from kubectl_caas import clock

        claims = dict(token.claims)
        now = self.server_now()
        if claims.get("iss") != self.issuer:
            raise AuthError(f"the ID token's issuer {claims.get('iss')!r} is not {self.issuer!r}")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.client.client_id not in audiences:
            raise AuthError(f"the ID token is not meant for client {self.client.client_id} (aud {audience!r})")
        if "azp" in claims and claims["azp"] != self.client.client_id:
            raise AuthError(f"the ID token was issued to client {claims['azp']!r}, not {self.client.client_id}")
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


def _positive_number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if 0 < number < float("inf") else default


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


# ---------------------------------------------------------------------------------------------
# Cache entries


def _access_token_expiry(provider: Provider, access_token: str, expires_in: Any) -> float:
    """When the access token expires, on the provider's clock: its JWT `exp` (IAM's are JWTs, and
    the API server checks that claim), else `expires_in` (RFC 6749), else five minutes."""
    from kubectl_caas import clock

    now = provider.server_now()
    exp = clock.finite_number((_unverified_claims(access_token) or {}).get("exp"))
    if exp is not None and now < exp <= now + clock.MAX_LIFETIME:
        return exp
    lifetime = clock.finite_number(expires_in)
    if lifetime is not None and 0 < lifetime <= clock.MAX_LIFETIME:
        return now + lifetime
    return now + 300.0


def entry_from_tokens(provider: Provider, tokens: Mapping[str, Any],
                      previous: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A cache entry from a token answer, checking the ID token first.

    A refresh answer may omit the refresh token (not rotated) or the ID token; what it omits is
    kept from `previous`. (When the ID token is the bearer, `renew` counts its absence as a failed
    refresh before it gets here.) Expiries are stored in local time: when we sent the request plus
    what the provider's clock says was left (see clock.py).
    """
    from kubectl_caas import clock

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
        claims = provider.verify_id_token(id_token)
        entry_tokens["id"] = {"value": id_token, **local(float(claims["exp"]))}
    access_token = tokens.get("access_token")
    if isinstance(access_token, str) and access_token:
        if not access_token.isprintable() or len(access_token) > 16384:
            raise AuthError("the OIDC provider returned an access token that is not a usable bearer token")
        entry_tokens["access"] = {"value": access_token,
                                  **local(_access_token_expiry(provider, access_token, tokens.get("expires_in")))}
    offset = server_now - sent_at
    refresh_token = tokens.get("refresh_token") or previous.get("refresh_token")
    entry: Dict[str, Any] = {
        "version": 1,
        "plugin": "iam",
        "issuer": provider.issuer,
        "client_id": provider.client.client_id,
        "claims": {k: claims[k] for k in ("sub", "preferred_username", "name", "email", "groups", "wlcg.groups")
                   if k in claims},
        "tokens": entry_tokens,
        "clock_offset": offset,
    }
    # Discovery and keys are cached only to save round trips; oversized ones are fetched again.
    for key, document in (("metadata", provider.discover()), ("jwks", provider.jwks)):
        if document and len(json.dumps(document)) <= MAX_CACHED_DOCUMENT:
            entry[key] = document
    if refresh_token:
        entry["refresh_token"] = refresh_token
    if provider.client_secret:
        entry["client_secret"] = provider.client_secret
    return entry


def provider_for(client: Client, runtime: Runtime, client_secret: Optional[str] = None,
                 entry: Optional[Mapping[str, Any]] = None) -> Provider:
    """A Provider reusing the discovery document and keys cached in the entry, if any."""
    metadata = jwks = None
    if entry and normalise_issuer(str(entry.get("issuer", ""))) == normalise_issuer(client.issuer):
        metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else None
        jwks = entry.get("jwks") if isinstance(entry.get("jwks"), dict) else None
    return Provider(client, runtime, client_secret, metadata, jwks)


def device_login(provider: Provider, announce: Callable[[Mapping[str, Any]], None]) -> Dict[str, Any]:
    """The whole device flow: ask for a code, show it, poll, verify. Returns a cache entry."""
    device = provider.start_device_flow()
    announce(device)
    tokens = provider.poll_device_flow(device)
    if provider.client.bearer == "id" and not tokens.get("id_token"):
        raise AuthError("the provider returned no ID token", "check that the scope includes openid")
    return entry_from_tokens(provider, tokens)


def announce(device: Mapping[str, Any], runtime: Runtime) -> None:
    """Show the person where to go and what to type (on stderr, escaped)."""
    runtime.notice(f"To sign in, open {device['verification_uri']} and enter the code {device['user_code']}")
    complete = device.get("verification_uri_complete")
    if isinstance(complete, str) and complete:
        runtime.notice(f"or open {complete}")
    expires = device.get("expires_in")
    if expires:
        runtime.notice(f"(the code is valid for {int(min(_positive_number(expires, 600), 3600) // 60) or 1} min; "
                       "waiting...)")


def renew(values: Mapping[str, str], entry: Optional[Dict[str, Any]], runtime: Runtime,
          interactive: bool) -> Dict[str, Any]:
    """A fresh bearer for get-token: refresh, else (a person at a terminal) a new device flow."""
    entry = entry or {}
    client = Client.from_values(values)
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
            if exc.error not in ("invalid_grant", "invalid_token", "unauthorized_client"):
                raise
            why = f"the refresh token was refused ({exc.error})"
    if not interactive:
        raise LoginRequired(f"cannot renew the token from {client.issuer}: {why}", "run `kubectl iam login`")
    runtime.notice(f"kubectl-iam: {why}; sign in again")
    return device_login(provider, lambda device: announce(device, runtime))


def _server_time(response: requests.Response) -> Optional[float]:
    """The Date header (RFC 9110 §6.6.1) as a timestamp, or None when absent or unreadable."""
    try:
        moment = email.utils.parsedate_to_datetime(response.headers.get("Date") or "")
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return moment.timestamp()

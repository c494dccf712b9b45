"""A connection to one OpenID provider: the HTTP exchanges and what they return.

Provider holds everything that comes from talking to the issuer: its discovery document and
endpoints, the signing keys, the provider's clock (the Date header of its last answer), the form
POSTs to the token and device endpoints with client authentication (authlib), and the two grants
that are one request each, refresh and revocation (RFC 7009). Every exchange runs under a time
budget and is retried on a transient 5xx (http.Deadline, http.with_retries).

The device flow (device.py) and the checks on what the token endpoint answers (tokens.py) are
functions that take a Provider, so that this module stays the one place that speaks HTTP.
"""
from __future__ import annotations

import email.utils
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import requests
from authlib.integrations.requests_client import OAuth2Session

from kubectl_caas import http
from kubectl_caas.errors import CaasError, UsageError
from kubectl_caas.oidc.client import normalise_issuer

if TYPE_CHECKING:
    from kubectl_caas.oidc.client import Client
    from kubectl_caas.runtime import Runtime


class OAuthError(CaasError):
    """An error answer from the provider (RFC 6749 §5.2): `error` holds its code."""

    def __init__(self, error: str, message: str, hint: Optional[str] = None, exit_code: Optional[int] = None,
                 description: Optional[str] = None):
        super().__init__(message, hint, exit_code)
        self.error = error
        self.description = description  # the provider's error_description, if any


class _Transient(Exception):
    """A 5xx answer worth another try; carries the answer for when the tries run out."""

    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class Provider:
    """One issuer, as one client (with its secret, if it has one) sees it during one run.

    `metadata` and `jwks` may come from a cache entry (renewal.provider_for) to save round trips;
    whatever this Provider fetches replaces them, and entry_from_tokens puts them (when small
    enough) into the new cache entry.
    """

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

    def _request(self, method: str, url: str, action: str, retry_statuses: Sequence[int] = http.TRANSIENT_STATUS,
                 **kwargs: Any) -> requests.Response:
        """One HTTP exchange, retried (within the time budget) while the server answers a transient 5xx.

        The session's hook bounds the body (http.MAX_ANSWER_BYTES) and refuses redirects.
        """
        deadline = http.Deadline(f"the OIDC provider ({action})", url, http.total_timeout(self.runtime.environ))

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
                                     self.runtime)
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

    def post_form(self, endpoint: str, data: Dict[str, str], action: str,
                  retry_statuses: Sequence[int] = http.TRANSIENT_STATUS, client_id_in_form: bool = False) -> Dict[str, Any]:
        """POST a form to the token or device endpoint with client authentication (via authlib);
        the JSON answer, or OAuthError for an error answer (RFC 6749 §5.2).

        authlib's client auth adds client_id to the form for a public client, or sends HTTP Basic
        for a confidential one. `client_id_in_form`: a confidential client names itself in the
        form too, as INDIGO IAM's device endpoint requires (it ignores Basic there).
        """
        url = self.endpoint(endpoint)
        auth = self.session.client_auth(self.session.token_endpoint_auth_method)
        if client_id_in_form and self.client_secret:
            data = dict(data, client_id=self.client.client_id)
        response = self._request("POST", url, action, retry_statuses, data=data, auth=auth,
                                 headers={"Accept": "application/json"})
        if response.status_code == 404 and endpoint == "device_authorization_endpoint":
            # INDIGO IAM's answer (not JSON) for a client it does not know
            raise UsageError(f"client id {self.client.client_id} is not registered at {self.client.issuer}",
                             "check --client-id (or IAM_CLIENT_ID), or register a client as the operator guide says")
        if response.status_code >= 500:
            raise CaasError(http.describe_http_error(response.status_code, response.content,
                                                     "the OIDC provider", action))
        body = self._json(response, action)
        if "error" in body or response.status_code >= 400:
            error = str(body.get("error") or "invalid_request")
            description = body.get("error_description")
            text = f"the OIDC provider refused {action}: {error}" + (f" ({description})" if description else "")
            raise OAuthError(error, text + f" (HTTP {response.status_code})",
                             description=str(description)[:300] if description else None)
        return body

    def with_audience(self, data: Dict[str, str]) -> Dict[str, str]:
        """`data` with the configured audience added.

        INDIGO IAM honours `audience` only on the request that carries it: every device request,
        poll and refresh sends it.
        """
        if self.client.audience:
            data["audience"] = self.client.audience
        return data

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

    def signing_keys(self, refetch: bool = False) -> Any:
        """The provider's ID-token signing keys (a joserfc KeySet): the cached set, or its jwks_uri's
        when there is none or `refetch` asks for a fresh one (keys rotated since we cached them)."""
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

    # -- the one-request grants ----------------------------------------------------------------

    def refresh(self, refresh_token: str) -> Dict[str, Any]:
        """The token endpoint's answer to a refresh (RFC 6749 §6): new tokens, unchecked."""
        data = self.with_audience({"grant_type": "refresh_token", "refresh_token": refresh_token})
        # Not after a 500: the server may have rotated the refresh token before failing, and sending
        # the old one again could revoke the whole grant. 502-504 come from proxies in front of it.
        return self.post_form("token_endpoint", data, "the token refresh", retry_statuses=(502, 503, 504))

    def revoke(self, token: str, hint: str = "refresh_token") -> None:
        url = self.endpoint("revocation_endpoint")
        auth = self.session.client_auth(self.session.revocation_endpoint_auth_method)
        response = self._request("POST", url, "revocation", auth=auth,
                                 data={"token": token, "token_type_hint": hint})
        if response.status_code != 200:
            raise CaasError(http.describe_http_error(response.status_code, response.content,
                                                     "the OIDC provider", "the revocation"))


def _server_time(response: requests.Response) -> Optional[float]:
    """The Date header (RFC 9110 §6.6.1) as a timestamp, or None when absent or unreadable."""
    try:
        moment = email.utils.parsedate_to_datetime(response.headers.get("Date") or "")
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return moment.timestamp()

"""A client of one's own: dynamic client registration (RFC 7591) and its management (RFC 7592)
for `kubectl iam login --register`, as oidc-agent's oidc-gen does it.

The issuer's discovery document names its registration endpoint (INDIGO IAM:
<issuer>/iam/api/client-registration, open to anyone by default). We register a confidential
client (IAM gives it a secret) for the device flow, refresh and the authorization-code flow with
loopback redirect URIs, and keep what the answer gives in a registration record: one per issuer
and account label, a 0600 file in the token cache written under its lock through store.py, whose
secrets (the client secret and the registration access token) go to the keyring like every other
long-term secret when asked to. The client id, not a secret, goes into the kubeconfig's exec
args; the login's cache entry carries the client secret too, so get-token's refresh
authenticates. Later `--register` logins to the same issuer reuse the record after checking it
with an RFC 7592 read; `kubectl iam logout` deletes the client with the registration access token.

Everything the provider answers is untrusted: types and sizes are checked, text reaches the
terminal escaped (Runtime.notice, errors.report), and the registration access token is sent only
to a registration_client_uri on the issuer's own https origin. HTTP goes through Provider's
exchange (time budget, 1 MiB cap, no redirects, --debug with secrets redacted).
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests

from kubectl_caas import cache, http, store
from kubectl_caas.errors import AuthError, CaasError, UsageError
from kubectl_caas.oidc.client import Client, normalise_issuer
from kubectl_caas.oidc.device import DEVICE_GRANT
from kubectl_caas.oidc.provider import Provider

if TYPE_CHECKING:
    from kubectl_caas.runtime import Runtime

GRANT_TYPES = (DEVICE_GRANT, "refresh_token", "authorization_code")
# INDIGO IAM (Spring's DefaultRedirectResolver) matches a loopback redirect URI's port exactly, so
# the browser flow needs fixed ports registered; providers that follow RFC 8252 §7.3 take the
# port-less URI with any port.
LOOPBACK_PORTS = (38181, 38182, 38183)
REDIRECT_URIS = ("http://127.0.0.1/callback",) + tuple(f"http://127.0.0.1:{p}/callback" for p in LOOPBACK_PORTS)
AUTH_METHOD = "client_secret_basic"
# The client id of the Provider that discovers and registers before there is a client: never sent.
UNREGISTERED = "kubectl-iam-unregistered"
RECORD_KIND = "iam-registration"  # the records' cache file names start so
MAX_ID, MAX_SECRET, MAX_TEXT, MAX_ITEMS = 255, 16384, 4096, 64
REFUSED_STATUS = (400, 401, 403, 404)  # a read or delete of a client or token the provider no longer knows


class _Record:
    """What store.py needs of a registration record (it takes a plugin record for a token entry):
    which fields are long-term secrets, so that `--token-storage keyring` moves them there."""

    name = "iam"
    long_term_secrets = (("client_secret",), ("registration_access_token",))


RECORD: Any = _Record()


class Refused(CaasError):
    """The provider no longer accepts the stored registration: its token, or the client, is gone."""


class _Bearer(requests.auth.AuthBase):
    """The registration access token as a bearer (RFC 7592 §2), or no credential at all. Passing
    an auth also keeps requests from adding ~/.netrc credentials for the issuer's host."""

    def __init__(self, token: Optional[str]) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        return request


# ---------------------------------------------------------------------------------------------
# Where a registration lives


def record_path(issuer: str, account: Optional[str] = None) -> str:
    """The registration record of this issuer (and account label): a file of the token cache."""
    return cache.entry_path(RECORD_KIND, {"issuer": normalise_issuer(issuer), "account": account or None})


def provider_for_issuer(values: Mapping[str, Any], runtime: Runtime,
                        metadata: Optional[Dict[str, Any]] = None) -> Provider:
    """A Provider for discovery and registration, before there is a client id (its placeholder id is
    never sent: these requests carry no client authentication)."""
    fields = {f: values.get(f) for f in Client.__dataclass_fields__}
    return Provider(Client(**dict(fields, client_id=UNREGISTERED)), runtime, metadata=metadata)


def client_metadata(scope: str, hostname: Optional[str] = None) -> Dict[str, Any]:
    """What we ask the provider to register (only fields INDIGO IAM's registration DTO knows)."""
    scopes = scope.split()
    if "offline_access" not in scopes:
        scopes.append("offline_access")
    host = "".join(c for c in (hostname or socket.gethostname() or "") if c.isprintable())[:200]
    return {"client_name": f"kubectl-iam on {host or 'an unnamed host'}", "grant_types": list(GRANT_TYPES),
            "response_types": ["code"], "redirect_uris": list(REDIRECT_URIS), "scope": " ".join(scopes),
            "token_endpoint_auth_method": AUTH_METHOD}


# ---------------------------------------------------------------------------------------------
# What the provider answers


def _origin(url: str) -> Tuple[str, str, Optional[int]]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"https": 443, "http": 80}.get(parts.scheme)


def on_issuer_origin(url: Any, issuer: str) -> bool:
    """`url` is https (http only on loopback) on the issuer's own scheme, host and port, without
    user information: the only place the registration access token may go."""
    if not http.is_secure_url(url):
        return False
    parts = urlsplit(url)
    return parts.username is None and parts.password is None and _origin(url) == _origin(issuer)


def _word(value: Any, limit: int) -> bool:
    """A non-empty string of printable ASCII without spaces, at most `limit` long (ids, secrets, tokens)."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isascii() and value.isprintable() \
        and " " not in value


def _text(answer: Mapping[str, Any], key: str, where: str) -> Optional[str]:
    value = answer.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise CaasError(f"{where}: {key} is not a string of at most {MAX_TEXT} characters")
    return value


def _texts(answer: Mapping[str, Any], key: str, where: str) -> Optional[List[str]]:
    value = answer.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ITEMS or \
            not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value):
        raise CaasError(f"{where}: {key} is not a list of at most {MAX_ITEMS} strings")
    return value


def checked(answer: Mapping[str, Any], issuer: str, client_id: Optional[str] = None) -> Dict[str, Any]:
    """A registration record from a registration or read answer (RFC 7591 §3.2.1), every field checked.
    `issuer`: the discovery issuer; `client_id`: the client a read must be about."""
    cid = answer.get("client_id")
    if not _word(cid, MAX_ID):
        raise CaasError(f"the OIDC provider at {issuer} answered the client registration without a usable client_id")
    where = f"the OIDC provider's registration of client {cid} at {issuer} may exist, but its answer is unusable"
    if client_id is not None and cid != client_id:
        raise CaasError(f"the OIDC provider at {issuer} answered about client {cid}, not {client_id}")
    record: Dict[str, Any] = {"version": 1, "issuer": issuer, "client_id": cid}
    method = _text(answer, "token_endpoint_auth_method", where) or AUTH_METHOD
    secret = answer.get("client_secret")
    if secret is not None and not _word(secret, MAX_SECRET):
        raise CaasError(f"{where}: its client_secret is not a usable secret")
    if secret is None and method != "none" and client_id is None:
        raise CaasError(f"{where}: it registered the client for {method} but gave no client secret")
    token, uri = answer.get("registration_access_token"), answer.get("registration_client_uri")
    if token is not None and not _word(token, MAX_SECRET):
        raise CaasError(f"{where}: its registration_access_token is not a usable token")
    if uri is not None and not on_issuer_origin(uri, issuer):
        raise CaasError(f"{where}: its registration_client_uri {uri!r} is not an https:// URL on the issuer's origin, "
                        "and kubectl-iam sends the registration access token nowhere else",
                        "delete the client in the provider's web interface, or tell its administrators")
    expires = answer.get("client_secret_expires_at")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise CaasError(f"{where}: its client_secret_expires_at is not a number")
    for key, value in (("client_secret", secret), ("registration_access_token", token),
                       ("registration_client_uri", uri), ("client_secret_expires_at", expires),
                       ("token_endpoint_auth_method", method), ("client_name", _text(answer, "client_name", where)),
                       ("scope", _text(answer, "scope", where)), ("grant_types", _texts(answer, "grant_types", where)),
                       ("redirect_uris", _texts(answer, "redirect_uris", where))):
        if value is not None:
            record[key] = value
    return record


def _answer(provider: Provider, response: requests.Response, action: str) -> Dict[str, Any]:
    """The JSON object of a 2xx answer; else Refused (the client or token is unknown to the
    provider) or CaasError, with the provider's error and error_description, escaped when shown."""
    status = response.status_code
    if 200 <= status < 300:
        return provider._json(response, action)
    text = http.describe_http_error(status, response.content, "the OIDC provider", action)
    raise (Refused if status in REFUSED_STATUS else CaasError)(text)


# ---------------------------------------------------------------------------------------------
# The verbs


def register(provider: Provider, scope: str) -> Dict[str, Any]:
    """Register a client (RFC 7591 §3.1) for `scope` (offline_access added); the checked record."""
    issuer = provider.issuer  # discovery first: the record holds the issuer exactly as it writes it
    url = provider.discover().get("registration_endpoint")
    if url is None:
        raise UsageError(f"{provider.client.issuer} offers no dynamic client registration (its discovery document "
                         "names no registration_endpoint)", "ask its administrators for a client id and pass --client-id")
    if not http.is_secure_url(url):
        raise CaasError(f"the provider's registration_endpoint {url!r} is not an https:// URL", "check --issuer")
    # No retry after a 500: the client may exist by then, and a second request would register another.
    response = provider._request("POST", url, "the client registration", retry_statuses=(502, 503, 504),
                                 json=client_metadata(scope), auth=_Bearer(None), headers={"Accept": "application/json"})
    try:
        answer = _answer(provider, response, "the client registration")
    except Refused as exc:
        status = response.status_code
        closed = "the issuer lets only signed-in users or administrators register: ask for a client id, pass --client-id"
        hint = {400: "check --scope: the provider may not allow those scopes to new clients", 401: closed,
                403: closed}.get(status, "ask the issuer's administrators for a client id and pass --client-id")
        raise (AuthError if status in (401, 403) else UsageError)(exc.message, hint) from None
    return checked(answer, issuer)


def _manage(provider: Provider, record: Mapping[str, Any], method: str, action: str,
            body: Optional[Dict[str, Any]] = None) -> requests.Response:
    """One RFC 7592 request to the record's registration_client_uri, with its registration access token."""
    uri, token = record.get("registration_client_uri"), record.get("registration_access_token")
    if not isinstance(token, str) or not token or not on_issuer_origin(uri, str(record.get("issuer") or "")):
        raise Refused(f"the record of client {record.get('client_id')} holds no registration access token and URI on "
                      "the issuer's origin to use")
    extra: Dict[str, Any] = {} if body is None else {"json": body}
    return provider._request(method, str(uri), action, auth=_Bearer(token), headers={"Accept": "application/json"},
                             **extra)


def read(provider: Provider, record: Mapping[str, Any]) -> Dict[str, Any]:
    """The client as the provider has it now (RFC 7592 §2.1), merged into the record; Refused when
    the provider no longer knows the client or its token."""
    response = _manage(provider, record, "GET", "reading the client registration")
    answer = _answer(provider, response, "reading the client registration")
    return dict(record, **{k: v for k, v in checked(answer, str(record["issuer"]), record["client_id"]).items()
                           if k != "issuer"})


def update(provider: Provider, record: Mapping[str, Any], scope: str) -> Dict[str, Any]:
    """Widen the client's scopes (RFC 7592 §2.2: the whole metadata again, with the client id)."""
    body = dict(client_metadata(scope), client_id=record["client_id"])
    response = _manage(provider, record, "PUT", "updating the client registration", body)
    try:
        answer = _answer(provider, response, "updating the client registration")
    except Refused as exc:  # the client is still there: registering another would leave it behind
        raise UsageError(f"could not add scopes to client {record['client_id']}: {exc.message}",
                         "log in with a --scope the client has, or `kubectl iam logout` to delete it first") from None
    return dict(record, **{k: v for k, v in checked(answer, str(record["issuer"]), record["client_id"]).items()
                           if k != "issuer"})


def delete(provider: Provider, record: Mapping[str, Any]) -> None:
    """Delete the client at the provider (RFC 7592 §2.3); Refused or CaasError when it does not."""
    response = _manage(provider, record, "DELETE", "deleting the client registration")
    if not 200 <= response.status_code < 300:
        _answer(provider, response, "deleting the client registration")


# ---------------------------------------------------------------------------------------------
# For the CLI: a registration to log in with, and its end at logout


def _save(path: str, record: Dict[str, Any], storage: Optional[str], provider: Provider, new: bool) -> None:
    try:
        store.save(RECORD, path, record, storage, provider.runtime)
    except CaasError as exc:
        if not new:
            raise
        try:  # a client we cannot remember would be left at the provider for good
            delete(provider, record)
        except CaasError:
            raise CaasError(f"{exc.message}; client {record['client_id']} is registered at {record['issuer']} but "
                            "could not be recorded", "free some space, then delete the client in the provider's web "
                            "interface") from None
        raise


def ensure(provider: Provider, storage: Optional[str]) -> Dict[str, Any]:
    """A registration for `provider`'s issuer and account, able to ask for the login's scopes: the
    recorded one when the provider still knows it (widened if scopes are missing), else a new one.
    The record is read, checked and written under its lock."""
    client, runtime = provider.client, provider.runtime
    path = record_path(client.issuer, client.account)
    wanted = client.scopes.split()
    with store.locked(path):
        record = store.load(RECORD, path, cache.read_entry(path))
        if record and _word(record.get("client_id"), MAX_ID) and \
                normalise_issuer(str(record.get("issuer"))) == client.issuer:
            try:
                if record.get("registration_client_uri"):
                    record = read(provider, record)
                known = str(record.get("scope") or "").split()
                missing = [s for s in wanted if s not in known]
                if missing and record.get("registration_client_uri"):
                    record = update(provider, record, " ".join(known + missing))
                    runtime.notice(f"kubectl-iam: added the scopes '{' '.join(missing)}' to client "
                                   f"{record['client_id']} at {client.issuer}")
                _save(path, record, storage, provider, new=False)
                runtime.notice(f"kubectl-iam: using client {record['client_id']}, registered at {client.issuer} by "
                               "an earlier `login --register`")
                return _covering(record, wanted)
            except Refused as exc:
                runtime.notice(f"kubectl-iam: the provider no longer accepts client {record['client_id']} registered "
                               f"earlier ({exc.message}); registering a new one (if the old one is still there, "
                               "delete it in the provider's web interface)")
        record = register(provider, client.scopes)
        _save(path, record, storage, provider, new=True)
        runtime.notice(f"kubectl-iam: registered client {record['client_id']} ('{record.get('client_name', '')}') at "
                       f"{client.issuer}; later `login --register` reuses it, `kubectl iam logout` deletes it")
    return _covering(record, wanted)


def _covering(record: Dict[str, Any], wanted: List[str]) -> Dict[str, Any]:
    """The record, when the provider registered every scope the login asks for (IAM may drop some)."""
    missing = [s for s in wanted if "scope" in record and s not in str(record["scope"]).split()]
    if missing:
        raise UsageError(f"{record['issuer']} registered client {record['client_id']} without the scopes "
                         f"'{' '.join(missing)}'", "log in with a --scope the provider allows (the client is kept)")
    return record


def end(path: str, values: Mapping[str, Any], runtime: Runtime, name: str, users: Any) -> Optional[str]:
    """At logout of context `name`: delete the client recorded at `path` (its issuer and account)
    unless `users(client_id)` names signed-in contexts still using it. None when done or nothing is
    to be done, else one line saying why it could not be deleted (the record is kept while a retry
    may work)."""
    with store.locked(path):
        state, record, reason = cache.inspect_entry(path)
        if state == cache.MISSING:
            return None
        if state != cache.OK or not record or not _word(record.get("client_id"), MAX_ID):
            store.forget(RECORD, path)
            runtime.notice(f"{name}: removed a client registration record that could not be read "
                           f"({reason or 'no client id'}); delete the client in the provider's web interface")
            return None
        record = store.load(RECORD, path, record) or record
        cid, issuer = record["client_id"], normalise_issuer(str(record.get("issuer")))
        still = users(cid)
        if still:
            runtime.notice(f"{name}: kept client {cid} registered at {issuer}: {', '.join(still)} still use it")
            return None
        if not record.get("registration_access_token") or not record.get("registration_client_uri"):
            store.forget(RECORD, path)
            return (f"cannot delete client {cid} at {issuer}: the provider gave no registration access token; delete "
                    "it in the provider's web interface")
        try:
            delete(provider_for_issuer(dict(values, issuer=issuer), runtime), record)
        except Refused as exc:
            store.forget(RECORD, path)  # its token is refused: keeping it would not help a retry
            return (f"could not delete client {cid} at {issuer}: {exc.message}; it may be gone already, else delete "
                    "it in the provider's web interface")
        except CaasError as exc:
            return (f"could not delete client {cid} at {issuer}: {exc.message}; its registration is kept: run "
                    f"`kubectl iam logout --context {name}` again to retry")
        store.forget(RECORD, path)
    runtime.notice(f"{name}: deleted client {cid} at {issuer} (registered by `kubectl iam login --register`)")
    return None

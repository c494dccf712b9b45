"""SSO into Keystone without an OpenStack password: an OpenID sign-in (kubectl-iam's code: the
browser on a desktop, else a device code) gives an access token, which Keystone's federation
endpoint (`{auth_url}/OS-FEDERATION/identity_providers/{idp}/protocols/{protocol}/auth`, guarded
by the web server's OAuth 2 module) exchanges for an unscoped federated token; that is then
scoped to the project as any token is.

What keeps such a login alive, in get-token's order: the application credential login created
(when Keystone accepts one: CloudVeneto's published `[auth] methods` lack `application_credential`,
so it is tried once at login and deleted if refused), else the IAM refresh token (a new access
token, a new federated token), else, at a terminal, a new sign-in. The IAM side of the cache entry
lives in a cache file of its own, the grant (`grant_path`: one per Keystone, identity provider,
issuer and client, shared by the login's project contexts, since IAM replaces the refresh token at
each use); a project's entry says under `sso` who signed in. The refresh token is one of the
plugin's long-term secrets (disk or keyring, as the login chose).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1.identity import v3

from kubectl_caas.errors import AuthError, CaasError, LoginRequired, UsageError

if TYPE_CHECKING:
    from kubectl_caas.keystone.identity import Identity
    from kubectl_caas.keystone.logins import Keystone
    from kubectl_caas.oidc import Provider
    from kubectl_caas.runtime import Runtime

# The identity's fields that belong to SSO alone (see plugins.OPENSTACK_OPTIONS).
SSO_FIELDS = ("identity_provider", "protocol", "issuer", "client_id", "audience", "issuer_cacert")
DEFAULT_PROTOCOL = "openid"


def without_sso(values: Dict[str, Any]) -> Dict[str, Any]:
    return dict(values, **{f: None for f in SSO_FIELDS})


def check_sso_identity(identity: Identity) -> None:
    missing = [flag for flag, value in (("--identity-provider", identity.identity_provider),
                                        ("--issuer", identity.issuer), ("--client-id", identity.client_id))
               if not value]
    if missing:
        raise UsageError(f"an SSO login needs {', '.join(missing)}",
                         "pass them (or set OS_IDENTITY_PROVIDER, IAM_ISSUER, IAM_CLIENT_ID); the cloudveneto "
                         "profile gives the identity provider and issuer")


def provider_for(identity: Identity, runtime: Runtime, sso: Optional[Dict[str, Any]] = None) -> Provider:
    """The OpenID side as kubectl-iam sees it: the issuer, the client, an access token as bearer."""
    from kubectl_caas.oidc import Client, renewal

    client = Client(**{**{f: None for f in Client.__dataclass_fields__},
                       "issuer": identity.issuer, "client_id": identity.client_id, "audience": identity.audience,
                       "token": "access", "cacert": identity.issuer_cacert})
    cached = {k: v for k, v in (sso or {}).items() if k in ("issuer", "metadata", "jwks")}
    return renewal.provider_for(client, runtime, runtime.getenv("IAM_CLIENT_SECRET"), cached)


def sign_in(provider: Provider, runtime: Runtime, browser: Optional[bool] = None, qr: bool = True) -> Dict[str, Any]:
    """A person signs in at the issuer (browser or device code, as kubectl-iam chooses); the
    OIDC cache entry (its access token is what Keystone takes)."""
    from kubectl_caas import oidc
    from kubectl_caas.browser import can_open

    if browser or (browser is None and can_open(runtime.environ) and runtime.isatty()):
        return oidc.browser_login(provider, runtime)

    def announce(device) -> None:
        oidc.announce(device, runtime, qr=qr)
        page = device.get("verification_uri_complete") or device["verification_uri"]
        if browser is None and runtime.open_browser(str(page)):
            runtime.notice("(opened it in your browser)")
    return oidc.device_login(provider, announce)


GRANT_FIELDS = ("auth_url", "identity_provider", "protocol", "issuer", "client_id", "audience")


def grant_path(identity: Identity) -> str:
    """The cache file of the IAM grant an SSO login holds: one per Keystone, identity provider,
    issuer and client, shared by that login's project contexts. IAM replaces the refresh token at
    each use, so it must have one home (and one lock), not a copy per project."""
    from kubectl_caas.plugins import OPENSTACK

    return OPENSTACK.entry_path({f: getattr(identity, f) for f in GRANT_FIELDS})


def load_grant(identity: Identity) -> Dict[str, Any]:
    """The grant's record (refresh token filled in from the keyring), {} when there is none."""
    from kubectl_caas import cache, store
    from kubectl_caas.plugins import OPENSTACK

    path = grant_path(identity)
    return dict((store.load(OPENSTACK, path, cache.read_entry(path)) or {}).get("sso") or {})


def save_grant(identity: Identity, record: Dict[str, Any], runtime: Runtime, renewed: bool = False) -> Dict[str, Any]:
    """Store the grant's record (its lock held by the caller when `renewed`); returns the record it
    replaced."""
    from kubectl_caas import store
    from kubectl_caas.plugins import OPENSTACK

    path, entry = grant_path(identity), {"version": 1, "plugin": "openstack", "sso": record}
    if renewed:
        problem = store.save_renewed(OPENSTACK, path, entry, identity.token_storage, runtime)
        if problem:
            runtime.notice(f"kubectl-openstack: warning: {problem}")
        return {}
    return dict(store.replace(OPENSTACK, path, entry, identity.token_storage, runtime).get("sso") or {})


def forget_grant(identity: Identity) -> None:
    from kubectl_caas import store
    from kubectl_caas.plugins import OPENSTACK

    path = grant_path(identity)
    with store.locked(path):
        store.forget(OPENSTACK, path)


def sso_record(oidc_entry: Dict[str, Any]) -> Dict[str, Any]:
    """What the Keystone entry keeps of the OpenID sign-in: the refresh token, and the discovery
    document and keys to save round trips (never the access token: it is spent)."""
    record = {k: oidc_entry[k] for k in ("issuer", "client_id", "metadata", "jwks", "refresh_token")
              if oidc_entry.get(k)}
    claims = oidc_entry.get("claims") or {}
    if claims.get("preferred_username") or claims.get("sub"):
        record["who"] = claims.get("preferred_username") or claims.get("sub")
    return record


def access_token_of(oidc_entry: Dict[str, Any]) -> str:
    token = ((oidc_entry.get("tokens") or {}).get("access") or {}).get("value")
    if not token:
        raise AuthError("the OpenID provider gave no access token for Keystone")
    return token


def unscoped_login(keystone: Keystone, access_token: str):
    """The federation endpoint's answer to the access token: an unscoped federated token."""
    ident = keystone.identity
    auth = v3.OidcAccessToken(ident.auth_url, ident.identity_provider, ident.protocol or DEFAULT_PROTOCOL,
                              access_token=access_token, include_catalog=False)
    action = f"the SSO login through identity provider {ident.identity_provider}"
    try:
        return keystone._get_access(auth, action, expect_identity=False, scoped=False)
    except ks_exc.NotFound:
        raise AuthError(f"Keystone at {ident.auth_url} knows no identity provider {ident.identity_provider!r} with "
                        f"protocol {ident.protocol or DEFAULT_PROTOCOL!r} (HTTP 404), or federation is off there",
                        "check --identity-provider and --protocol with your cloud's support") from None
    except ks_exc.Unauthorized as exc:
        said = _keystone_message(exc)
        if said:  # Keystone itself refused (the web server let the request through)
            raise AuthError(f"Keystone at {ident.auth_url} refused the SSO login through {ident.identity_provider} "
                            f"with protocol {ident.protocol or DEFAULT_PROTOCOL!r}: {said}",
                            "federation may be off there, or the protocol wrong: check --protocol with your cloud's "
                            "support") from None
        audience = f" with audience {ident.audience!r}" if ident.audience else " without an audience"
        raise AuthError(f"Keystone's web server refused the access token from {ident.issuer} (HTTP "
                        f"{exc.http_status}): it checks the token's issuer and audience; this one was asked for"
                        f"{audience}", "pass the audience your cloud expects with --audience (ask its "
                        "support)") from None
    except ks_exc.ClientException as exc:
        raise keystone._translate(exc, action) from None


def _keystone_message(exc: Exception) -> Optional[str]:
    """Keystone's own error message (a JSON body), or None for another server's page."""
    from kubectl_caas import http

    response = getattr(exc, "response", None)
    try:
        body = http.parse_json(getattr(response, "content", b"") or b"")
    except ValueError:
        return None
    message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return str(message)[:300] if message else None


def scoped_login(keystone: Keystone, unscoped, who: str):
    """The unscoped federated token scoped to the identity's project; one line when the person's
    claims map to no project, or not to this one."""
    ident = keystone.identity
    projects: List[Dict[str, Any]] = keystone.projects(unscoped.auth_token)
    via = f"signed in as {who} via {ident.identity_provider}"
    if not projects:
        raise AuthError(f"{via}, but Keystone gives {who} no project",
                        "ask your cloud's support to add you to a project")
    wanted = [p for p in projects if (ident.project_id and p.get("id") == ident.project_id)
              or (not ident.project_id and str(p.get("name", "")).casefold() == (ident.project or "").casefold())]
    if not wanted:
        names = ", ".join(sorted(str(p.get("name")) for p in projects))
        raise AuthError(f"{via}, but project {ident.project_label} is not among {who}'s projects ({names})",
                        "pass one of them with --project")
    return keystone.token_login(unscoped.auth_token, wanted[0]["id"])


def federated_login(keystone: Keystone, oidc_entry: Dict[str, Any]):
    """(unscoped, scoped) Keystone answers for an OpenID sign-in."""
    who = (oidc_entry.get("claims") or {}).get("preferred_username") or \
        (oidc_entry.get("claims") or {}).get("sub") or "you"
    unscoped = unscoped_login(keystone, access_token_of(oidc_entry))
    who = unscoped.username or who
    return unscoped, scoped_login(keystone, unscoped, who)


def try_credential(keystone: Keystone, access, lifetime: float) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """An application credential that keeps the login alive, tried once: Keystones whose auth
    methods lack application_credential create it but refuse it at use (then it is deleted)."""
    if not lifetime:
        return None, None
    try:
        credential = keystone.create_application_credential(access, lifetime)
    except CaasError as exc:
        return None, f"no application credential could be created ({exc}); kubectl renews with your IAM sign-in"
    if credential is None:
        return None, "Keystone does not let you create application credentials; kubectl renews with your IAM sign-in"
    credential["created_by_login"] = True
    try:
        keystone.application_credential_login(credential["id"], credential["secret"], expect_identity=False)
    except AuthError:
        keystone.delete_application_credential(access.auth_token, access.user_id, credential["id"])
        return None, ("Keystone refuses application credentials here (its auth methods lack them), so the one made "
                      "for you is deleted; kubectl renews with your IAM sign-in (its refresh token)")
    return credential, None


def identity_after(identity: Identity, access) -> Identity:
    """The identity get-token renews: the project as Keystone names it."""
    return replace(identity, project=access.project_name, project_id=None,
                   project_domain=None, project_domain_id=access.project_domain_id)


def renew(identity: Identity, entry: Dict[str, Any], runtime: Runtime, interactive: bool):
    """get-token's SSO renewal once the remembered credential is gone or refused: the IAM refresh
    token (under the grant's lock: IAM replaces it at each use), else (a person at a terminal) a
    new sign-in. Returns (scoped access, what the project's entry keeps of the sign-in)."""
    from kubectl_caas import store
    from kubectl_caas.keystone.logins import Keystone

    with store.locked(grant_path(identity)):
        oidc_entry = _fresh_sign_in(identity, load_grant(identity), runtime, interactive)
        save_grant(identity, sso_record(oidc_entry), runtime, renewed=True)
    keystone = Keystone(identity, runtime, interactive=interactive)
    _, access = federated_login(keystone, oidc_entry)
    return access, project_record(oidc_entry)


def project_record(oidc_entry: Dict[str, Any]) -> Dict[str, Any]:
    """What a project's cache entry says of its sign-in: who, and that the grant holds the rest."""
    record = {k: v for k, v in sso_record(oidc_entry).items() if k in ("issuer", "who")}
    return dict(record, grant=True)


def _fresh_sign_in(identity: Identity, grant: Dict[str, Any], runtime: Runtime, interactive: bool) -> Dict[str, Any]:
    from kubectl_caas.oidc import OAuthError, entry_from_tokens
    from kubectl_caas.oidc.renewal import REFRESH_REFUSED

    provider = provider_for(identity, runtime, grant)
    why = "there is no IAM refresh token"
    if grant.get("refresh_token"):
        try:
            return entry_from_tokens(provider, provider.refresh(grant["refresh_token"]),
                                     {"refresh_token": grant["refresh_token"]})
        except OAuthError as exc:
            if exc.error not in REFRESH_REFUSED:
                raise
            why = f"the IAM refresh token was refused ({exc.error})"
    if not interactive:
        raise LoginRequired(f"cannot renew the SSO login to {identity.auth_url}: {why}",
                            "run `kubectl openstack login --sso`")
    runtime.notice(f"kubectl-openstack: {why}; sign in again")
    return sign_in(provider, runtime)

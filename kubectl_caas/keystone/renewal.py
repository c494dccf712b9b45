"""get-token's renewal for Keystone (`renew`, which the plugin record names as the backend's entry
point): a fresh token from the first source that works, in the order docs/reference.md promises.

The sources, each tried only when the ones before are absent: the application credential
remembered in the cache entry (also passed over when Keystone refuses it: it expires, or is deleted
in the dashboard); OS_APPLICATION_CREDENTIAL_*; the clouds.yaml entry login used; OS_PASSWORD or
that entry's password; a prompt when a person is at the terminal. Then LoginRequired (exit 5). A
refusal of any source the user chose ends the renewal with its own error.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from kubectl_caas.errors import AuthError, CaasError, LoginRequired
from kubectl_caas.keystone.credentials import DEFAULT_REMEMBER_SECONDS, entry_from_access, remember_login
from kubectl_caas.keystone.identity import Identity
from kubectl_caas.keystone.logins import Keystone
from kubectl_caas.runtime import Runtime


def _check_project(identity: Identity, access) -> None:
    """A credential from the environment must be for the project this context is about: the same
    id, or the same name (Keystone compares names without case) in the same domain."""
    if identity.project_id:
        same = access.project_id == identity.project_id
    else:
        same = str(access.project_name or "").casefold() == str(identity.project or "").casefold() and \
            (not identity.project_domain_id or access.project_domain_id == identity.project_domain_id)
    if not same:
        where = "" if access.project_domain_id == identity.project_domain_id else \
            f" in domain {access.project_domain_id}"
        raise AuthError(f"the application credential is for project {access.project_name}{where}, "
                        f"not {identity.project_label}",
                        "unset OS_APPLICATION_CREDENTIAL_ID/_SECRET or use a credential for this project")


def _expired(credential: Mapping[str, Any], now: float) -> bool:
    """Has the credential's recorded expiry passed? None means it never expires; an expiry that
    cannot be read (a damaged entry) is left for Keystone to judge, rather than crash get-token."""
    try:
        expires_at = float(credential.get("expires_at") or 0)
    except (TypeError, ValueError, OverflowError):
        return False
    return bool(expires_at) and expires_at <= now


def renew(values: Mapping[str, str], entry: Optional[Dict[str, Any]], runtime: Runtime,
          interactive: bool) -> Dict[str, Any]:
    """A fresh token for get-token, from the first source that works: the remembered application
    credential; OS_APPLICATION_CREDENTIAL_ID/_SECRET; the clouds.yaml entry login used; OS_PASSWORD
    or that entry's password; a prompt when a person is at the terminal (which also remembers the
    login again). Otherwise LoginRequired."""
    identity = Identity.from_values(values)
    keystone = Keystone(identity, runtime, interactive=interactive)
    entry = dict(entry or {})
    remembered = entry.get("application_credential")
    if isinstance(remembered, dict) and remembered.get("id") and remembered.get("secret"):
        if not _expired(remembered, runtime.clock()):
            try:
                access = keystone.application_credential_login(remembered["id"], remembered["secret"])
                renewed = entry_from_access(identity, access, entry.get("method") or "application_credential",
                                            remembered, entry.get("remember_seconds"))
                if entry.get("sso"):
                    renewed["sso"] = entry["sso"]  # the IAM sign-in stays the fallback (and logout revokes it)
                return renewed
            except AuthError:
                pass  # expired or deleted on the server: fall through to the next source
        runtime.notice("kubectl-openstack: the remembered application credential no longer works")
        entry.pop("application_credential", None)

    if identity.identity_provider:  # an SSO login: the IAM sign-in renews it (keystone/federation.py)
        from kubectl_caas.keystone.federation import renew as renew_sso

        access, sso = renew_sso(identity, entry, runtime, interactive)
        renewed = entry_from_access(identity, access, "sso", None, entry.get("remember_seconds"))
        renewed["sso"] = sso
        return renewed

    cloud = _cloud_secrets(identity, runtime)
    env = runtime.environ
    for credential_id, name, secret in (
            (env.get("OS_APPLICATION_CREDENTIAL_ID"), env.get("OS_APPLICATION_CREDENTIAL_NAME"),
             env.get("OS_APPLICATION_CREDENTIAL_SECRET")),
            (cloud.get("application_credential_id"), cloud.get("application_credential_name"),
             cloud.get("application_credential_secret"))):
        if not secret or not (credential_id or name):
            continue
        if credential_id and identity.application_credential_id not in (None, credential_id):
            continue  # a credential for another context
        access = keystone.application_credential_login(credential_id, secret, expect_identity=False, name=name)
        if identity.application_credential_id not in (None, access.application_credential_id):
            continue  # by name, it turned out to be another one
        _check_project(identity, access)
        return entry_from_access(identity, access, "application_credential")
    if identity.application_credential_id:
        raise LoginRequired(f"no secret for application credential {identity.application_credential_id}",
                            "set OS_APPLICATION_CREDENTIAL_SECRET, or run `kubectl openstack login`")

    password = runtime.getenv("OS_PASSWORD") or cloud.get("password")
    prompted = False
    if not password and interactive:
        password = prompt_password(identity, runtime)
        prompted = True
    if not password:
        raise LoginRequired(f"the Keystone token for {identity.who}, project {identity.project_label} has "
                            "expired and there is nothing to renew it with",
                            "run `kubectl openstack login`")
    access = keystone.password_login(password)
    credential = None
    remember = entry.get("remember_seconds", DEFAULT_REMEMBER_SECONDS)
    if prompted and remember:
        # A person just typed the password: remember the login again, as `login` does; kubectl gets
        # its token even if Keystone fails to make the credential now.
        try:
            credential, notice = remember_login(keystone, access, float(remember))
        except CaasError as exc:
            credential, notice = None, f"could not remember this login ({exc}); you will be asked again next time"
        if notice:
            runtime.notice(f"kubectl-openstack: {notice}")
    return entry_from_access(identity, access, "password", credential, remember)


def _cloud_secrets(identity: Identity, runtime: Runtime) -> Dict[str, Any]:
    """The secrets of the clouds.yaml entry login used (`--os-cloud`), if it still holds any."""
    if not identity.os_cloud:
        return {}
    from kubectl_caas.clouds import load_cloud

    try:
        cloud = load_cloud(identity.os_cloud)
    except CaasError as exc:
        runtime.notice(f"kubectl-openstack: ignoring clouds.yaml: {exc}")
        return {}
    # The entry's own auth type says which of its secrets logs in (openstacksdk makes it `password`
    # when the file names none), as the openstack command reads it.
    unused = ("password",) if cloud.get("auth_type") == "v3applicationcredential" else (
        "application_credential_id", "application_credential_name", "application_credential_secret")
    return {k: v for k, v in cloud.items() if k not in unused}


def prompt_password(identity: Identity, runtime: Runtime) -> str:
    return runtime.ask_secret(f"Keystone password for {identity.who} ({identity.auth_url}): ") or ""

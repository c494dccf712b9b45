"""`kubectl openstack login`, the work behind the command: which settings, which credential,
which contexts, and the cache entries and kubeconfig stanzas that come out of it."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional

from kubectl_caas import contexts, kubeconfig, store
from kubectl_caas.cli.common import LoginTarget, describe_expiry, read_secret_stdin, shell_quote
from kubectl_caas.errors import AuthError, CaasError, UsageError
from kubectl_caas.plugins import OPENSTACK as PLUGIN
from kubectl_caas.runtime import Runtime
from kubectl_caas.settings import Settings

AUTH_TYPES = {"password": "password", "v3password": "password",
              "v3applicationcredential": "application_credential"}


def load_settings(flags: Dict[str, Any], profile: Optional[str], rt: Runtime) -> Settings:
    """flag > OS_* variable > clouds.yaml entry > config file > site profile, as the openstack
    command orders them (its --os-* options default to the OS_* variables and beat the file)."""
    from kubectl_caas import clouds

    settings = Settings.load(PLUGIN, flags, rt.environ, profile)
    # --os-cloud, else the cloud the openstack command would pick (OS_CLOUD; the only cloud in
    # clouds.yaml when no OS_* variable describes one).
    chosen = settings.get("os_cloud")  # --os-cloud, OS_CLOUD, or `os_cloud:` in our config file
    name = chosen or clouds.default_cloud()
    if name:
        if not chosen:
            rt.notice(f"kubectl-openstack: using cloud {name!r}, the only one in clouds.yaml, as the openstack "
                      "command would")
        settings.cloud = clouds.load_cloud(name)
        settings.cloud["os_cloud"] = name
        if settings.cloud.get("verify") is False:
            raise UsageError(f"cloud {name!r} in clouds.yaml turns TLS verification off (verify: false or "
                             "insecure: true), which would hand your password to anyone between you and Keystone",
                             "remove that setting and give Keystone's CA bundle as `cacert:` or --cacert")
    return settings


def unchosen_cloud_hint(settings: Settings, default: str) -> str:
    if settings.cloud:
        return default
    from kubectl_caas.clouds import hint_for_unchosen_cloud

    return hint_for_unchosen_cloud(default) or default


def auth_type(settings: Settings) -> Optional[str]:
    """'password', 'application_credential', or None when nothing says which (the caller then
    decides by what it was given)."""
    asked = settings.get("auth_type")
    if not asked:
        return None
    if asked not in AUTH_TYPES:
        if settings.flags.get("auth_type"):
            where = "--auth-type"
        elif settings.environ.get("OS_AUTH_TYPE"):
            where = "OS_AUTH_TYPE"
        elif settings.cloud.get("auth_type") == asked:
            where = f"cloud {settings.cloud.get('os_cloud')!r} in clouds.yaml"
        else:
            where = "the config file or site profile"
        raise UsageError(f"{where} asks for auth type {asked!r}, which kubectl-openstack cannot log in with",
                         "use password (v3password) or v3applicationcredential")
    return AUTH_TYPES[asked]


def uses_application_credential(settings: Settings, password_stdin: bool) -> bool:
    """Does this login use an application credential rather than a password?

    A credential named on the command line always does. Otherwise the auth type decides (OS_AUTH_TYPE, or the
    clouds.yaml entry's); without one, an application credential from the environment gives way to
    an explicit user or password on the command line.
    """
    flags = settings.flags
    named = settings.get("application_credential_id") or settings.get("application_credential_name")
    kind = auth_type(settings)
    use = bool(flags.get("application_credential_id") or flags.get("application_credential_name")) or \
        kind == "application_credential" or \
        kind is None and bool(named) and not (flags.get("password") or password_stdin or flags.get("user")
                                              or flags.get("user_id"))
    if use and not named:
        raise UsageError("the auth type is v3applicationcredential but no application credential is named",
                         "set OS_APPLICATION_CREDENTIAL_ID (or _NAME with OS_USERNAME), or pass "
                         "--application-credential-id")
    return use


def identity_from(settings: Settings, sso: bool = False):
    from kubectl_caas.keystone import Identity
    from kubectl_caas.keystone.federation import without_sso

    if not settings.get("auth_url"):
        raise UsageError("no Keystone URL", unchosen_cloud_hint(settings, "pass --auth-url or set OS_AUTH_URL"))
    # The cloud recorded for renewals is the one this login read, whoever named it.
    values = dict({f: settings.get(f) for f in Identity.__dataclass_fields__}, os_cloud=settings.cloud.get("os_cloud"))
    if sso:  # the person is whoever signs in at the issuer: no user, password or credential of ours
        values.update(user=None, user_id=None, application_credential_id=None)
        return Identity(**values)
    # SSO settings (IAM_* variables, the site profile's identity provider) never touch other logins.
    return Identity(**without_sso(values))


def sso_unscoped(keystone, rt: Runtime, no_browser: bool):
    """A sign-in at the issuer for one look at Keystone (`projects --sso`): the unscoped federated
    token; the IAM grant is revoked at once, as nothing keeps it."""
    from kubectl_caas.keystone import federation

    federation.check_sso_identity(keystone.identity)
    provider = federation.provider_for(keystone.identity, rt)
    oidc_entry = federation.sign_in(provider, rt, browser=False if no_browser else None)
    try:
        return federation.unscoped_login(keystone, federation.access_token_of(oidc_entry))
    finally:
        if oidc_entry.get("refresh_token"):
            try:
                provider.revoke(oidc_entry["refresh_token"])
            except CaasError:
                pass


def sso_login(settings: Settings, identity, target: LoginTarget, remember: float, all_projects: bool,
              no_browser: bool) -> List[str]:
    """`login --sso`: sign in at the issuer, exchange the access token at Keystone's federation
    endpoint, scope to the project (or each of the person's projects) and write the contexts
    (keystone/federation.py). The IAM grant is stored once, shared by the contexts."""
    from kubectl_caas.keystone import Keystone, federation

    rt = target.runtime
    federation.check_sso_identity(identity)
    if all_projects and (target.context or target.namespace):
        raise UsageError("--all-projects makes one context per project: it cannot take --context or --namespace")
    if not all_projects and not (identity.project or identity.project_id):
        raise UsageError("no project", "pass --project, or --all-projects (`kubectl openstack projects --sso` "
                         "lists yours)")
    same_user = contexts.same_person(PLUGIN, identity.values())
    kubeconfig.check_before_login(None if all_projects else target.context or (identity.project or "").lower(),
                                  target.server, same_user, target.kubeconfig_path, target.force)
    provider = federation.provider_for(identity, rt)
    oidc_entry = federation.sign_in(provider, rt, browser=False if no_browser else None)
    keystone = Keystone(identity, rt)
    unscoped = federation.unscoped_login(keystone, federation.access_token_of(oidc_entry))
    who = unscoped.username or "you"
    try:
        if all_projects:
            projects = keystone.projects(unscoped.auth_token)
            if not projects:
                raise AuthError(f"signed in as {who} via {identity.identity_provider}, but Keystone gives {who} no "
                                "project", "ask your cloud's support to add you to a project")
            scoped = [keystone.token_login(unscoped.auth_token, p["id"])
                      for p in sorted(projects, key=lambda p: p["name"].lower())]
        else:
            scoped = [federation.scoped_login(keystone, unscoped, who)]
    finally:
        keystone.revoke_quietly(unscoped.auth_token)
    stored = replace(identity, token_storage=None if target.storage == "disk" else target.storage)
    previous = federation.save_grant(stored, federation.sso_record(oidc_entry), rt)
    if previous.get("refresh_token") and previous["refresh_token"] != oidc_entry.get("refresh_token"):
        try:  # the new sign-in replaces the grant its contexts shared
            provider.revoke(previous["refresh_token"])
        except CaasError:
            pass
    return [_finish_sso(keystone, identity, access, oidc_entry, target, remember) for access in scoped]


def _finish_sso(keystone, identity, access, oidc_entry: Dict[str, Any], target: LoginTarget, remember: float) -> str:
    from kubectl_caas.keystone import entry_from_access, federation

    rt = target.runtime
    identity = federation.identity_after(identity, access)
    keystone.identity = identity
    credential, notice = federation.try_credential(keystone, access, remember)
    if notice:
        rt.notice_once(f"kubectl-openstack: {notice}")
    entry = entry_from_access(identity, access, "sso", credential, remember)
    entry["sso"] = federation.project_record(oidc_entry)
    name = _write_or_delete_credential(identity, entry, target, keystone, access, credential)
    renews = "an application credential" if credential else "your IAM sign-in (refresh token)"
    rt.notice(f"Signed in as {access.username} via {identity.identity_provider} to project {access.project_name}: "
              f"token valid until {describe_expiry(access.local_expires)}; renews with {renews}")
    return name


def password_for(settings: Settings, identity, rt: Runtime, password_stdin: bool) -> str:
    if password_stdin:
        return read_secret_stdin("password")
    if settings.flags.get("password"):
        rt.notice("kubectl-openstack: warning: a password on the command line is visible to other users in `ps` "
                  "and stays in your shell history; let the command prompt for it, or use --password-stdin")
        return settings.flags["password"]
    if settings.get("password"):
        return settings.get("password")
    if not (identity.user or identity.user_id):
        raise UsageError("no user name", unchosen_cloud_hint(settings, "pass --user or set OS_USERNAME"))
    password = rt.ask_secret(f"Keystone password for {identity.who} ({identity.auth_url}): ")
    if password is None:
        raise UsageError("no password and no terminal to ask for one",
                         unchosen_cloud_hint(settings, "pass it with --password-stdin or set OS_PASSWORD"))
    if not password:
        raise UsageError("the password is empty", "type your OpenStack password (set in the dashboard)")
    return password


def login(settings: Settings, identity, target: LoginTarget, password_stdin: bool, secret_stdin: bool,
          remember: float, all_projects: bool) -> List[str]:
    """Log in as the settings say (`identity` made of them) and write the contexts; returns their names."""
    from kubectl_caas.keystone import Keystone

    rt = target.runtime
    credential_id = settings.get("application_credential_id")
    credential_name = settings.get("application_credential_name")
    use_credential = uses_application_credential(settings, password_stdin)
    if all_projects and (target.context or target.namespace):
        raise UsageError("--all-projects makes one context per project: it cannot take --context or --namespace")
    same_user = contexts.same_person(PLUGIN, identity.values())
    # Refuse a broken kubeconfig or a context conflict before talking to Keystone, so nothing is
    # created in vain.
    kubeconfig.check_before_login(None if use_credential or all_projects else
                                  target.context or (identity.project or "").lower(),
                                  target.server, same_user, target.kubeconfig_path, target.force)
    keystone = Keystone(identity, rt)
    if use_credential:
        if all_projects:
            raise UsageError("an application credential belongs to one project: drop --all-projects")
        return [_credential_login(keystone, settings, target, credential_id, credential_name, secret_stdin)]
    password = password_for(settings, identity, rt, password_stdin)
    if all_projects:
        return _all_projects(keystone, password, target, remember)
    access = keystone.password_login(password)
    return [_finish_password_login(keystone, identity, access, target, remember)]


def _credential_login(keystone, settings: Settings, target: LoginTarget, credential_id: Optional[str],
                      credential_name: Optional[str], secret_stdin: bool) -> str:
    from kubectl_caas.keystone import entry_from_access

    label = credential_id or credential_name
    secret = (read_secret_stdin("application-credential-secret") if secret_stdin
              else settings.get("application_credential_secret")
              or target.runtime.ask_secret(f"Secret of application credential {label}: "))
    if not secret:
        raise UsageError("no application credential secret",
                         "set OS_APPLICATION_CREDENTIAL_SECRET or use --application-credential-secret-stdin")
    access = keystone.application_credential_login(credential_id, secret, expect_identity=False, name=credential_name)
    credential_id = access.application_credential_id or credential_id
    # The credential says who and where: the identity kubectl renews is the one it named.
    identity = replace(keystone.identity, user=access.username, user_id=None, user_domain=None,
                       user_domain_id=access.user_domain_id, project=access.project_name, project_id=None,
                       project_domain=None, project_domain_id=access.project_domain_id,
                       application_credential_id=credential_id)
    entry = entry_from_access(identity, access, "application_credential",
                              {"id": credential_id, "secret": secret, "expires_at": None, "created_by_login": False,
                               "user_id": access.user_id})
    name = write(identity, entry, target)
    target.runtime.notice(f"Logged in as {access.username} to project {access.project_name} with application "
                          f"credential {credential_id}: token valid until {describe_expiry(access.local_expires)}")
    return name


def _remember(keystone, access, remember: float) -> Optional[Dict[str, Any]]:
    from kubectl_caas.keystone import remember_login

    credential, notice = remember_login(keystone, access, remember)
    if notice:  # once, even for --all-projects
        keystone.runtime.notice_once(f"kubectl-openstack: {notice}")
    return credential


def _finish_password_login(keystone, identity, access, target: LoginTarget, remember: float) -> str:
    from kubectl_caas.keystone import entry_from_access

    if identity.project_id and access.project_name and identity.project != access.project_name:
        # Scoped by id, as keystoneauth1 does; a project name left over in the environment must not be
        # what the kubeconfig (and `status`) then call this context's project.
        identity = replace(identity, project=access.project_name)
    credential = _remember(keystone, access, remember)
    entry = entry_from_access(identity, access, "password", credential, remember)
    name = _write_or_delete_credential(identity, entry, target, keystone, access, credential)
    remembered = f"; remembered until {describe_expiry(credential['expires_at'])}" if credential else ""
    target.runtime.notice(f"Logged in as {access.username} to project {access.project_name}: token valid until "
                          f"{describe_expiry(access.local_expires)}{remembered}")
    return name


def _write_or_delete_credential(identity, entry: Dict[str, Any], target: LoginTarget, keystone, access,
                                credential: Optional[Dict[str, Any]]) -> str:
    """`write`, and when nothing could record the credential just created (a full disk, a refused
    kubeconfig...), delete it, or it would stay valid on Keystone with nobody to remove it."""
    try:
        return write(identity, entry, target, keystone)
    except CaasError:
        if credential:
            try:
                keystone.delete_application_credential(access.auth_token, access.user_id, credential["id"])
            except CaasError:
                pass
        raise


def _all_projects(keystone, password: str, target: LoginTarget, remember: float) -> List[str]:
    identity = keystone.identity
    unscoped = keystone.password_login(password, scoped=False)
    projects = keystone.projects(unscoped.auth_token)
    if not projects:
        raise AuthError(f"{identity.who} is not a member of any project")
    names = []
    for project in sorted(projects, key=lambda p: p["name"].lower()):
        project_identity = replace(identity, project=project["name"], project_id=None, project_domain=None,
                                   project_domain_id=project.get("domain_id") or "default")
        access = keystone.token_login(unscoped.auth_token, project["id"])
        names.append(_finish_password_login(keystone, project_identity, access, target, remember))
    return names


def write(identity, entry: Dict[str, Any], target: LoginTarget, keystone=None) -> str:
    """Save the cache entry and the kubeconfig stanzas; returns the context name.

    With `keystone` (a password login just happened), the application credential that an earlier
    login of this identity created is deleted, so re-logins do not pile them up on the server.
    """
    rt = target.runtime
    project = entry["project"]
    context = target.context or _derived_context(identity, project, target.kubeconfig_path, rt)
    namespace = target.namespace or contexts.derived_namespace(project["name"], f"project {project['name']!r}",
                                                               rt.notice)
    identity = replace(identity, token_storage=None if target.storage == "disk" else target.storage)
    args = identity.exec_args()

    def forget_previous_credential(new: Dict[str, Any], previous: Dict[str, Any]) -> None:
        old = previous.get("application_credential") or {}
        if keystone is None or not old.get("created_by_login") or \
                old.get("id") == (new.get("application_credential") or {}).get("id"):
            return
        try:
            keystone.delete_application_credential(new["tokens"]["keystone"]["value"],
                                                   old.get("user_id") or new["user"]["id"], old["id"])
        except CaasError as exc:
            rt.notice(f"kubectl-openstack: could not delete the previous application credential {old['id']}: {exc}")

    from kubectl_caas.clock import note_offset

    path = PLUGIN.entry_path(identity.values())
    previous = store.replace(PLUGIN, path, entry, target.storage, rt,
                             before=lambda new, old: note_offset(PLUGIN, new, old, rt), args=args)
    forget_previous_credential(entry, previous)
    kubeconfig.upsert(kubeconfig.Entry(
        context=context, cluster=contexts.cluster_name_for(target.server), server=target.server,
        user=f"{entry['user']['name']}@{context}", user_body=contexts.exec_user(PLUGIN, args),
        namespace=namespace, certificate_authority_data=target.ca_data),
        explicit_path=target.kubeconfig_path, force=target.force,
        same_user=contexts.same_person(PLUGIN, identity.values()))
    return context


def _derived_context(identity, project: Dict[str, Any], kubeconfig_path: Optional[str], rt: Runtime) -> str:
    """The project's name in lower case, as the Go plugin named contexts; but when a context of that
    name is already another project's (CMS and cms in two domains, or in the same --all-projects
    run), a suffix from this project's id, with a notice, instead of silently taking it over."""
    name = project["name"].lower()
    merged = kubeconfig.load(kubeconfig.resolve_paths(kubeconfig_path))
    for context, _body, args in kubeconfig.contexts_of_plugin(merged, PLUGIN.command):
        if context != name:
            continue
        try:
            theirs = contexts.exec_values(PLUGIN, args)
        except CaasError:
            return name  # not a context we can read: the usual conflict check decides
        same_domain = theirs.get("project_domain_id") in (None, project.get("domain_id"))
        same = theirs.get("auth_url") == identity.auth_url and same_domain and (
            theirs.get("project_id") == project["id"] or theirs.get("project") == project["name"])
        if same:
            return name
        other = theirs.get("project") or theirs.get("project_id")
        unique_name = f"{name}-{project['id'][:8]}"
        rt.notice(f"kubectl-openstack: context {name!r} is already project {other}'s; project {project['name']} "
                  f"gets context {unique_name!r} (namespace {name!r} is assumed for both: if yours differs, log in "
                  f"again with --context {shell_quote(unique_name)} --namespace NAME)")
        return unique_name
    return name

"""kubectl-openstack: log in to OpenStack Keystone and keep kubectl's token fresh.

Thin: parses options, resolves settings, calls the keystone backend, the cache and the kubeconfig
core, and presents the result.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import typer

from kubectl_caas import cache, kubeconfig, secret_store
from kubectl_caas.cli import common
from kubectl_caas.cli.common import printable, say
from kubectl_caas.errors import AuthError, CaasError, NetworkError, UsageError
from kubectl_caas.settings import Settings

PLUGIN = "openstack"
COMMAND = "kubectl-openstack"

app = common.new_app(
    "Log in to OpenStack Keystone (CloudVeneto) and configure kubectl for the Container-as-a-Service.\n\n"
    "kubectl then renews its token by itself through `kubectl-openstack get-token`.\n\n"
    "Example: kubectl openstack login --user alice --project CMS"
)

# Option help names the environment variables each option reads; settings.py applies the order
# flag > environment > config file > site profile.
AuthUrl = typer.Option(None, "--auth-url", help="Keystone URL [env OS_AUTH_URL]")
User = typer.Option(None, "--user", "-u", help="user name [env OS_USERNAME]")
UserId = typer.Option(None, "--user-id", help="user id instead of the name [env OS_USER_ID]")
UserDomain = typer.Option(None, "--user-domain", help="user's domain name [env OS_USER_DOMAIN_NAME; default: default]")
UserDomainId = typer.Option(None, "--user-domain-id", help="user's domain id [env OS_USER_DOMAIN_ID]")
Project = typer.Option(None, "--project", "-p", help="project name [env OS_PROJECT_NAME]")
ProjectId = typer.Option(None, "--project-id", help="project id [env OS_PROJECT_ID]")
ProjectDomain = typer.Option(None, "--project-domain",
                             help="project's domain name [env OS_PROJECT_DOMAIN_NAME; default: default]")
ProjectDomainId = typer.Option(None, "--project-domain-id", help="project's domain id [env OS_PROJECT_DOMAIN_ID]")
PasswordStdin = typer.Option(False, "--password-stdin", help="read the password from standard input")
Password = typer.Option(None, "--password", hidden=True,
                        help="the password on the command line (visible in ps and shell history)")
AppCredId = typer.Option(None, "--application-credential-id",
                         help="log in with this application credential [env OS_APPLICATION_CREDENTIAL_ID]; "
                              "its secret from OS_APPLICATION_CREDENTIAL_SECRET, clouds.yaml, "
                              "--application-credential-secret-stdin or a prompt")
AppCredSecretStdin = typer.Option(False, "--application-credential-secret-stdin",
                                  help="read the application credential secret from standard input")
CaCert = typer.Option(None, "--cacert", help="CA bundle for Keystone [env OS_CACERT]")
OsCloud = typer.Option(None, "--os-cloud", help="take settings from this clouds.yaml entry [env OS_CLOUD]")
Profile = typer.Option(None, "--profile",
                       help="site profile with defaults [env KUBECTL_CAAS_PROFILE; default: cloudveneto]")
Kubeconfig = typer.Option(None, "--kubeconfig", help="kubeconfig file to use [default: KUBECONFIG, ~/.kube/config]")
Debug = typer.Option(False, "--debug", help="print each HTTP request and answer to stderr, secrets redacted")


# Where each setting comes from besides its flag, in python-openstackclient's order: its --os-*
# options default to these OS_* variables, and both beat the clouds.yaml entry.
ENVIRONMENT = {
    "auth_url": ["OS_AUTH_URL"], "user": ["OS_USERNAME"], "user_id": ["OS_USER_ID"],
    "user_domain": ["OS_USER_DOMAIN_NAME"], "user_domain_id": ["OS_USER_DOMAIN_ID"],
    "project": ["OS_PROJECT_NAME", "OS_TENANT_NAME"], "project_id": ["OS_PROJECT_ID", "OS_TENANT_ID"],
    "project_domain": ["OS_PROJECT_DOMAIN_NAME"], "project_domain_id": ["OS_PROJECT_DOMAIN_ID"],
    "cacert": ["OS_CACERT"], "auth_type": ["OS_AUTH_TYPE"], "password": ["OS_PASSWORD"],
    "application_credential_id": ["OS_APPLICATION_CREDENTIAL_ID"],
    "application_credential_name": ["OS_APPLICATION_CREDENTIAL_NAME"],
    "application_credential_secret": ["OS_APPLICATION_CREDENTIAL_SECRET"],
    "server": ["CAAS_SERVER"], "certificate_authority": ["CAAS_CERTIFICATE_AUTHORITY"],
}
# A flag names the user or the project outright: the other spelling (id or name) is then not
# taken from the environment or the file, where it may be left over from another project.
FLAG_PAIRS = (("user", "user_id"), ("project", "project_id"))
AUTH_TYPES = {"password": "password", "v3password": "password",
              "v3applicationcredential": "application_credential"}


class OpenStackSettings:
    """The settings of one command: flag > OS_* variable > clouds.yaml entry > config file > site profile."""

    def __init__(self, flags: Dict[str, Any], profile: Optional[str], os_cloud: Optional[str]):
        self.settings = Settings.load(PLUGIN, flags, profile)
        self.flags = flags
        from kubectl_caas import clouds

        # --os-cloud, else the cloud the openstack command would pick (OS_CLOUD; the only cloud in
        # clouds.yaml when no OS_* variable describes one).
        self.cloud_name = os_cloud or clouds.default_cloud()
        self.cloud: Dict[str, Any] = {}
        if self.cloud_name:
            if not os_cloud and not os.environ.get("OS_CLOUD"):
                say(f"kubectl-openstack: using cloud {self.cloud_name!r}, the only one in clouds.yaml, as the "
                    "openstack command would")
            self.cloud = clouds.load_cloud(self.cloud_name)
            if self.cloud.get("verify") is False:
                raise UsageError(f"cloud {self.cloud_name!r} in clouds.yaml turns TLS verification off (verify: false "
                                 "or insecure: true), which would hand your password to anyone between you and "
                                 "Keystone", "remove that setting and give Keystone's CA bundle as `cacert:` or "
                                 "--cacert")

    def get(self, key: str) -> Any:
        for pair in FLAG_PAIRS:
            if key in pair and any(self.flags.get(k) for k in pair):
                return self.flags.get(key)
        candidates = [self.flags.get(key), *(os.environ.get(name) for name in ENVIRONMENT.get(key, ())),
                      self.cloud.get(key), self.settings.config.get(key), self.settings.profile.get(key)]
        return next((value for value in candidates if value not in (None, "")), None)

    def auth_type(self) -> Optional[str]:
        """'password', 'application_credential', or None when nothing says which (then the caller
        decides by what it was given)."""
        asked = self.get("auth_type")
        if not asked:
            return None
        if asked not in AUTH_TYPES:
            where = "OS_AUTH_TYPE" if os.environ.get("OS_AUTH_TYPE") else f"cloud {self.cloud_name!r} in clouds.yaml"
            raise UsageError(f"{where} asks for auth type {asked!r}, which kubectl-openstack cannot log in with",
                             "use password (v3password) or v3applicationcredential")
        return AUTH_TYPES[asked]

    def hint(self, key: str) -> Optional[str]:
        return self.settings.hint(key)

    def unchosen_cloud_hint(self, default: str) -> str:
        if self.cloud_name:
            return default
        from kubectl_caas.clouds import hint_for_unchosen_cloud

        return hint_for_unchosen_cloud(default) or default


def _identity(settings: OpenStackSettings):
    from kubectl_caas.keystone import Identity

    auth_url = settings.get("auth_url")
    if not auth_url:
        raise UsageError("no Keystone URL", settings.unchosen_cloud_hint("pass --auth-url or set OS_AUTH_URL"))
    fields = ("user", "user_id", "user_domain", "user_domain_id", "project", "project_id", "project_domain",
              "project_domain_id", "cacert")
    return Identity(auth_url=auth_url, os_cloud=settings.cloud_name, **{k: settings.get(k) for k in fields})


def _password(settings: OpenStackSettings, identity, password_stdin: bool, password_arg: Optional[str]) -> str:
    if password_stdin:
        return common.read_secret_stdin("password")
    if password_arg:
        say("kubectl-openstack: warning: a password on the command line is visible to other users in `ps` "
            "and stays in your shell history; let the command prompt for it, or use --password-stdin")
        return password_arg
    if settings.get("password"):
        return settings.get("password")
    password = common.prompt_secret(f"Keystone password for {identity.who} ({identity.auth_url}): ")
    if password is None:
        raise UsageError("no password and no terminal to ask for one",
                         settings.unchosen_cloud_hint("pass it with --password-stdin or set OS_PASSWORD"))
    if not password:
        raise UsageError("the password is empty", "type your OpenStack password (set in the dashboard)")
    return password


def _same_user(identity):
    return common.same_exec_identity(PLUGIN, {"auth-url": identity.auth_url, "user": identity.user,
                                              "application-credential-id": identity.application_credential_id})


def _write(identity, entry: Dict[str, Any], server: str, ca_data: Optional[str], context: Optional[str],
           namespace: Optional[str], kubeconfig_path: Optional[str], force: bool,
           keystone=None, storage: str = "disk") -> str:
    """Save the cache entry and the kubeconfig stanzas; returns the context name.

    With `keystone` (a password login just happened), the application credential that an earlier
    login of this identity created is deleted, so re-logins do not pile them up on the server.
    """
    project = entry["project"]
    context = context or _derived_context(identity, project, kubeconfig_path)
    if not namespace:
        namespace = common.derived_namespace(project["name"], f"project {project['name']!r}")
    args = common.login_args(identity.exec_args(), storage)
    previous = common.store_login(PLUGIN, args, entry, storage).get("application_credential") or {}
    if keystone is not None and previous.get("created_by_login") and previous.get("id") != \
            (entry.get("application_credential") or {}).get("id"):
        try:
            keystone.delete_application_credential(entry["tokens"]["keystone"]["value"],
                                                   previous.get("user_id") or entry["user"]["id"], previous["id"])
        except CaasError as exc:
            say(f"kubectl-openstack: could not delete the previous application credential {previous['id']}: {exc}")
    kube_entry = kubeconfig.Entry(
        context=context, cluster=common.cluster_name_for(server), server=server,
        user=f"{entry['user']['name']}@{context}",
        user_body=common.exec_user(PLUGIN, args),
        namespace=namespace, certificate_authority_data=ca_data)
    kubeconfig.upsert(kube_entry, explicit_path=kubeconfig_path, force=force, same_user=_same_user(identity))
    return context


def _derived_context(identity, project: Dict[str, Any], kubeconfig_path: Optional[str]) -> str:
    """The project's name in lower case, as the Go plugin named contexts; but when a context of that
    name is already another project's (CMS and cms in two domains, or in the same --all-projects
    run), a suffix from this project's id, with a notice, instead of silently taking it over."""
    name = project["name"].lower()
    merged = kubeconfig.load(kubeconfig.resolve_paths(kubeconfig_path))
    for context, _body, args in kubeconfig.contexts_of_plugin(merged, COMMAND):
        if context != name:
            continue
        try:
            options = common.exec_options(PLUGIN, args)
        except CaasError:
            return name  # not a context we can read: the usual conflict check decides
        same_domain = options.get("project-domain-id") in (None, project.get("domain_id"))
        same = options.get("auth-url") == identity.auth_url and same_domain and (
            options.get("project-id") == project["id"] or options.get("project") == project["name"])
        if same:
            return name
        other = options.get("project") or options.get("project-id")
        unique_name = f"{name}-{project['id'][:8]}"
        say(f"kubectl-openstack: context {name!r} is already project {other}'s; project {project['name']} gets "
            f"context {unique_name!r} (namespace {name!r} is assumed for both: if yours differs, log in again with "
            f"--context {common.shell_quote(unique_name)} --namespace NAME)")
        return unique_name
    return name


@app.command()
def login(
    auth_url: Optional[str] = AuthUrl, user: Optional[str] = User, user_id: Optional[str] = UserId,
    user_domain: Optional[str] = UserDomain, user_domain_id: Optional[str] = UserDomainId,
    project: Optional[str] = Project, project_id: Optional[str] = ProjectId,
    project_domain: Optional[str] = ProjectDomain, project_domain_id: Optional[str] = ProjectDomainId,
    password_stdin: bool = PasswordStdin, password: Optional[str] = Password,
    application_credential_id: Optional[str] = AppCredId,
    application_credential_secret_stdin: bool = AppCredSecretStdin,
    cacert: Optional[str] = CaCert, os_cloud: Optional[str] = OsCloud, profile: Optional[str] = Profile,
    server: Optional[str] = typer.Option(None, "--server", help="CaaS API server URL [env CAAS_SERVER]"),
    certificate_authority: Optional[str] = typer.Option(
        None, "--certificate-authority", help="CA bundle of the API server [env CAAS_CERTIFICATE_AUTHORITY]"),
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context name [default: project, lower case]"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="context namespace [default: project, lower case]"),
    kubeconfig_path: Optional[str] = Kubeconfig,
    force: bool = typer.Option(False, "--force", "-f", help="overwrite a context of the same name that points elsewhere"),
    remember_for: str = typer.Option("7d", "--remember-for",
                                     help="lifetime of the application credential that keeps you logged in"),
    no_remember: bool = typer.Option(False, "--no-remember",
                                     help="create no application credential: ask for the password when the token expires"),
    all_projects: bool = typer.Option(False, "--all-projects", help="one context for each of your projects"),
    token_storage: Optional[str] = typer.Option(None, "--token-storage", help=common.TOKEN_STORAGE_HELP),
    debug: bool = Debug,
) -> None:
    """Log in to Keystone and configure kubectl (a context per project).

    Example: kubectl openstack login --user alice --project CMS
    """
    common.enable_debug(debug)
    flags = dict(auth_url=auth_url, user=user, user_id=user_id, user_domain=user_domain,
                 user_domain_id=user_domain_id, project=project, project_id=project_id,
                 project_domain=project_domain, project_domain_id=project_domain_id, cacert=cacert,
                 server=server, certificate_authority=certificate_authority, namespace=namespace,
                 application_credential_id=application_credential_id)
    settings = OpenStackSettings(flags, profile, os_cloud)
    identity = _identity(settings)
    server_url = common.require_https_server(settings.get("server"), settings.hint("server"))
    ca_data = common.read_ca_data(settings.get("certificate_authority"))
    namespace = common.check_namespace(settings.get("namespace"))
    remember = 0.0 if no_remember else common.parse_duration(remember_for)
    storage = common.token_storage(token_storage)
    if all_projects and (context or namespace):
        raise UsageError("--all-projects makes one context per project: it cannot take --context or --namespace")

    from kubectl_caas.keystone import Keystone

    app_cred_id = settings.get("application_credential_id")
    app_cred_name = settings.get("application_credential_name")
    auth_type = settings.auth_type()
    # Without an auth type: an application credential from the environment or clouds.yaml gives way
    # to an explicit user or password on the command line; one given with --application-credential-id
    # does not.
    use_app_cred = auth_type == "application_credential" or auth_type is None and (
        bool(application_credential_id) or
        bool(app_cred_id or app_cred_name) and not (password or password_stdin or user or user_id))
    if use_app_cred and not (app_cred_id or app_cred_name):
        raise UsageError("the auth type is v3applicationcredential but no application credential is named",
                         "set OS_APPLICATION_CREDENTIAL_ID (or _NAME with OS_USERNAME), or pass "
                         "--application-credential-id")
    # Refuse a broken kubeconfig or a context conflict before talking to Keystone, so nothing is
    # created in vain.
    kubeconfig.check_before_login(None if use_app_cred or all_projects else context or (identity.project or "").lower(),
                                  server_url, _same_user(identity), kubeconfig_path, force)
    keystone = Keystone(identity)
    written: List[str] = []

    if use_app_cred:
        if all_projects:
            raise UsageError("an application credential belongs to one project: drop --all-projects")
        label = app_cred_id or app_cred_name
        secret = (common.read_secret_stdin("application-credential-secret") if application_credential_secret_stdin
                  else settings.get("application_credential_secret")
                  or common.prompt_secret(f"Secret of application credential {label}: "))
        if not secret:
            raise UsageError("no application credential secret",
                             "set OS_APPLICATION_CREDENTIAL_SECRET or use --application-credential-secret-stdin")
        access = keystone.application_credential_login(app_cred_id, secret, expect_identity=False, name=app_cred_name)
        app_cred_id = access.application_credential_id or app_cred_id
        identity.application_credential_id = app_cred_id
        identity.user, identity.project = access.username, access.project_name
        identity.user_id = identity.project_id = None
        identity.user_domain_id, identity.project_domain_id = access.user_domain_id, access.project_domain_id
        identity.user_domain = identity.project_domain = None
        from kubectl_caas.keystone import entry_from_access

        entry = entry_from_access(identity, access, "application_credential",
                                  {"id": app_cred_id, "secret": secret, "expires_at": None,
                                   "created_by_login": False, "user_id": access.user_id})
        written.append(_write(identity, entry, server_url, ca_data, context, namespace, kubeconfig_path, force,
                              storage=storage))
        say(f"Logged in as {access.username} to project {access.project_name} with application credential "
            f"{app_cred_id}: token valid until {common.describe_expiry(access.local_expires)}")
    else:
        secret = _password(settings, identity, password_stdin, password)
        if all_projects:
            written += _login_all_projects(keystone, identity, secret, remember, server_url, ca_data,
                                           kubeconfig_path, force, storage)
        else:
            access = keystone.password_login(secret)
            written.append(_finish_password_login(keystone, identity, access, remember, server_url, ca_data,
                                                  context, namespace, kubeconfig_path, force, storage))
    for name in written:
        say(f"Context {name!r} is ready: try `kubectl --context {common.shell_quote(name)} get pods`")
    say(f"Current context: {written[-1]}")
    print("kubectl configured correctly")


_notices_given = set()


def _remember(keystone, access, remember: float) -> Optional[Dict[str, Any]]:
    from kubectl_caas.keystone import remember_login

    credential, notice = remember_login(keystone, access, remember)
    if notice and notice not in _notices_given:  # once, even for --all-projects
        _notices_given.add(notice)
        say(f"kubectl-openstack: {notice}")
    return credential


def _finish_password_login(keystone, identity, access, remember: float, server: str, ca_data: Optional[str],
                           context: Optional[str], namespace: Optional[str], kubeconfig_path: Optional[str],
                           force: bool, storage: str = "disk") -> str:
    from kubectl_caas.keystone import entry_from_access

    credential = _remember(keystone, access, remember)
    entry = entry_from_access(identity, access, "password", credential, remember)
    try:
        name = _write(identity, entry, server, ca_data, context, namespace, kubeconfig_path, force, keystone, storage)
    except CaasError:
        # Nothing records the credential just created (a full disk, a refused kubeconfig...): delete
        # it now, or it would stay valid on Keystone with nobody to remove it.
        if credential:
            try:
                keystone.delete_application_credential(access.auth_token, access.user_id, credential["id"])
            except CaasError:
                pass
        raise
    expiry = common.describe_expiry(access.local_expires)
    remembered = (f"; remembered until {common.describe_expiry(credential['expires_at'])}" if credential
                  else "")
    say(f"Logged in as {access.username} to project {access.project_name}: token valid until {expiry}{remembered}")
    return name


def _login_all_projects(keystone, identity, password: str, remember: float, server: str,
                        ca_data: Optional[str], kubeconfig_path: Optional[str], force: bool,
                        storage: str = "disk") -> List[str]:
    from dataclasses import replace

    unscoped = keystone.password_login(password, scoped=False)
    projects = keystone.projects(unscoped.auth_token)
    if not projects:
        raise AuthError(f"{identity.who} is not a member of any project")
    names = []
    for project in sorted(projects, key=lambda p: p["name"].lower()):
        project_identity = replace(identity, project=project["name"], project_id=None,
                                   project_domain=None, project_domain_id=project.get("domain_id") or "default")
        access = keystone.token_login(unscoped.auth_token, project["id"])
        names.append(_finish_password_login(keystone, project_identity, access, remember, server, ca_data,
                                            None, None, kubeconfig_path, force, storage))
    return names


common.add_get_token_command(app, PLUGIN)


@app.command()
def status(
    context: Optional[str] = typer.Option(None, "--context", help="only this context"),
    kubeconfig_path: Optional[str] = Kubeconfig,
    debug: bool = Debug,
) -> None:
    """Show, per kubectl-openstack context: user, project, token expiry, remembered-until.

    Example: kubectl openstack status
    """
    now = time.time()
    for marker, name, options, entry in common.status_rows(PLUGIN, context, kubeconfig_path, debug):
        user = options.get("user") or options.get("user-id") or "?"
        project = options.get("project") or options.get("project-id") or "?"
        token = ((entry or {}).get("tokens") or {}).get("keystone") or {}
        credential = (entry or {}).get("application_credential") or {}
        if not entry:
            common.result(f"{marker} {name}: user {user}, project {project}, logged out")
            continue
        state = f"token {common.describe_expiry(token.get('expires_at'), now)}"
        if credential:
            until = credential.get("expires_at")
            remembered = f"remembered until {common.describe_expiry(until, now)}" if until else "remembered"
        else:
            remembered = "not remembered (renewal needs OS_PASSWORD or a prompt)"
        storage = secret_store.storage_note(PLUGIN, options.get("token-storage"), entry)
        common.result(f"{marker} {name}: user {user}, project {project}, {state}, {remembered}{storage}")


@app.command()
def projects(
    auth_url: Optional[str] = AuthUrl, user: Optional[str] = User, user_id: Optional[str] = UserId,
    user_domain: Optional[str] = UserDomain, user_domain_id: Optional[str] = UserDomainId,
    password_stdin: bool = PasswordStdin, password: Optional[str] = Password,
    cacert: Optional[str] = CaCert, os_cloud: Optional[str] = OsCloud, profile: Optional[str] = Profile,
    debug: bool = Debug,
) -> None:
    """List your Keystone projects, one per line: name and id.

    Example: kubectl openstack projects --user alice
    """
    common.enable_debug(debug)
    flags = dict(auth_url=auth_url, user=user, user_id=user_id, user_domain=user_domain,
                 user_domain_id=user_domain_id, cacert=cacert)
    settings = OpenStackSettings(flags, profile, os_cloud)
    identity = _identity(settings)
    from kubectl_caas.keystone import Keystone

    keystone = Keystone(identity)
    secret = _password(settings, identity, password_stdin, password)
    unscoped = keystone.password_login(secret, scoped=False)
    try:
        for project in sorted(keystone.projects(unscoped.auth_token), key=lambda p: p["name"].lower()):
            print(f"{printable(project['name'])}\t{printable(project['id'])}")
    finally:
        keystone.revoke_quietly(unscoped.auth_token)


@app.command()
def logout(
    context: Optional[str] = typer.Option(None, "--context", help="log out of this context [default: current]"),
    all_: bool = typer.Option(False, "--all", help="log out of every kubectl-openstack context"),
    password_stdin: bool = PasswordStdin,
    kubeconfig_path: Optional[str] = Kubeconfig,
    debug: bool = Debug,
) -> None:
    """Revoke the token, delete the remembered application credential and forget both.

    Deleting the application credential needs your password (Keystone lets only a password login
    manage them): from OS_PASSWORD, --password-stdin or a prompt. Without one the secret is still
    forgotten locally and the credential expires on its own. The kubeconfig entries stay.

    Example: kubectl openstack logout --all
    """
    common.enable_debug(debug)
    from kubectl_caas.keystone import Identity, Keystone

    _merged, chosen = common.plugin_contexts(PLUGIN, context, all_, kubeconfig_path)
    if not chosen:
        say("No kubectl-openstack contexts: nothing to log out of")
        return
    passwords: Dict[Tuple[str, str], Optional[str]] = {}
    stdin_password = common.read_secret_stdin("password") if password_stdin else None
    done = set()
    unreachable = 0
    for name, _body, args in chosen:
        options, path, _entry = common.cache_entry_for(PLUGIN, args)
        if path in done:
            continue
        done.add(path)
        identity = Identity.from_options(options)
        keystone = Keystone(identity)
        with cache.EntryLock(path):
            entry = common.entry_for_logout(PLUGIN, path, name)
            if not entry:
                continue
            token = ((entry.get("tokens") or {}).get("keystone") or {}).get("value")
            try:
                if token and keystone.revoke(token):
                    say(f"{name}: token revoked")
            except CaasError as exc:
                # Forget it locally all the same: the user asked to be logged out.
                unreachable += 1
                say(f"{name}: could not revoke the token ({exc}); it expires on its own")
            credential = entry.get("application_credential") or {}
            if credential.get("created_by_login"):
                key = (identity.auth_url, identity.user or identity.user_id or "")
                if key not in passwords:
                    passwords[key] = stdin_password or os.environ.get("OS_PASSWORD") or common.prompt_secret(
                        f"Password for {identity.who}, to delete the application credential: ")
                _forget_credential(keystone, identity, credential, passwords[key], name)
            secret_store.forget(PLUGIN, path)
            say(f"{name}: logged out (cache entry removed)")
    if unreachable:
        raise NetworkError("some tokens could not be revoked at Keystone (the local copies are deleted)",
                           "the tokens expire on their own at the time `kubectl openstack status` showed")


def _forget_credential(keystone, identity, credential: Dict[str, Any], password: Optional[str], name: str) -> None:
    until = common.describe_expiry(credential.get("expires_at"))
    if not password:
        say(f"{name}: forgot application credential {credential['id']} locally; without your password it "
            f"cannot be deleted on Keystone and stays valid there until {until} (or delete it in the dashboard)")
        return
    try:
        unscoped = keystone.password_login(password, scoped=False)
    except CaasError as exc:
        say(f"{name}: could not delete application credential {credential['id']}: {exc}; it stays valid on "
            f"Keystone until {until}")
        return
    try:
        if keystone.delete_application_credential(unscoped.auth_token, credential.get("user_id") or unscoped.user_id,
                                                  credential["id"]):
            say(f"{name}: application credential {credential['id']} deleted")
        else:
            say(f"{name}: application credential {credential['id']} was already gone")
    finally:
        keystone.revoke_quietly(unscoped.auth_token)


common.add_version_option(app, PLUGIN)
common.add_completion_command(app, PLUGIN)


SEED_FLAGS = {"user", "password", "project", "force"}


def _seed_flag(arg: str) -> bool:
    """-user, -user=U, --user, --user=U (and the same for password, project, force)."""
    return arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in SEED_FLAGS


def translate_seed_args(argv: List[str]) -> List[str]:
    """The Go plugin's command line (`-user=U -password=P -project=P [-force]`, or `-user U`) is a login."""
    if argv[:1] in (["-help"], ["-h"]):
        return ["--help"]
    if not argv or not _seed_flag(argv[0]):
        return argv
    return ["login"] + ["--" + arg.lstrip("-") if _seed_flag(arg) else arg for arg in argv]


def run(argv: List[str]) -> None:
    common.run_app(app, PLUGIN, translate_seed_args(argv))


if __name__ == "__main__":  # pragma: no cover
    run(sys.argv[1:])

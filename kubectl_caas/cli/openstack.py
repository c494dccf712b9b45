"""kubectl-openstack: log in to OpenStack Keystone and keep kubectl's token fresh.

Thin: the commands, their options (the identity's come from the plugin's table) and what they
print; openstack_login.py does a login's work, with the keystone backend and the core.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import typer

from kubectl_caas import contexts, kubeconfig, store
from kubectl_caas.cli import common, options
from kubectl_caas.cli import openstack_login as flows
from kubectl_caas.cli.app import new_app, run_app, runtime
from kubectl_caas.errors import CaasError, NetworkError, UsageError
from kubectl_caas.plugins import OPENSTACK as PLUGIN
from kubectl_caas.runtime import Runtime
from kubectl_caas.terminal import printable

app = new_app(PLUGIN,
              "Log in to OpenStack Keystone (CloudVeneto) and configure kubectl for the Container-as-a-Service.\n\n"
              "kubectl then renews its token by itself through `kubectl-openstack get-token`.\n\n"
              "Example: kubectl openstack login --user alice --project CMS")

PasswordStdin = typer.Option(False, "--password-stdin", help="read the password from standard input")


@app.command()
@options.with_identity_options(PLUGIN)
def login(
    ctx: typer.Context,
    identity_flags: Dict[str, Optional[str]],
    password_stdin: bool = PasswordStdin,
    application_credential_secret_stdin: bool = typer.Option(
        False, "--application-credential-secret-stdin", help="read the application credential secret from standard input"),
    profile: Optional[str] = options.profile(PLUGIN),
    server: Optional[str] = options.Server,
    certificate_authority: Optional[str] = options.CertificateAuthority,
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context name [default: project, lower case]"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="context namespace [default: project, lower case]"),
    kubeconfig_path: Optional[str] = options.Kubeconfig,
    force: bool = options.Force,
    remember_for: str = typer.Option("7d", "--remember-for",
                                     help="lifetime of the application credential that keeps you logged in"),
    no_remember: bool = typer.Option(False, "--no-remember",
                                     help="create no application credential: ask for the password when the token expires"),
    all_projects: bool = typer.Option(False, "--all-projects", help="one context for each of your projects"),
    sso: bool = typer.Option(False, "--sso", help="no OpenStack password: sign in at the OpenID issuer (INFN IAM) "
                             "and log in through Keystone's federation (--identity-provider, --issuer, --client-id)"),
    no_browser: bool = typer.Option(False, "--no-browser", help="with --sso: sign in with a device code, not in this "
                                    "desktop's browser"),
    debug: bool = options.Debug,
) -> None:
    """Log in to Keystone and configure kubectl (a context per project).

    Example: kubectl openstack login --user alice --project CMS
    """
    rt = runtime(ctx)
    flags = dict(identity_flags, server=server, certificate_authority=certificate_authority, namespace=namespace)
    settings = flows.load_settings(flags, profile, rt)
    identity = flows.identity_from(settings, sso=sso)
    target = common.LoginTarget.from_settings(settings, rt, context, kubeconfig_path, force)
    remember = 0.0 if no_remember else common.parse_duration(remember_for)
    if sso:
        if password_stdin or application_credential_secret_stdin:
            raise UsageError("--sso asks for no OpenStack password or credential", "drop --password-stdin")
        written = flows.sso_login(settings, identity, target, remember, all_projects, no_browser)
    else:
        written = flows.login(settings, identity, target, password_stdin, application_credential_secret_stdin,
                              remember, all_projects)
    for name in written:
        rt.notice(f"Context {name!r} is ready: try `kubectl --context {common.shell_quote(name)} get pods`")
    rt.notice(f"Current context: {written[-1]}")
    print("kubectl configured correctly")


@app.command()
def status(ctx: typer.Context, context: Optional[str] = options.StatusContext,
           kubeconfig_path: Optional[str] = options.Kubeconfig, debug: bool = options.Debug) -> None:
    """Show, per kubectl-openstack context: user, project, token expiry, remembered-until.

    Example: kubectl openstack status
    """
    rt = runtime(ctx)
    now = rt.clock()
    for marker, name, values, entry in common.status_rows(PLUGIN, context, kubeconfig_path, rt):
        user = values.get("user") or values.get("user_id") or "?"
        project = values.get("project") or values.get("project_id") or "?"
        if not entry:
            common.result(f"{marker} {name}: user {user}, project {project}, logged out")
            continue
        token = (entry.get("tokens") or {}).get("keystone") or {}
        credential = entry.get("application_credential") or {}
        if values.get("identity_provider"):  # SSO: the person is whoever signed in
            user = (entry.get("user") or {}).get("name") or user
        state = f"token {common.describe_expiry(token.get('expires_at'), now)}"
        if credential:
            until = credential.get("expires_at")
            remembered = f"remembered until {common.describe_expiry(until, now)}" if until else "remembered"
        elif values.get("identity_provider"):
            via = values.get("identity_provider")
            from kubectl_caas.keystone import Identity, federation

            held = federation.load_grant(Identity.from_values(values)).get("refresh_token")
            remembered = (f"SSO via {via}, renews with the IAM sign-in" if held
                          else f"SSO via {via}, no IAM refresh token (renewal needs `login --sso`)")
        else:
            remembered = "not remembered (renewal needs OS_PASSWORD or a prompt)"
        storage = store.storage_note(PLUGIN, values.get("token_storage"), entry)
        common.result(f"{marker} {name}: user {user}, project {project}, {state}, {remembered}{storage}")


@app.command()
@options.with_identity_options(PLUGIN, only=("auth_url", "user", "user_id", "user_domain", "user_domain_id",
                                             "password", "cacert", "os_cloud", "identity_provider", "protocol",
                                             "issuer", "client_id", "audience", "issuer_cacert"))
def projects(ctx: typer.Context, identity_flags: Dict[str, Optional[str]], password_stdin: bool = PasswordStdin,
             profile: Optional[str] = options.profile(PLUGIN),
             sso: bool = typer.Option(False, "--sso", help="sign in at the OpenID issuer instead of a password "
                                      "(as login --sso)"),
             no_browser: bool = typer.Option(False, "--no-browser", help="with --sso: a device code, not the browser"),
             debug: bool = options.Debug) -> None:
    """List your Keystone projects, one per line: name and id.

    Example: kubectl openstack projects --user alice
    """
    from kubectl_caas.keystone import Keystone

    rt = runtime(ctx)
    settings = flows.load_settings(dict(identity_flags), profile, rt)
    identity = flows.identity_from(settings, sso=sso)
    keystone = Keystone(identity, rt)
    if sso:
        unscoped = flows.sso_unscoped(keystone, rt, no_browser)
    else:
        secret = flows.password_for(settings, identity, rt, password_stdin)
        unscoped = keystone.password_login(secret, scoped=False)
    try:
        for project in sorted(keystone.projects(unscoped.auth_token), key=lambda p: p["name"].lower()):
            print(f"{printable(project['name'])}\t{printable(project['id'])}")
    finally:
        keystone.revoke_quietly(unscoped.auth_token)


@app.command()
def logout(
    ctx: typer.Context,
    context: Optional[str] = options.LogoutContext,
    all_: bool = options.logout_all(PLUGIN),
    password_stdin: bool = PasswordStdin,
    kubeconfig_path: Optional[str] = options.Kubeconfig,
    debug: bool = options.Debug,
) -> None:
    """Revoke the token, delete the remembered application credential and forget both.

    Deleting the application credential needs your password (Keystone lets only a password login
    manage them): from OS_PASSWORD, --password-stdin or a prompt. Without one the secret is still
    forgotten locally and the credential expires on its own. The kubeconfig entries stay.

    Example: kubectl openstack logout --all
    """
    from kubectl_caas.keystone import Identity, Keystone

    rt = runtime(ctx)
    merged, chosen = contexts.plugin_contexts(PLUGIN, context, all_, kubeconfig_path)
    if not chosen:
        rt.notice("No kubectl-openstack contexts: nothing to log out of")
        return
    grants: Dict[str, Any] = {}  # SSO grants of the contexts logged out: ended unless another context holds one
    passwords: Dict[Tuple[str, str], Optional[str]] = {}
    stdin_password = common.read_secret_stdin("password") if password_stdin else None
    done = set()
    unreachable = 0
    for name, _body, args in chosen:
        values, path = common.cache_entry_for(PLUGIN, args)
        if path in done:
            continue
        done.add(path)
        identity = Identity.from_values(values)
        keystone = Keystone(identity, rt)
        with store.locked(path):
            entry = store.for_logout(PLUGIN, path, name, rt)
            if not entry:
                continue
            token = ((entry.get("tokens") or {}).get("keystone") or {}).get("value")
            if identity.identity_provider:  # SSO: no password here; the federated token and IAM do it
                from kubectl_caas.keystone import federation

                _sso_logout(keystone, identity, entry, token, name, rt)
                grants[federation.grant_path(identity)] = identity
            try:
                if token and keystone.revoke(token):
                    rt.notice(f"{name}: token revoked")
            except CaasError as exc:
                # Forget it locally all the same: the user asked to be logged out.
                unreachable += 1
                rt.notice(f"{name}: could not revoke the token ({exc}); it expires on its own")
            credential = entry.get("application_credential") or {}
            if credential.get("created_by_login"):
                key = (identity.auth_url, identity.user or identity.user_id or "")
                if key not in passwords:
                    passwords[key] = stdin_password or rt.getenv("OS_PASSWORD") or rt.ask_secret(
                        f"Password for {identity.who}, to delete the application credential: ")
                _forget_credential(keystone, credential, passwords[key], name, rt)
            store.forget(PLUGIN, path)
            rt.notice(f"{name}: logged out (cache entry removed)")
    if grants:
        _end_sso_grants(grants, merged, {path for path in done}, rt)
    if unreachable:
        raise NetworkError("some tokens could not be revoked at Keystone (the local copies are deleted)",
                           "the tokens expire on their own at the time `kubectl openstack status` showed")


def _sso_logout(keystone, identity, entry: Dict[str, Any], token: Optional[str], name: str, rt: Runtime) -> None:
    """Before the token is revoked: delete the application credential login made. A token got with
    the credential may not delete credentials, so when the cached one cannot, a fresh federated
    token from the IAM grant does."""
    from kubectl_caas.keystone import federation

    credential = entry.pop("application_credential", None) or {}
    if not credential.get("created_by_login"):
        return
    user_id = credential.get("user_id") or (entry.get("user") or {}).get("id")

    def with_fresh_token() -> bool:
        access, _ = federation.renew(identity, {}, rt, interactive=False)
        try:
            return keystone.delete_application_credential(access.auth_token, user_id, credential["id"])
        finally:
            keystone.revoke_quietly(access.auth_token)

    try:
        try:
            if not token:
                raise CaasError("no cached token")
            gone = keystone.delete_application_credential(token, user_id, credential["id"])
        except CaasError:
            gone = with_fresh_token()
    except CaasError as exc:
        rt.notice(f"{name}: could not delete application credential {credential['id']} ({exc}); delete it in the "
                  f"dashboard, or it stays valid until {common.describe_expiry(credential.get('expires_at'))}")
        return
    rt.notice(f"{name}: application credential {credential['id']} {'deleted' if gone else 'was already gone'}")


def _end_sso_grants(grants: Dict[str, Any], merged, logged_out: set, rt: Runtime) -> None:
    """Revoke (RFC 7009) and forget each SSO grant no other logged-in context still uses."""
    from kubectl_caas import cache
    from kubectl_caas.keystone import Identity, federation

    in_use = set()
    for _name, _body, args in kubeconfig.contexts_of_plugin(merged, PLUGIN.command):
        try:
            values, path = common.cache_entry_for(PLUGIN, args)
        except CaasError:
            continue
        if path not in logged_out and values.get("identity_provider") and cache.read_entry(path):
            in_use.add(federation.grant_path(Identity.from_values(values)))
    for path, identity in grants.items():
        if path in in_use:
            rt.notice(f"the IAM sign-in at {identity.issuer} stays: other contexts still use it")
            continue
        record = federation.load_grant(identity)
        if record.get("refresh_token"):
            try:
                federation.provider_for(identity, rt, record).revoke(record["refresh_token"])
                rt.notice(f"IAM refresh token revoked at {identity.issuer}")
            except CaasError as exc:
                rt.notice(f"could not revoke the IAM refresh token at {identity.issuer} ({exc}); it is forgotten here")
        federation.forget_grant(identity)


def _forget_credential(keystone, credential: Dict[str, Any], password: Optional[str], name: str, rt: Runtime) -> None:
    until = common.describe_expiry(credential.get("expires_at"))
    if not password:
        rt.notice(f"{name}: forgot application credential {credential['id']} locally; without your password it "
                  f"cannot be deleted on Keystone and stays valid there until {until} (or delete it in the dashboard)")
        return
    try:
        unscoped = keystone.password_login(password, scoped=False)
    except CaasError as exc:
        rt.notice(f"{name}: could not delete application credential {credential['id']}: {exc}; it stays valid on "
                  f"Keystone until {until}")
        return
    try:
        if keystone.delete_application_credential(unscoped.auth_token, credential.get("user_id") or unscoped.user_id,
                                                  credential["id"]):
            rt.notice(f"{name}: application credential {credential['id']} deleted")
        else:
            rt.notice(f"{name}: application credential {credential['id']} was already gone")
    finally:
        keystone.revoke_quietly(unscoped.auth_token)


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


def run(argv: List[str], rt: Runtime) -> None:
    run_app(app, PLUGIN, translate_seed_args(argv), rt)

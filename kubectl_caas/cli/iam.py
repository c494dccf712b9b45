"""kubectl-iam: sign in to an INDIGO IAM issuer (or any OpenID provider), in a browser or with a device code, and
keep kubectl's token fresh. Thin: options and presentation; the work is in oidc.py and the core."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Set

import typer

from kubectl_caas import contexts, kubeconfig, store
from kubectl_caas.cli import common, options
from kubectl_caas.cli.app import new_app, run_app, runtime
from kubectl_caas.errors import CaasError, UsageError
from kubectl_caas.plugins import IAM as PLUGIN
from kubectl_caas.runtime import Runtime
from kubectl_caas.settings import Settings

app = new_app(PLUGIN,
              "Sign in to INFN's INDIGO IAM (or another OpenID provider) in a browser or with a device code and "
              "configure kubectl.\n\n"
              "kubectl then renews its token by itself through `kubectl-iam get-token`, with the refresh token.\n\n"
              "Example: kubectl iam login --issuer https://iam.cloud.infn.it --client-id my-client")


def _issuer_profile(settings: Settings, issuer: str) -> Dict[str, Any]:
    """Per-issuer settings: the site profile's, with the config file's `iam: issuers:` on top."""
    from kubectl_caas.oidc import normalise_issuer

    merged: Dict[str, Any] = {}
    for source in (settings.profile.get("issuers") or {}, settings.config.get("issuers") or {}):
        for url, values in source.items():
            if normalise_issuer(url) == normalise_issuer(issuer) and isinstance(values, dict):
                merged.update(values)
    return merged


def _client_values(settings: Settings) -> Dict[str, Any]:
    from kubectl_caas.oidc import Client

    issuer = settings.get("issuer")
    if not issuer:
        raise UsageError("no issuer", "pass --issuer URL or set IAM_ISSUER")
    per_issuer = _issuer_profile(settings, issuer)
    return {f: settings.get(f) or per_issuer.get(f) for f in Client.__dataclass_fields__}


def _client(settings: Settings):
    from kubectl_caas.oidc import Client

    values = _client_values(settings)
    if not values["client_id"]:
        raise UsageError(f"no OAuth client id for {values['issuer']}", settings.hint("client_id")
                         or "pass --client-id or set IAM_CLIENT_ID, or let `--register` register a client")
    return Client(**values)


def _registering(settings: Settings, rt: Runtime, client_id: Optional[str], secret_stdin: bool):
    """`login --register`: a Provider for the issuer before there is a client id (oidc/registration.py)."""
    from kubectl_caas.oidc import registration

    if client_id or secret_stdin:
        raise UsageError("--register registers a client of its own, so it takes no --client-id or "
                         "--client-secret-stdin", "drop one or the other")
    return registration.provider_for_issuer(dict(_client_values(settings), client_id=None), rt)


def _registered(provisional, storage: str):
    """The registration for the issuer and account (reused, else new) and a Provider for its client."""
    from kubectl_caas.oidc import Provider, registration

    record = registration.ensure(provisional, storage)
    client = type(provisional.client)(**dict(provisional.client.values(), client_id=record["client_id"]))
    return Provider(client, provisional.runtime, record.get("client_secret"), provisional.metadata, provisional.jwks)


def _context_name(settings: Settings, client) -> str:
    name = _issuer_profile(settings, client.issuer).get("name")
    return name or "iam-" + re.sub(r"[^A-Za-z0-9.-]+", "-", client.host)


def _agent_login(settings: Settings, rt: Runtime, context: Optional[str], kubeconfig_path: Optional[str],
                 force: bool) -> None:
    """`login --oidc-agent ACCOUNT`: the person's oidc-agent hands out the tokens (oidc/agent.py).
    Asking it for one first proves the account works; the account's issuer is the context's."""
    from kubectl_caas.oidc import DEFAULT_SCOPE, Client, agent

    account = settings.get("oidc_agent")
    scope = settings.get("scope")
    token = agent.access_token(account, rt.environ, settings.get("audience"), None if scope == DEFAULT_SCOPE else scope)
    agent.check_issuer(token, account, settings.flags.get("issuer") or rt.getenv("IAM_ISSUER"))
    values = {f: settings.get(f) for f in Client.__dataclass_fields__}
    # The account brings its own client (and CA bundle): none of ours goes into the exec args.
    client = Client(**dict(values, issuer=token.issuer, client_id=None, cacert=None))
    target = common.LoginTarget.from_settings(settings, rt, context or _context_name(settings, client),
                                              kubeconfig_path, force)
    same_user = contexts.same_person(PLUGIN, client.values())
    kubeconfig.check_before_login(target.context, target.server, same_user, kubeconfig_path, force)
    identity = type(client)(**dict(client.values(), token_storage=None if target.storage == "disk" else target.storage))
    entry = agent.entry_from_agent(account, token, rt.clock())
    store.replace(PLUGIN, PLUGIN.entry_path(identity.values()), entry, target.storage, rt,
                  args=identity.exec_args())
    claims = entry["claims"]
    who = claims.get("preferred_username") or claims.get("sub") or account
    kubeconfig.upsert(kubeconfig.Entry(
        context=target.context, cluster=contexts.cluster_name_for(target.server), server=target.server,
        user=f"{who}@{target.context}", user_body=contexts.exec_user(PLUGIN, identity.exec_args()),
        namespace=target.namespace, certificate_authority_data=target.ca_data),
        explicit_path=kubeconfig_path, force=force, same_user=same_user)
    rt.notice(f"oidc-agent account {account} gives {who} at {client.issuer} an access token valid until "
              f"{common.describe_expiry(entry['tokens']['access']['expires_at'])}; kubectl asks oidc-agent for "
              "the next one (keep it running, with the account loaded)")
    rt.notice(f"Context {target.context!r} is ready and now the current context: try `kubectl get pods`")
    print("kubectl configured correctly")


def _one_way_in(settings: Settings, register: bool, browser: bool, no_browser: bool) -> None:
    """Refuse sign-in options that contradict each other, before anything goes over the network."""
    ways = [name for name, given in (("--oidc-agent", settings.get("oidc_agent")),
                                     ("--client-credentials", settings.get("grant")), ("--register", register))
            if given]
    if len(ways) > 1:
        raise UsageError(f"{' and '.join(ways)} are different ways to sign in", "pass only one of them")
    if ways and ways[0] != "--register" and (browser or no_browser):
        flag = "--browser" if browser else "--no-browser"
        raise UsageError(f"{flag} chooses how a person signs in, and {ways[0]} involves no sign-in here",
                         f"drop {flag}")


@app.command()
@options.with_identity_options(PLUGIN)
def login(
    ctx: typer.Context,
    identity_flags: Dict[str, Optional[str]],
    client_secret_stdin: bool = typer.Option(False, "--client-secret-stdin",
                                             help="read the client secret from standard input [env IAM_CLIENT_SECRET]"),
    register: bool = typer.Option(False, "--register", help="no client id? register a client at the issuer (RFC 7591) "
                                  "and sign in with it; later logins reuse it, logout deletes it"),
    profile: Optional[str] = options.profile(PLUGIN),
    server: Optional[str] = options.Server,
    certificate_authority: Optional[str] = options.CertificateAuthority,
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context name [default: from the issuer]"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="namespace of the context"),
    kubeconfig_path: Optional[str] = options.Kubeconfig,
    force: bool = options.Force,
    browser: bool = typer.Option(False, "--browser", help="sign in through a browser on this machine (authorization "
                                 "code with PKCE) [default when a desktop browser and a terminal are there]"),
    no_browser: bool = typer.Option(False, "--no-browser", help="sign in with a device code; only print the link "
                                    "and the code"),
    no_qr: bool = typer.Option(False, "--no-qr", help="do not draw the device code's link as a QR code"),
    client_credentials: bool = typer.Option(False, "--client-credentials",
                                            help="a service account (CI, services): no person, the client's access "
                                            "token; its secret from IAM_CLIENT_SECRET (same as --grant "
                                            "client-credentials)"),
    debug: bool = options.Debug,
) -> None:
    """Sign in (in this desktop's browser, else with a device code to approve in any browser) and configure kubectl.

    Example: kubectl iam login --client-id my-client --server https://caas.example.org:6443
    """
    from kubectl_caas import oidc

    rt = runtime(ctx)
    if browser and no_browser:
        raise UsageError("--browser and --no-browser contradict each other", "pass one of them")
    flags = dict(identity_flags, server=server, certificate_authority=certificate_authority, namespace=namespace)
    if client_credentials:
        flags["grant"] = "client-credentials"
    if client_secret_stdin:
        flags["client_secret"] = common.read_secret_stdin("client-secret")
    if context and not flags.get("account"):
        flags["account"] = context  # a context of one's own: a cache entry of its own
    settings = Settings.load(PLUGIN, flags, rt.environ, profile)
    _one_way_in(settings, register=register, browser=browser, no_browser=no_browser)
    if settings.get("oidc_agent"):  # the person's oidc-agent hands out the tokens
        return _agent_login(settings, rt, context, kubeconfig_path, force)
    provisional = _registering(settings, rt, identity_flags.get("client_id"), client_secret_stdin) if register else None
    client = provisional.client if provisional else _client(settings)
    target = common.LoginTarget.from_settings(settings, rt, context or _context_name(settings, client),
                                              kubeconfig_path, force)
    # With --register the client is not known yet: the same person is the same issuer (and account).
    same_user = contexts.same_person(PLUGIN, dict(client.values(), client_id=None if provisional else client.client_id))
    # Refuse a broken kubeconfig or a conflicting context before the person spends time in the browser.
    kubeconfig.check_before_login(target.context, target.server, same_user, kubeconfig_path, force)

    provider = _registered(provisional, target.storage) if provisional else \
        oidc.Provider(client, rt, settings.get("client_secret"))
    client = provider.client

    def announce(device: Mapping[str, Any]) -> None:
        oidc.announce(device, rt, qr=not no_qr)
        page = device.get("verification_uri_complete") or device["verification_uri"]
        if not no_browser and rt.open_browser(str(page)):
            rt.notice("(opened it in your browser)")

    from kubectl_caas.browser import can_open

    if client.grant:
        from kubectl_caas.oidc.service import client_credentials_login

        entry = client_credentials_login(provider)
    elif browser or (not no_browser and can_open(rt.environ) and rt.isatty()):
        entry = oidc.browser_login(provider, rt)
    else:
        entry = oidc.device_login(provider, announce)
    from kubectl_caas.clock import note_offset

    identity = type(client)(**dict(client.values(), token_storage=None if target.storage == "disk" else target.storage))
    args = identity.exec_args()
    previous = store.replace(PLUGIN, PLUGIN.entry_path(identity.values()), entry, target.storage, rt,
                             before=lambda new, old: note_offset(PLUGIN, new, old, rt), args=args)
    _revoke_quietly(provider, previous.get("refresh_token"), entry.get("refresh_token"))
    claims = entry.get("claims") or {}
    who = claims.get("preferred_username") or claims.get("sub") or (client.client_id if client.grant else "user")
    kubeconfig.upsert(kubeconfig.Entry(
        context=target.context, cluster=contexts.cluster_name_for(target.server), server=target.server,
        user=f"{who}@{target.context}", user_body=contexts.exec_user(PLUGIN, args),
        namespace=target.namespace, certificate_authority_data=target.ca_data),
        explicit_path=kubeconfig_path, force=force, same_user=same_user)
    bearer = entry["tokens"].get(client.bearer) or {}
    mismatch = _issuer_mismatch(entry, client.bearer)
    if mismatch:
        rt.notice(f"kubectl-iam: warning: {mismatch}")
    sub = claims.get("sub", who)
    rt.notice(f"Signed in as {who}{'' if sub == who else f' (sub {sub})'} at {client.issuer}: {client.bearer} token "
              f"valid until {common.describe_expiry(bearer.get('expires_at'))}"
              + ("; renews with IAM_CLIENT_SECRET from kubectl's environment" if client.grant else
                 "; renews with a refresh token" if entry.get("refresh_token") else
                 "; no refresh token (add offline_access to the scope to stay signed in)"))
    rt.notice(f"Context {target.context!r} is ready and now the current context: try `kubectl get pods`")
    print("kubectl configured correctly")


def _issuer_mismatch(entry: Dict[str, Any], kind: str) -> Optional[str]:
    """When an access token is the bearer and its `iss` is not the discovery issuer (INDIGO IAM may
    drop the slash: IAM issue #1118). kube-apiserver skips a token whose `iss` is not its
    issuer.url, and refuses a discovery document that names another issuer than issuer.url, so
    such tokens pass only where the operator serves a discovery document naming the token's."""
    token = (entry.get("tokens") or {}).get(kind) or {}
    issuer = token.get("issuer")
    # (An oidc-agent entry's issuer is the account's spelling, not a discovery document's.)
    if kind != "access" or not issuer or issuer == entry.get("issuer") or entry.get("oidc_agent"):
        return None
    return (f"the access token's issuer is '{issuer}', not the discovery issuer '{entry.get('issuer')}': "
            f"an API server accepts it only when set up for '{issuer}' with a discovery document naming it "
            f"(see the operator guide), else use the ID token (--token id)")


def _revoke_quietly(provider, old: Optional[str], new: Optional[str]) -> None:
    """A new login replaces the previous grant: revoke its refresh token so none is left dangling."""
    if old and old != new:
        try:
            provider.revoke(old)
        except CaasError:
            pass


@app.command()
def status(ctx: typer.Context, context: Optional[str] = options.StatusContext,
           kubeconfig_path: Optional[str] = options.Kubeconfig, debug: bool = options.Debug) -> None:
    """Show, per kubectl-iam context: identity, groups, bearer expiry, and whether a refresh token is held.

    Example: kubectl iam status
    """
    for marker, name, values, entry in common.status_rows(PLUGIN, context, kubeconfig_path, runtime(ctx)):
        if not entry:
            common.result(f"{marker} {name}: {values.get('issuer')}, logged out")
            continue
        claims = entry.get("claims") or {}
        kind = values.get("token") or "id"
        bearer = (entry.get("tokens") or {}).get(kind) or {}
        groups = claims.get("groups") or claims.get("wlcg.groups") or []
        who = claims.get("preferred_username") or (f"service account {values.get('client_id')}"
                                                   if values.get("grant") else "?")
        sub = claims.get("sub", who)
        storage = store.storage_note(PLUGIN, values.get("token_storage"), entry)
        if values.get("oidc_agent"):  # the account's refresh token is the agent's, not ours
            storage = f" by oidc-agent account {values['oidc_agent']}"
            who = sub if who == "?" else who  # an access token need not name a preferred_username
        mismatch = _issuer_mismatch(entry, kind)
        common.result(f"{marker} {name}: {who}{'' if sub == who else f' (sub {sub})'} at "
                      f"{entry.get('issuer')}, groups {', '.join(map(str, groups)) or '-'}, {kind} token "
                      f"{common.describe_expiry(bearer.get('expires_at'))}, refresh token "
                      f"{'held' if entry.get('refresh_token') else 'kept' if values.get('oidc_agent') else 'none'}"
                      f"{storage}"
                      + (f"; warning: {mismatch}" if mismatch else ""))


@app.command()
def logout(
    ctx: typer.Context,
    context: Optional[str] = options.LogoutContext,
    all_: bool = options.logout_all(PLUGIN),
    kubeconfig_path: Optional[str] = options.Kubeconfig,
    debug: bool = options.Debug,
) -> None:
    """Revoke the refresh token at the provider and forget the cached tokens. The kubeconfig entries stay.

    Example: kubectl iam logout --all
    """
    from kubectl_caas import oidc
    from kubectl_caas.oidc import registration

    rt = runtime(ctx)
    _merged, chosen = contexts.plugin_contexts(PLUGIN, context, all_, kubeconfig_path)
    if not chosen:
        rt.notice("No kubectl-iam contexts: nothing to log out of")
        return
    done = set()
    failures = 0
    ends: Dict[str, Any] = {}  # registration records of these contexts' issuers and accounts
    for name, _body, args in chosen:
        values, path = common.cache_entry_for(PLUGIN, args)
        ends.setdefault(registration.record_path(values.get("issuer") or "", values.get("account")), (name, values))
        if path in done:
            continue
        done.add(path)
        with store.locked(path):
            entry = store.for_logout(PLUGIN, path, name, rt)
            if not entry:
                continue
            refresh_token = entry.get("refresh_token")
            if refresh_token:
                client = oidc.Client.from_values(values)
                secret = entry.get("client_secret") or rt.getenv("IAM_CLIENT_SECRET")
                try:
                    oidc.provider_for(client, rt, secret, entry).revoke(refresh_token)
                    rt.notice(f"{name}: refresh token revoked at {client.issuer}")
                except CaasError as exc:
                    failures += 1
                    rt.notice(f"{name}: could not revoke the refresh token: {exc}")
            store.forget(PLUGIN, path)
            rt.notice(f"{name}: logged out (cache entry removed)" + (
                f"; oidc-agent keeps account {values['oidc_agent']} (`oidc-add -r {values['oidc_agent']}` "
                "unloads it)" if values.get("oidc_agent") else ""))
    problems = _end_registrations(ends, {c[0] for c in chosen}, kubeconfig_path, rt)
    if problems and not failures:
        raise CaasError("; ".join(problems))
    for line in problems:
        rt.notice(line)
    if failures:
        raise CaasError("some refresh tokens could not be revoked (the local copies are deleted anyway)",
                        "retry when the provider is reachable, or revoke them in its web interface")


def _end_registrations(ends: Dict[str, Any], chosen: Set[str], kubeconfig_path: Optional[str], rt: Runtime) -> List[str]:
    """After a logout: delete the clients `login --register` registered for these contexts' issuers
    and accounts, unless a context still signed in uses them. One line per client it could not delete."""
    from kubectl_caas import cache
    from kubectl_caas.oidc import normalise_issuer, registration

    _merged, everyone = contexts.plugin_contexts(PLUGIN, None, True, kubeconfig_path)
    signed_in = []  # (issuer, client id, context) of the other contexts that still hold tokens
    for name, _body, args in everyone:
        try:
            values, path = common.cache_entry_for(PLUGIN, args)
        except CaasError:
            continue
        if name not in chosen and cache.read_entry(path) is not None:
            signed_in.append((normalise_issuer(values.get("issuer") or ""), values.get("client_id"), name))
    problems = []
    for path, (name, values) in ends.items():
        issuer = normalise_issuer(values.get("issuer") or "")
        line = registration.end(path, values, rt, name,
                                lambda cid, i0=issuer: [n for i, c, n in signed_in if (i, c) == (i0, cid)])
        if line:
            problems.append(f"{name}: {line}")
    return problems


def run(argv: List[str], rt: Runtime) -> None:
    run_app(app, PLUGIN, list(argv), rt)

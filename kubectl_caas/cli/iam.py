"""kubectl-iam: sign in to an INDIGO IAM issuer (or any OpenID provider) with a device code and
keep kubectl's token fresh. Thin: options and presentation; the work is in oidc.py and the core."""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, Mapping, Optional

import typer

from kubectl_caas import browser, cache, kubeconfig, secret_store
from kubectl_caas.cli import common
from kubectl_caas.cli.common import say
from kubectl_caas.errors import CaasError, UsageError
from kubectl_caas.settings import Settings

PLUGIN = "iam"
COMMAND = "kubectl-iam"

app = common.new_app(
    "Sign in to INFN's INDIGO IAM (or another OpenID provider) with a device code and configure kubectl.\n\n"
    "kubectl then renews its token by itself through `kubectl-iam get-token`, with the refresh token.\n\n"
    "Example: kubectl iam login --issuer https://iam.cloud.infn.it --client-id my-client"
)
common.add_version_option(app, PLUGIN)
common.add_completion_command(app, PLUGIN)

Issuer = typer.Option(None, "--issuer", help="OpenID issuer [env IAM_ISSUER; default: https://iam.cloud.infn.it]")
ClientId = typer.Option(None, "--client-id", help="OAuth client id [env IAM_CLIENT_ID]")
Scope = typer.Option(None, "--scope", help="scopes [env IAM_SCOPE; default: openid profile email offline_access]")
Audience = typer.Option(None, "--audience", help="audience to request, sent on every token request [env IAM_AUDIENCE]")
TokenKind = typer.Option(None, "--token", help="bearer for kubectl: id (ID token, the default) or access [env IAM_TOKEN]")
CaCert = typer.Option(None, "--cacert", help="CA bundle for the issuer [env IAM_CACERT]")
Profile = typer.Option(None, "--profile", help="site profile with defaults [env KUBECTL_CAAS_PROFILE; default: infn-iam]")
Kubeconfig = typer.Option(None, "--kubeconfig", help="kubeconfig file to use [default: KUBECONFIG, ~/.kube/config]")
Debug = typer.Option(False, "--debug", help="print each HTTP request and answer to stderr, secrets redacted")


def _client(settings: Settings, secret: Optional[str]):
    from kubectl_caas.oidc import DEFAULT_SCOPE, Client

    issuer = settings.get("issuer", ["IAM_ISSUER"])
    if not issuer:
        raise UsageError("no issuer", "pass --issuer URL or set IAM_ISSUER")
    issuer_profile = _issuer_profile(settings, issuer)
    client_id = settings.get("client_id", ["IAM_CLIENT_ID"]) or issuer_profile.get("client_id")
    if not client_id:
        raise UsageError(f"no OAuth client id for {issuer}", settings.hint("client_id")
                         or "pass --client-id or set IAM_CLIENT_ID")
    return Client(issuer=issuer, client_id=client_id,
                  scope=settings.get("scope", ["IAM_SCOPE"]) or issuer_profile.get("scope") or DEFAULT_SCOPE,
                  audience=settings.get("audience", ["IAM_AUDIENCE"]) or issuer_profile.get("audience"),
                  cacert=settings.get("cacert", ["IAM_CACERT"]), client_secret=secret,
                  token_kind=settings.get("token", ["IAM_TOKEN"], "id"))


def _issuer_profile(settings: Settings, issuer: str) -> Dict[str, Any]:
    """Per-issuer settings: the site profile's, with the config file's `iam: issuers:` on top."""
    from kubectl_caas.oidc import normalise_issuer

    merged: Dict[str, Any] = {}
    for source in (settings.profile.get("issuers") or {}, settings.config.get("issuers") or {}):
        for url, values in source.items():
            if normalise_issuer(url) == normalise_issuer(issuer) and isinstance(values, dict):
                merged.update(values)
    return merged


def _context_name(settings: Settings, issuer: str, host: str) -> str:
    import re

    name = _issuer_profile(settings, issuer).get("name")
    return name or "iam-" + re.sub(r"[^A-Za-z0-9.-]+", "-", host)


@app.command()
def login(
    issuer: Optional[str] = Issuer, client_id: Optional[str] = ClientId,
    client_secret_stdin: bool = typer.Option(False, "--client-secret-stdin",
                                             help="read the client secret from standard input [env IAM_CLIENT_SECRET]"),
    scope: Optional[str] = Scope, audience: Optional[str] = Audience, token: Optional[str] = TokenKind,
    cacert: Optional[str] = CaCert, profile: Optional[str] = Profile,
    server: Optional[str] = typer.Option(None, "--server", help="Kubernetes API server URL [env CAAS_SERVER]"),
    certificate_authority: Optional[str] = typer.Option(
        None, "--certificate-authority", help="CA bundle of the API server [env CAAS_CERTIFICATE_AUTHORITY]"),
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context name [default: from the issuer]"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="namespace of the context"),
    kubeconfig_path: Optional[str] = Kubeconfig,
    force: bool = typer.Option(False, "--force", "-f", help="overwrite a context of the same name that points elsewhere"),
    no_browser: bool = typer.Option(False, "--no-browser", help="only print the link and the code"),
    token_storage: Optional[str] = typer.Option(None, "--token-storage", help=common.TOKEN_STORAGE_HELP),
    debug: bool = Debug,
) -> None:
    """Sign in with a device code (shown here; approve it in any browser) and configure kubectl.

    Example: kubectl iam login --client-id my-client --server https://caas.example.org:6443
    """
    common.enable_debug(debug)
    from kubectl_caas import oidc

    secret = common.read_secret_stdin("client-secret") if client_secret_stdin else os.environ.get("IAM_CLIENT_SECRET")
    flags = dict(issuer=issuer, client_id=client_id, scope=scope, audience=audience, token=token, cacert=cacert,
                 server=server, certificate_authority=certificate_authority)
    settings = Settings.load(PLUGIN, flags, profile)
    client = _client(settings, secret)
    server_url = common.require_https_server(settings.get("server", ["CAAS_SERVER"]), settings.hint("server"))
    ca_data = common.read_ca_data(settings.get("certificate_authority", ["CAAS_CERTIFICATE_AUTHORITY"]))
    context_name = context or _context_name(settings, client.issuer, client.host)
    namespace = common.check_namespace(namespace or settings.config.get("namespace"))
    same_user = common.same_exec_identity(PLUGIN, {"issuer": client.issuer, "client-id": client.client_id})
    # Refuse a broken kubeconfig or a conflicting context before the person spends time in the browser.
    kubeconfig.check_before_login(context_name, server_url, same_user, kubeconfig_path, force)

    provider = oidc.Provider(client)

    def announce(device: Mapping[str, Any]) -> None:
        oidc.announce_on_stderr(device)
        target = device.get("verification_uri_complete") or device["verification_uri"]
        if not no_browser and browser.open_url(str(target)):
            say("(opened it in your browser)")

    storage = common.token_storage(token_storage)
    entry = oidc.device_login(provider, announce)
    args = common.login_args(client.exec_args(), storage)
    previous = common.store_login(PLUGIN, args, entry, storage)
    _revoke_quietly(provider, previous.get("refresh_token"), entry.get("refresh_token"))
    claims = entry.get("claims") or {}
    who = claims.get("preferred_username") or claims.get("sub") or "user"
    kubeconfig.upsert(kubeconfig.Entry(
        context=context_name, cluster=common.cluster_name_for(server_url), server=server_url,
        user=f"{who}@{context_name}",
        user_body=common.exec_user(PLUGIN, args),
        namespace=namespace, certificate_authority_data=ca_data),
        explicit_path=kubeconfig_path, force=force, same_user=same_user)
    bearer = entry["tokens"].get(client.token_kind) or {}
    sub = claims.get("sub", "?")
    say(f"Signed in as {who}{'' if sub == who else f' (sub {sub})'} at {client.issuer}: {client.token_kind} token valid until "
        f"{common.describe_expiry(bearer.get('expires_at'))}"
        + ("; renews with a refresh token" if entry.get("refresh_token") else
           "; no refresh token (add offline_access to the scope to stay signed in)"))
    say(f"Context {context_name!r} is ready and now the current context: try `kubectl get pods`")
    print("kubectl configured correctly")


def _revoke_quietly(provider, old: Optional[str], new: Optional[str]) -> None:
    """A new login replaces the previous grant: revoke its refresh token so none is left dangling."""
    if old and old != new:
        try:
            provider.revoke(old)
        except CaasError:
            pass


common.add_get_token_command(app, PLUGIN)


@app.command()
def status(
    context: Optional[str] = typer.Option(None, "--context", help="only this context"),
    kubeconfig_path: Optional[str] = Kubeconfig,
    debug: bool = Debug,
) -> None:
    """Show, per kubectl-iam context: identity, groups, bearer expiry, and whether a refresh token is held.

    Example: kubectl iam status
    """
    for marker, name, options, entry in common.status_rows(PLUGIN, context, kubeconfig_path, debug):
        if not entry:
            common.result(f"{marker} {name}: {options.get('issuer')}, logged out")
            continue
        claims = entry.get("claims") or {}
        kind = options.get("token") or "id"
        bearer = (entry.get("tokens") or {}).get(kind) or {}
        groups = claims.get("groups") or claims.get("wlcg.groups") or []
        who, sub = claims.get("preferred_username", "?"), claims.get("sub", "?")
        storage = secret_store.storage_note(PLUGIN, options.get("token-storage"), entry)
        common.result(f"{marker} {name}: {who}{'' if sub == who else f' (sub {sub})'} at "
                      f"{entry.get('issuer')}, groups {', '.join(map(str, groups)) or '-'}, {kind} token "
                      f"{common.describe_expiry(bearer.get('expires_at'))}, refresh token "
                      f"{'held' if entry.get('refresh_token') else 'none'}{storage}")


@app.command()
def logout(
    context: Optional[str] = typer.Option(None, "--context", help="log out of this context [default: current]"),
    all_: bool = typer.Option(False, "--all", help="log out of every kubectl-iam context"),
    kubeconfig_path: Optional[str] = Kubeconfig,
    debug: bool = Debug,
) -> None:
    """Revoke the refresh token at the provider and forget the cached tokens. The kubeconfig entries stay.

    Example: kubectl iam logout --all
    """
    common.enable_debug(debug)
    from kubectl_caas import oidc

    _merged, chosen = common.plugin_contexts(PLUGIN, context, all_, kubeconfig_path)
    if not chosen:
        say("No kubectl-iam contexts: nothing to log out of")
        return
    done = set()
    failures = 0
    for name, _body, args in chosen:
        options, path, _entry = common.cache_entry_for(PLUGIN, args)
        if path in done:
            continue
        done.add(path)
        with cache.EntryLock(path):
            entry = secret_store.load(PLUGIN, path, common.entry_for_logout(PLUGIN, path, name))
            if not entry:
                continue
            refresh_token = entry.get("refresh_token")
            if refresh_token:
                client = oidc.Client.from_options(options, entry.get("client_secret") or os.environ.get("IAM_CLIENT_SECRET"))
                try:
                    oidc.provider_for(client, entry).revoke(refresh_token)
                    say(f"{name}: refresh token revoked at {client.issuer}")
                except CaasError as exc:
                    failures += 1
                    say(f"{name}: could not revoke the refresh token: {exc}")
            secret_store.forget(PLUGIN, path)
            say(f"{name}: logged out (cache entry removed)")
    if failures:
        raise CaasError("some refresh tokens could not be revoked (the local copies are deleted anyway)",
                        "retry when the provider is reachable, or revoke them in its web interface")


def run(argv) -> None:
    common.run_app(app, PLUGIN, list(argv))


if __name__ == "__main__":  # pragma: no cover
    run(sys.argv[1:])

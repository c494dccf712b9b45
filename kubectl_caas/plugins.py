"""The two plugins as records: what each is called, who it logs in (its identity table), which
modules serve it, and the words its messages use. Nothing else in kubectl_caas asks "which plugin
is this?": it reads the record.

Standard library only: get-token looks its plugin up here on every kubectl command.
"""
from __future__ import annotations

from kubectl_caas.identity import Option

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional, Tuple


TOKEN_STORAGE = Option("token-storage", "where long-term secrets are kept: disk (the 0600 token cache) or keyring "
                       "(the OS keyring; falls back to disk when there is none)", env=("KUBECTL_CAAS_TOKEN_STORAGE",))

OPENSTACK_OPTIONS = (
    Option("auth-url", "Keystone URL", env=("OS_AUTH_URL",), key=True, person=True),
    Option("user", "user name", env=("OS_USERNAME",), key=True, person=True, short="-u", pair="user_id"),
    Option("user-id", "user id instead of the name", env=("OS_USER_ID",), key=True, person=True, pair="user"),
    Option("user-domain", "user's domain name [default: default]", env=("OS_USER_DOMAIN_NAME",), key=True),
    Option("user-domain-id", "user's domain id", env=("OS_USER_DOMAIN_ID",), key=True),
    Option("project", "project name", env=("OS_PROJECT_NAME", "OS_TENANT_NAME"), key=True, short="-p",
           pair="project_id"),
    Option("project-id", "project id (wins over the name, as in every OpenStack tool)",
           env=("OS_PROJECT_ID", "OS_TENANT_ID"), key=True, pair="project"),
    Option("project-domain", "project's domain name [default: default]", env=("OS_PROJECT_DOMAIN_NAME",), key=True),
    Option("project-domain-id", "project's domain id", env=("OS_PROJECT_DOMAIN_ID",), key=True),
    Option("application-credential-id", "log in with this application credential; its secret from "
           "OS_APPLICATION_CREDENTIAL_SECRET, clouds.yaml, --application-credential-secret-stdin or a prompt",
           env=("OS_APPLICATION_CREDENTIAL_ID",), key=True, person=True, renewal=True),
    Option("os-cloud", "take settings from this clouds.yaml entry", env=("OS_CLOUD",)),
    Option("cacert", "CA bundle for Keystone", env=("OS_CACERT",)),
    # SSO (login --sso): an OpenID sign-in exchanged at Keystone's federation endpoint. Used only
    # with --sso, so that IAM_* variables set for kubectl-iam never change a password login.
    Option("identity-provider", "SSO: the identity provider's name at Keystone [cloudveneto: infn-cc]",
           env=("OS_IDENTITY_PROVIDER",), key=True, person=True),
    Option("protocol", "SSO: the federation protocol at Keystone [cloudveneto: openid]", env=("OS_PROTOCOL",),
           key=True),
    Option("issuer", "SSO: the OpenID issuer you sign in at [cloudveneto: https://iam.cloud.infn.it]",
           env=("IAM_ISSUER",), key=True, person=True),
    Option("client-id", "SSO: the OAuth client id at the issuer", env=("IAM_CLIENT_ID",), key=True, person=True),
    Option("audience", "SSO: the audience Keystone's web server requires in the access token",
           env=("IAM_AUDIENCE",), key=True),
    Option("issuer-cacert", "SSO: CA bundle for the issuer", env=("IAM_CACERT",)),
    TOKEN_STORAGE,
    Option("application-credential-name", "an application credential by name (with --user)",
           env=("OS_APPLICATION_CREDENTIAL_NAME",), login_only=True, renewal=True),
    Option("auth-type", "password (v3password) or v3applicationcredential", env=("OS_AUTH_TYPE",), login_only=True),
    Option("password", "the password on the command line (visible in ps and shell history)", env=("OS_PASSWORD",),
           secret=True, renewal=True, hidden=True),
    Option("application-credential-secret", "the application credential's secret",
           env=("OS_APPLICATION_CREDENTIAL_SECRET",), secret=True, renewal=True, hidden=True),
    Option("passcode", "a one-time passcode (TOTP) when Keystone asks for one", env=("OS_PASSCODE",), secret=True,
           renewal=True, hidden=True),
)

IAM_OPTIONS = (
    Option("issuer", "OpenID issuer [default: https://iam.cloud.infn.it]", env=("IAM_ISSUER",), key=True, person=True),
    Option("client-id", "OAuth client id", env=("IAM_CLIENT_ID",), key=True, person=True),
    Option("scope", "scopes [default: openid profile email offline_access]", env=("IAM_SCOPE",), key=True),
    Option("audience", "audience to request, sent on every token request", env=("IAM_AUDIENCE",), key=True),
    Option("token", "bearer for kubectl: id (ID token, the default) or access", env=("IAM_TOKEN",)),
    # A service account (CI, services): no person, the client's own access token.
    Option("grant", "client-credentials: a service account's token, renewed with IAM_CLIENT_SECRET from the "
           "environment [default: a person signs in]", env=("IAM_GRANT",), key=True, person=True),
    # The person's own oidc-agent (its socket from OIDC_SOCK) hands out the tokens: no sign-in here.
    Option("oidc-agent", "take access tokens from this oidc-agent account (made with oidc-gen) instead of signing "
           "in here", env=("IAM_OIDC_AGENT",), key=True, person=True),
    # Several people (a personal and a service account, say) at one issuer with one client: each
    # context's login gets its own cache entry.
    Option("account", "a label for this sign-in, so that several can live side by side at one issuer and client "
           "[default: the --context name, when one is given]", env=("IAM_ACCOUNT",), key=True),
    Option("cacert", "CA bundle for the issuer", env=("IAM_CACERT",)),
    TOKEN_STORAGE,
    Option("client-secret", "the OAuth client's secret", env=("IAM_CLIENT_SECRET",), secret=True, renewal=True,
           hidden=True),
)


class Plugin:
    """One plugin. `backend` and `cli` are module names, imported only by whoever needs them (the
    get-token hit imports neither). `bearers`: the kinds of token it can hand kubectl, the first
    the default; `bearer_option`: the option that chooses one, if any."""

    __slots__ = ("name", "command", "options", "backend", "cli", "default_profile", "service", "server_option",
                 "bearers", "bearer_option", "long_term_secrets", "renew_sources", "example", "renewal_environment")

    def __init__(self, name: str, options: Tuple[Option, ...], backend: str, cli: str, default_profile: str,
                 service: str, server_option: str, bearers: Tuple[str, ...], bearer_option: Optional[str],
                 long_term_secrets: Tuple[Tuple[str, ...], ...], renew_sources: str, example: str,
                 renewal_variables: Tuple[str, ...] = ()):
        self.name = name
        self.command = f"kubectl-{name}"
        self.options = options
        self.backend = backend
        self.cli = cli
        self.default_profile = default_profile
        self.service = service
        self.server_option = server_option
        self.bearers = bearers
        self.bearer_option = bearer_option
        self.long_term_secrets = long_term_secrets
        self.renew_sources = renew_sources
        self.example = example
        # What a silent renewal reads besides the exec args (get-token --help lists them): the
        # options' variables, and those of whatever else it talks to (`renewal_variables`).
        self.renewal_environment = (*(name for o in options if o.renewal for name in o.env), *renewal_variables)

    def __repr__(self) -> str:
        return f"Plugin({self.name!r})"

    def entry_path(self, values: Mapping[str, str]) -> str:
        """The cache entry these get-token values name."""
        from kubectl_caas import cache
        from kubectl_caas.identity import cache_fields

        return cache.entry_path(self.name, cache_fields(self.options, values))

    def bearer(self, values: Mapping[str, str]) -> str:
        """Which token kubectl gets, from get-token's values."""
        if self.bearer_option is None:
            return self.bearers[0]
        kind = values.get(self.bearer_option) or self.bearers[0]
        if kind not in self.bearers:
            from kubectl_caas.errors import UsageError

            raise UsageError(f"get-token: --{self.bearer_option} must be "
                             f"{' or '.join(repr(b) for b in self.bearers)}, not {kind!r}")
        return kind


OPENSTACK = Plugin(
    "openstack", OPENSTACK_OPTIONS, backend="kubectl_caas.keystone", cli="kubectl_caas.cli.openstack",
    default_profile="cloudveneto", service="Keystone", server_option="auth_url", bearers=("keystone",),
    bearer_option=None, long_term_secrets=(("application_credential", "secret"), ("sso", "refresh_token")),
    renew_sources="remembered application credential, OS_APPLICATION_CREDENTIAL_ID/_SECRET, the clouds.yaml "
                  "entry used at login, OS_PASSWORD",
    example="--auth-url https://keystone.example.org:5000/v3 --user alice --project CMS")

IAM = Plugin(
    "iam", IAM_OPTIONS, backend="kubectl_caas.oidc", cli="kubectl_caas.cli.iam", default_profile="infn-iam",
    service="the OIDC provider", server_option="issuer", bearers=("id", "access"), bearer_option="token",
    long_term_secrets=(("refresh_token",), ("client_secret",)),
    renew_sources="refresh token, or oidc-agent for a context made with --oidc-agent",
    example="--issuer https://iam.cloud.infn.it --client-id my-client",
    renewal_variables=("OIDC_SOCK",))  # the oidc-agent's socket, for --oidc-agent contexts

PLUGINS: Dict[str, Plugin] = {p.name: p for p in (OPENSTACK, IAM)}

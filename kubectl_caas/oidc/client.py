"""The OIDC client kubectl-iam signs in as: an issuer, a client id and the settings that shape
its tokens (scope, audience, which token kubectl gets, a CA bundle).

Its fields come from the plugin's option table (plugins.IAM_OPTIONS, made into a frozen
dataclass by identity.identity_type); this module gives them their meaning and their checks. It
holds no secret and talks to no server, so the CLI can build and compare clients before anything
goes over the network.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping
from urllib.parse import urlsplit

from kubectl_caas import http
from kubectl_caas.errors import UsageError
from kubectl_caas.identity import identity_type, to_args
from kubectl_caas.plugins import IAM_OPTIONS

DEFAULT_SCOPE = "openid profile email offline_access"


def normalise_issuer(issuer: str) -> str:
    """Compare issuers without the trailing slash INDIGO IAM writes; nothing else is forgiven."""
    return issuer.strip().rstrip("/")


def check_issuer_url(issuer: str) -> None:
    """Refuse an issuer that is not https (plain http passes only on loopback)."""
    if http.is_secure_url(issuer):
        return
    if urlsplit(issuer).scheme == "http":
        raise UsageError(f"refusing issuer {issuer}: plain http is allowed only on loopback",
                         "use the issuer's https:// URL")
    raise UsageError(f"the issuer {issuer!r} is not an https:// URL")


class _ClientMeaning:
    """What an OIDC client identity's fields mean. A default is stored as None, so that the exec
    args and the cache key of a login that spells out a default stay those of one that does not;
    `scopes` and `bearer` give the values in force."""

    def __post_init__(self) -> None:
        put = object.__setattr__  # the dataclass is frozen: settle the fields once, here
        if not self.issuer or not (self.client_id or self.oidc_agent):
            raise UsageError("an OIDC login needs an issuer and a client id", "pass --issuer and --client-id")
        # One spelling wherever we write it (kubeconfig args, cache key). The exact form the
        # provider uses, which its ID tokens must carry, comes later from its discovery document.
        put(self, "issuer", normalise_issuer(self.issuer))
        check_issuer_url(self.issuer)
        if self.scope == DEFAULT_SCOPE:
            put(self, "scope", None)
        if self.grant not in (None, "", "client-credentials"):
            raise UsageError(f"--grant must be 'client-credentials', not {self.grant!r}")
        if self.grant:
            # A service account has no person and so no ID token: kubectl gets the access token
            # (written into the exec args, where get-token's cache hit reads it).
            if self.token not in (None, "access"):
                raise UsageError("a service account (--client-credentials) has only an access token",
                                 "leave out --token id")
            put(self, "token", "access")
        if self.oidc_agent:
            _settle_oidc_agent(self, put)
        if self.token == "id":
            put(self, "token", None)
        if self.bearer not in ("id", "access"):
            raise UsageError(f"--token must be 'id' or 'access', not {self.bearer!r}")
        if self.bearer == "id" and "openid" not in self.scopes.split():
            raise UsageError("the ID token is the bearer but the scope lacks `openid`",
                             "add openid to --scope, or use --token access")
        if self.cacert:
            put(self, "cacert", os.path.abspath(os.path.expanduser(self.cacert)))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Client":
        """From get-token's values (the exec args login wrote), or any mapping of field names."""
        if not values.get("issuer") or not (values.get("client_id") or values.get("oidc_agent")):
            raise UsageError("get-token needs --issuer and --client-id", "run `kubectl iam login` again")
        return cls(**{f: values.get(f) for f in cls.__dataclass_fields__})

    def values(self) -> Dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def exec_args(self) -> List[str]:
        return to_args(IAM_OPTIONS, self.values())

    @property
    def scopes(self) -> str:
        return self.scope or DEFAULT_SCOPE

    @property
    def bearer(self) -> str:
        """Which token kubectl gets: id (the ID token) or access."""
        return self.token or "id"

    @property
    def host(self) -> str:
        return urlsplit(self.issuer).netloc


def _settle_oidc_agent(client: Any, put: Any) -> None:
    """An oidc-agent account (oidc/agent.py) brings its own client, and the agent hands out access
    tokens only: kubectl gets the access token (written into the exec args, where get-token's
    cache hit reads it)."""
    name = client.oidc_agent
    if not name.isprintable() or name.startswith("-") or "/" in name or len(name) > 256:
        raise UsageError(f"{name!r} is not an oidc-agent account name", "`oidc-add -l` lists your accounts")
    if client.grant:
        raise UsageError("--oidc-agent and --client-credentials are two different sign-ins", "pass one of them")
    if client.token not in (None, "access"):
        raise UsageError("oidc-agent hands out access tokens only", "leave out --token id")
    put(client, "token", "access")


# One OIDC client at one issuer: every non-secret setting (frozen); its secret travels apart.
Client = identity_type("Client", IAM_OPTIONS, _ClientMeaning)

"""Who logs in to Keystone, and where: the Identity type.

Its fields come from the plugin's option table (plugins.OPENSTACK_OPTIONS, through
identity.identity_type); this module gives them their meaning: the Keystone URL's v3 root, the
default domains, and the user and scope fields keystoneauth1 takes. Kept apart from the
connection so that the CLIs can build and compare identities without a session.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from kubectl_caas.errors import UsageError
from kubectl_caas.identity import identity_type, to_args
from kubectl_caas.plugins import OPENSTACK_OPTIONS

DEFAULT_DOMAIN = "default"


def normalise_auth_url(url: str) -> str:
    """Keystone's v3 root. OS_AUTH_URL is often given without /v3, or with the retired /v2.0."""
    url = url.strip().rstrip("/")
    if url.endswith("/v2.0"):
        url = url[: -len("/v2.0")]
    if not url.endswith("/v3"):
        url += "/v3"
    return url


class _IdentityMeaning:
    """What the Keystone identity's fields mean (the fields themselves come from the plugin's
    option table: see identity.identity_type and plugins.OPENSTACK_OPTIONS)."""

    def __post_init__(self) -> None:
        # Frozen: the normalised values are set once, here.
        put = object.__setattr__
        if not self.auth_url:
            raise UsageError("no Keystone URL", "pass --auth-url or set OS_AUTH_URL")
        put(self, "auth_url", normalise_auth_url(self.auth_url))
        if not (self.user_domain or self.user_domain_id):
            put(self, "user_domain_id", DEFAULT_DOMAIN)
        if not (self.project_domain or self.project_domain_id):
            put(self, "project_domain_id", DEFAULT_DOMAIN)
        if self.cacert:
            put(self, "cacert", os.path.abspath(os.path.expanduser(self.cacert)))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Identity":
        """From get-token's values (the exec args login wrote), or any mapping of field names."""
        if not values.get("auth_url"):
            raise UsageError("get-token needs --auth-url", "run `kubectl openstack login` again")
        return cls(**{f: values.get(f) for f in cls.__dataclass_fields__})

    def values(self) -> Dict[str, Any]:
        """The fields as get-token's values, only what says something: the user's domain name, when
        given, makes its id redundant (and the same for the project)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if self.user_domain:
            values["user_domain_id"] = None
        if self.project_domain:
            values["project_domain_id"] = None
        return values

    def exec_args(self) -> List[str]:
        """get-token's arguments: enough to find the cache entry and log in again, no secret."""
        return to_args(OPENSTACK_OPTIONS, self.values())

    @property
    def who(self) -> str:
        domain = self.user_domain or self.user_domain_id
        return f"user {self.user or self.user_id} in domain {domain}"

    @property
    def project_label(self) -> str:
        return self.project or self.project_id or "?"

    def scope(self) -> Dict[str, Optional[str]]:
        # By id whenever there is one, as keystoneauth1 (and so every OpenStack tool) does: a
        # dashboard's clouds.yaml names both, and the name alone may be ambiguous across domains.
        if self.project_id:
            return {"project_id": self.project_id}
        return {"project_name": self.project, "project_domain_name": self.project_domain,
                "project_domain_id": None if self.project_domain else self.project_domain_id}

    def user_fields(self) -> Dict[str, Optional[str]]:
        # By id when there is one, as keystoneauth1 does; a name needs its domain.
        if self.user_id:
            return {"user_id": self.user_id}
        return {"username": self.user, "user_domain_name": self.user_domain,
                "user_domain_id": None if self.user_domain else self.user_domain_id}


# Who logs in, where: every non-secret setting needed to authenticate again (frozen).
Identity = identity_type("Identity", OPENSTACK_OPTIONS, _IdentityMeaning)

"""pytest fixtures for the real federated Keystone (Keystone 30 under Apache with mod_oauth2 on
the federation auth path; see tests/servers/keystone_federation.py).

- ``federated_keystone_venv``: the Debian packages and the venv, made once per machine (under a
  file lock, so pytest-xdist workers build it once); skips with the reason when the Debian
  packages cannot be installed (not root, no apt-get, no archive).
- ``federated_keystone_factory(provider, audience=FEDERATION_AUDIENCE, app_credentials=True,
  **options)``: a :class:`FederatedKeystone` trusting that OpenID provider (its issuer, jwks_uri
  and CA), started once per session for each set of arguments and stopped at session end.
- ``federated_keystone``: the factory's instance for the session's ``oidc_provider``, with
  application credentials enabled.

Each instance is shared by the tests of the session: create projects and map groups with unique
names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.keystone_federation import (
    FederatedKeystone,
    ensure_debian_packages,
    ensure_venv,
)

__all__ = ["FEDERATION_AUDIENCE", "federated_keystone_venv", "federated_keystone_factory", "federated_keystone"]

# The audience the federation path requires of access tokens (kubectl-iam asks IAM for it).
FEDERATION_AUDIENCE = "keystone"


@pytest.fixture(scope="session")
def federated_keystone_venv() -> Path:
    failure = ensure_debian_packages()
    if failure:
        pytest.skip(f"federated Keystone needs Debian packages: {failure}")
    return ensure_venv()


@pytest.fixture(scope="session")
def federated_keystone_factory(federated_keystone_venv: Path, pki: Any) -> Iterator[Callable[..., FederatedKeystone]]:
    started: dict[tuple[Any, ...], FederatedKeystone] = {}

    def factory(provider: Any, audience: str = FEDERATION_AUDIENCE, app_credentials: bool = True,
                **options: Any) -> FederatedKeystone:
        key = (id(provider), provider.issuer, audience, app_credentials, tuple(sorted(options.items())))
        if key not in started:
            keystone = FederatedKeystone(pki, provider.issuer, provider.discovery()["jwks_uri"], audience,
                                         provider.ca_cert, app_credentials=app_credentials,
                                         venv=federated_keystone_venv, **options)
            started[key] = keystone.start()
        return started[key]

    yield factory
    for keystone in reversed(list(started.values())):
        keystone.stop()


@pytest.fixture(scope="session")
def federated_keystone(
    federated_keystone_factory: Callable[..., FederatedKeystone], oidc_provider: Any
) -> FederatedKeystone:
    return federated_keystone_factory(oidc_provider)

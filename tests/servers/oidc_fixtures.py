"""pytest fixtures for the real test OpenID provider.

Load with ``pytest_plugins = ["tests.servers.oidc_fixtures"]`` in a conftest.

- ``oidc_pki``: a CA and a 127.0.0.1 server certificate (session-scoped).
- ``oidc_provider``: one provider for the session with default lifetimes, IAM-like (it behaves
  as INDIGO IAM does; see tests/servers/oidc/provider.mjs).
- ``oidc_provider_factory(**options)``: more providers with other options (see
  :class:`tests.servers.oidc_provider.OIDCProvider`, e.g. ``id_token_ttl=20``,
  ``device_code_ttl=3``, ``rotate_refresh_tokens="never"``, ``iam_like=False`` for plain
  oidc-provider behaviour); all stopped at session end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.oidc_provider import OIDCProvider
from tests.servers.tls import make_pki


@pytest.fixture(scope="session")
def oidc_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("oidc-pki"))


@pytest.fixture(scope="session")
def oidc_provider_factory(oidc_pki: Any) -> Iterator[Callable[..., OIDCProvider]]:
    started: list[OIDCProvider] = []

    def factory(**options: Any) -> OIDCProvider:
        options.setdefault("pki", oidc_pki)
        provider = OIDCProvider(**options).start()
        started.append(provider)
        return provider

    yield factory
    for provider in reversed(started):
        provider.stop()


@pytest.fixture(scope="session")
def oidc_provider(oidc_provider_factory: Callable[..., OIDCProvider]) -> OIDCProvider:
    return oidc_provider_factory()

"""pytest fixtures for the real Keystone: ``pki``, ``keystone_venv``, ``keystone_template``,
``keystone`` and ``keystone_factory``.

Load them with ``pytest_plugins = ["tests.servers.keystone_fixtures"]`` in a conftest.
Nothing here skips: if the Keystone venv cannot be built, the tests that need it error out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.keystone import (
    KeystoneFactory,
    KeystoneServer,
    KeystoneTemplate,
    build_keystone_template,
    keystone_venv_from_env,
)
from tests.servers.tls import PKI, make_pki

__all__ = ["pki", "keystone_venv", "keystone_template", "keystone", "keystone_factory"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """The test CA and a server certificate for 127.0.0.1 (shared by all test servers)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def keystone_venv() -> Path:
    """Python of the Keystone virtualenv: $KEYSTONE_VENV, else .cache/keystone-venv (built if missing)."""
    return keystone_venv_from_env()


@pytest.fixture(scope="session")
def keystone_template(keystone_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> KeystoneTemplate:
    """Database and keys bootstrapped once per session; each instance starts from a copy."""
    return build_keystone_template(keystone_venv, tmp_path_factory.mktemp("keystone-template"))


@pytest.fixture(scope="session")
def keystone(
    keystone_template: KeystoneTemplate, pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeystoneServer]:
    """One Keystone for the session, with the default 1 h tokens. Shared state: tests should
    create their own users/projects with unique names and call clear_requests() before counting."""
    with KeystoneServer(keystone_template, pki, tmp_path_factory.mktemp("keystone")) as server:
        yield server


@pytest.fixture
def keystone_factory(
    keystone_template: KeystoneTemplate, pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeystoneFactory]:
    """``keystone_factory(expiration=20, policy={...}, extra_config={...})`` starts an extra
    instance; all of them are stopped when the test ends."""
    factory = KeystoneFactory(keystone_template, pki, tmp_path_factory.mktemp("keystone-extra"))
    try:
        yield factory
    finally:
        factory.close()

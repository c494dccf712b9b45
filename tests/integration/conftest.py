"""Fixtures for the integration tests."""

from tests.servers.keystone_fixtures import *  # noqa: F401,F403

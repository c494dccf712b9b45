"""Test-wide fixtures: the real servers the integration tests run against."""

pytest_plugins = ["tests.servers.keystone_fixtures", "tests.servers.oidc_fixtures", "tests.servers.keystone_federation_fixtures"]

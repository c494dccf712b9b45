"""Fixtures for the integration tests."""


import pytest  # noqa: E402

from tests.integration.harness import Workspace  # noqa: E402
from tests.servers.kube_api import KubeAPIStandIn  # noqa: E402


@pytest.fixture
def workspace(tmp_path):
    return Workspace(tmp_path / "ws")


@pytest.fixture
def kube_api_for(pki):
    """kube_api_for(keystone) starts a Kubernetes-API stand-in that validates against that Keystone."""
    started = []

    def start(keystone=None, oidc=None):
        standin = KubeAPIStandIn(pki.server_cert, pki.server_key, ca_cert=pki.ca_cert,
                                 keystone_url=keystone.url if keystone else None,
                                 keystone_ca=keystone.ca_cert if keystone else None, oidc=oidc)
        standin.start()
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()

"""Fixtures for the integration tests."""


import pytest  # noqa: E402

from tests.integration.harness import Workspace, unique, PASSWORD  # noqa: E402
from tests.servers.kube_api import KubeAPIStandIn, OIDCIssuerConfig  # noqa: E402


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


@pytest.fixture
def iam_site(kube_api_for, workspace: Workspace):
    """kubectl-iam configured for a provider, and an API stand-in trusting that provider."""
    def configure(provider):
        standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=provider.issuer, audience=provider.client_id,
                                                      ca_file=provider.ca_cert)])
        workspace.env.update({"IAM_ISSUER": provider.issuer, "IAM_CLIENT_ID": provider.client_id,
                              "IAM_CACERT": str(provider.ca_cert), "CAAS_SERVER": standin.url,
                              "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
        for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
            workspace.env.pop(desktop, None)
        return standin
    return configure


@pytest.fixture
def fast_provider(oidc_provider_factory):
    """Sends a 1 s polling interval, so each sign-in takes about a second."""
    return oidc_provider_factory(device_interval=1)


@pytest.fixture(scope="session")
def projects(keystone):
    """CMS and ATLAS exist once per Keystone; each test adds its own users to them."""
    return {name: keystone.create_project(name) for name in ("CMS", "ATLAS")}


@pytest.fixture
def alice(keystone, projects):
    name = unique("alice")
    user_id = keystone.create_user(name, PASSWORD, projects=projects.values())
    return {"name": name, "id": user_id}


@pytest.fixture
def site(keystone, kube_api_for, workspace: Workspace):
    """The environment a CloudVeneto user's RC file and site config would give."""
    standin = kube_api_for(keystone)
    workspace.env.update({
        "OS_AUTH_URL": keystone.url, "OS_CACERT": str(keystone.ca_cert),
        "CAAS_SERVER": standin.url, "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert),
    })
    return standin

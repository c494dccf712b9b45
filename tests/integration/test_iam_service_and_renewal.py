"""kubectl-iam for service accounts (the client credentials grant) and forced renewal, end to end
with the IAM-like test provider, real kubectl and the Kubernetes-API stand-in.

A service account's secret is read from IAM_CLIENT_SECRET at login and at every renewal and is
written nowhere; a forced renewal gives kubectl a token with the groups the account has now.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.harness import exec_credential, run_with_person
from tests.servers.kube_api import OIDCIssuerConfig

NOT_INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                              "spec": {"interactive": False}})


@pytest.fixture
def iam(oidc_provider_factory):
    return oidc_provider_factory(device_interval=1)


def trust(kube_api_for, workspace, provider, audience):
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=provider.issuer, audience=audience,
                                                  ca_file=provider.ca_cert)])
    workspace.env.update({"IAM_ISSUER": provider.issuer, "IAM_CACERT": str(provider.ca_cert),
                          "CAAS_SERVER": standin.url, "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
        workspace.env.pop(desktop, None)
    return standin


def age(workspace, kind):
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    entry["tokens"][kind]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(entry))


def exec_args(workspace):
    return workspace.config()["users"][0]["user"]["exec"]["args"]


# -- service accounts ----------------------------------------------------------------------------

def test_service_account_gets_in_renews_from_the_environment_and_stores_no_secret(iam, kube_api_for, workspace):
    standin = trust(kube_api_for, workspace, iam, audience="caas-cluster")
    secret = iam.service_client_secret
    result = workspace.run("kubectl-iam", "login", "--client-credentials", "--client-id", iam.service_client_id,
                           "--audience", "caas-cluster", env={"IAM_CLIENT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert "To sign in" not in result.stderr and "IAM_CLIENT_SECRET" in result.stderr
    pods = workspace.kubectl("get", "pods", "-n", "physics", env={"IAM_CLIENT_SECRET": secret})
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == iam.service_client_id
    # The secret is written nowhere: not in the kubeconfig, not in the cache, not in any file.
    assert secret not in workspace.all_text()
    args = exec_args(workspace)
    assert "--grant" in args and args[args.index("--grant") + 1] == "client-credentials"
    # Renewal: the same grant again, with the secret from kubectl's environment.
    age(workspace, "access")
    pods = workspace.kubectl("get", "pods", "-n", "physics", env={"IAM_CLIENT_SECRET": secret})
    assert pods.returncode == 0, pods.stderr
    grants = [r for r in iam.token_requests("client_credentials") if r["status"] == 200]
    assert len(grants) == 2
    assert secret not in workspace.all_text()
    # Without the secret an expired token cannot be renewed: one line saying what to set.
    age(workspace, "access")
    workspace.env.pop("IAM_CLIENT_SECRET", None)
    result = workspace.run("kubectl-iam", *exec_args(workspace), env={"KUBERNETES_EXEC_INFO": NOT_INTERACTIVE})
    assert result.returncode == 5 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "IAM_CLIENT_SECRET" in line and "Traceback" not in result.stderr


def test_service_account_with_a_wrong_secret_ends_in_one_line(iam, kube_api_for, workspace):
    trust(kube_api_for, workspace, iam, audience="caas-cluster")
    result = workspace.run("kubectl-iam", "login", "--client-credentials", "--client-id", iam.service_client_id,
                           env={"IAM_CLIENT_SECRET": "not-the-secret"})
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "invalid_client" in line and "IAM_CLIENT_SECRET" in line and "not-the-secret" not in line
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_service_account_without_a_secret_is_refused_before_any_request(iam, kube_api_for, workspace):
    trust(kube_api_for, workspace, iam, audience="caas-cluster")
    before = len(iam.requests())
    result = workspace.run("kubectl-iam", "login", "--client-credentials", "--client-id", iam.service_client_id)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "IAM_CLIENT_SECRET" in line
    assert not workspace.kubeconfig.exists()
    assert [r for r in iam.requests()[before:] if r.get("route") == "token"] == []


# -- forced renewal ------------------------------------------------------------------------------

def groups_seen(standin):
    return set(standin.requests[-1]["groups"]) - {"system:authenticated"}


def test_forced_refresh_carries_new_groups_to_the_next_kubectl_call(iam, kube_api_for, workspace):
    standin = trust(kube_api_for, workspace, iam, audience=iam.client_id)
    workspace.env["IAM_CLIENT_ID"] = iam.client_id
    result, _ = run_with_person(workspace, iam, ["kubectl-iam", "login", "--no-browser"])
    assert result.returncode == 0, result.stderr
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert groups_seen(standin) == {"users", "alice-group"}
    iam.set_account("alice", groups=["users", "physics-admins"])
    # The cached token is still good, so kubectl keeps the old groups ...
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert groups_seen(standin) == {"users", "alice-group"}
    # ... until the person forces a renewal (of the current context's login).
    forced = workspace.run("kubectl-iam", "get-token", "--force-refresh")
    assert forced.returncode == 0, forced.stderr
    assert exec_credential(forced)["status"]["token"]
    assert len(iam.token_requests("refresh_token")) == 1
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert groups_seen(standin) == {"users", "physics-admins"}


def test_login_force_replaces_a_still_valid_token(iam, kube_api_for, workspace):
    standin = trust(kube_api_for, workspace, iam, audience=iam.client_id)
    workspace.env["IAM_CLIENT_ID"] = iam.client_id
    assert run_with_person(workspace, iam, ["kubectl-iam", "login", "--no-browser"])[0].returncode == 0
    old = workspace.cache_entries()
    iam.set_account("alice", groups=["users", "physics-admins"])
    result, shown = run_with_person(workspace, iam, ["kubectl-iam", "login", "--no-browser", "--force"])
    assert shown and result.returncode == 0, result.stderr
    assert workspace.cache_entries() != old
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert groups_seen(standin) == {"users", "physics-admins"}


def test_forced_refresh_outside_a_kubectl_iam_context_ends_in_one_line(workspace):
    workspace.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    workspace.kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: other\ncontexts:\n"
                                    "- name: other\n  context: {cluster: c, user: u}\n")
    before = workspace.kubeconfig.read_bytes()
    result = workspace.run("kubectl-iam", "get-token", "--force-refresh")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "does not use kubectl-iam" in line
    assert workspace.kubeconfig.read_bytes() == before


@pytest.mark.parametrize("argv,needle", [
    (["--client-credentials", "--register"], "--client-credentials and --register"),
    (["--oidc-agent", "work", "--client-credentials"], "--oidc-agent and --client-credentials"),
    (["--oidc-agent", "work", "--register"], "--oidc-agent and --register"),
    (["--client-credentials", "--browser"], "--browser chooses how a person signs in"),
    (["--oidc-agent", "work", "--no-browser"], "--no-browser chooses how a person signs in"),
], ids=["cc+register", "agent+cc", "agent+register", "cc+browser", "agent+no-browser"])
def test_contradicting_ways_in_are_refused_before_any_request(iam, kube_api_for, workspace, argv, needle):
    trust(kube_api_for, workspace, iam, audience="caas-cluster")
    before = len(iam.requests())
    result = workspace.run("kubectl-iam", "login", "--client-id", iam.service_client_id, *argv,
                           env={"IAM_CLIENT_SECRET": iam.service_client_secret})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert needle in line
    assert len(iam.requests()) == before and not workspace.kubeconfig.exists()

"""kubectl-iam with a real oidc-agent as its token source, end to end: the IAM-like test provider,
oidc-agent (Debian's oidc-agent-cli) with an account made by oidc-gen from a device flow the
browser stand-in approved, real kubectl, and the Kubernetes-API stand-in checking the access
token's issuer and audience as kube-apiserver does.

`kubectl iam login --oidc-agent ACCOUNT --audience AUD` asks the agent for a token and writes the
context; kubectl's get-token asks the agent again when the cached token runs out. When the agent
is not there, does not know the account or has not loaded it, login ends in one line and leaves
the kubeconfig as it was, and get-token ends in the login-required line.
"""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
import uuid

import pytest

from tests.servers.kube_api import OIDCIssuerConfig
from tests.servers.oidc_agent import OIDCAgent, oidc_agent_tools

AUDIENCE = "https://kube.example.org"
ACCOUNT = "kube-test"
NOT_INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                              "spec": {"interactive": False}})


def claims_of(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def provider(oidc_provider_factory):
    return oidc_provider_factory()


@pytest.fixture(scope="module")
def login_name():
    return f"agent-user-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def agent(provider, login_name):
    missing = oidc_agent_tools()
    if missing:
        pytest.skip(missing)
    # Short: the socket path must fit a UNIX socket address.
    root = tempfile.mkdtemp(prefix="oidc-agent-")
    try:
        with OIDCAgent(root) as running:
            running.add_account(ACCOUNT, provider, login=login_name)
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def agent_site(kube_api_for, workspace, provider, agent):
    """An API stand-in trusting the provider's tokens for AUDIENCE, and a person whose shell has the agent."""
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=provider.issuer, audience=AUDIENCE,
                                                  ca_file=provider.ca_cert, username_claim="sub",
                                                  groups_claim="groups")])
    workspace.env.update({"CAAS_SERVER": standin.url, "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert),
                          **agent.environ})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
        workspace.env.pop(desktop, None)
    return standin


def only_entry(workspace) -> dict:
    (entry,) = workspace.cache_entries().values()
    return entry


def exec_args(workspace) -> list:
    return workspace.config()["users"][0]["user"]["exec"]["args"]


def age(workspace) -> str:
    """Make the cached access token look expired; return it."""
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    entry["tokens"]["access"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(entry))
    return entry["tokens"]["access"]["value"]


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kubectl-iam: error: "), result.stderr
    return lines[0]


def test_login_with_an_agent_account_and_kubectl_works(provider, agent, login_name, kube_api_for, workspace):
    standin = agent_site(kube_api_for, workspace, provider, agent)
    result = workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--audience", AUDIENCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    assert f"oidc-agent account {ACCOUNT} gives {login_name}" in result.stderr
    args = exec_args(workspace)
    assert args[args.index("--oidc-agent") + 1] == ACCOUNT and args[args.index("--token") + 1] == "access"
    assert args[args.index("--audience") + 1] == AUDIENCE and "--client-id" not in args
    assert args[args.index("--issuer") + 1] == provider.issuer.rstrip("/")
    entry = only_entry(workspace)
    assert entry["oidc_agent"] == ACCOUNT and "refresh_token" not in entry and "client_secret" not in entry
    access = claims_of(entry["tokens"]["access"]["value"])
    assert access["sub"] == login_name and AUDIENCE in (access["aud"] if isinstance(access["aud"], list)
                                                        else [access["aud"]])
    assert entry["tokens"]["access"]["expires_at"] == pytest.approx(access["exp"], abs=5)
    assert provider.confidential_client_secret not in workspace.all_text()

    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == login_name and standin.requests[-1]["authenticator"] == "oidc"

    status = workspace.run("kubectl-iam", "status")
    assert status.returncode == 0, status.stderr
    assert f"oidc-agent account {ACCOUNT}" in status.stdout and f"{login_name} at {provider.issuer}" in status.stdout
    assert "warning" not in status.stdout


def test_get_token_asks_the_agent_again_once_the_cached_token_expires(provider, agent, kube_api_for, workspace):
    standin = agent_site(kube_api_for, workspace, provider, agent)
    assert workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--audience", AUDIENCE).returncode == 0
    refreshes = len(provider.token_requests("refresh_token"))
    # A cache hit does not ask the agent (which, asked with an audience, refreshes every time).
    assert workspace.kubectl("get", "pods", "-n", "physics").returncode == 0
    assert len(provider.token_requests("refresh_token")) == refreshes
    old = age(workspace)
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert len(provider.token_requests("refresh_token")) == refreshes + 1
    new = only_entry(workspace)["tokens"]["access"]
    assert new["value"] != old and new["expires_at"] > time.time() + 60
    assert AUDIENCE in json.dumps(claims_of(new["value"])["aud"])
    assert standin.requests[-1]["user"] == claims_of(new["value"])["sub"]


def test_get_token_without_the_agent_is_one_login_required_line(provider, agent, kube_api_for, workspace, tmp_path):
    agent_site(kube_api_for, workspace, provider, agent)
    assert workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--audience", AUDIENCE).returncode == 0
    age(workspace)
    gone = {"OIDC_SOCK": str(tmp_path / "no-agent-here.sock"), "KUBERNETES_EXEC_INFO": NOT_INTERACTIVE}
    result = workspace.run("kubectl-iam", *exec_args(workspace), env=gone)
    assert result.returncode == 5, result.stderr
    line = one_line(result)
    assert "oidc-agent is not running" in line and "eval $(oidc-agent-service use)" in line
    pods = workspace.kubectl("get", "pods", "-n", "physics", env={"OIDC_SOCK": str(tmp_path / "no-agent-here.sock")})
    assert pods.returncode != 0
    # kubectl runs get-token several times (discovery retries); each says the same one line.
    ours = {text for text in pods.stderr.splitlines() if text.startswith("kubectl-iam")}
    assert ours == {line}, pods.stderr


def kubeconfig_before(workspace) -> bytes:
    """A kubeconfig the person already has, to show that a failed login leaves it alone."""
    workspace.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    workspace.kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
                                    "current-context: ''\npreferences: {}\n")
    return workspace.kubeconfig.read_bytes()


@pytest.mark.parametrize("where", ["unset", "gone", "not a socket"])
def test_login_without_a_running_agent_is_one_line_and_touches_nothing(provider, agent, kube_api_for, workspace,
                                                                      tmp_path, where):
    agent_site(kube_api_for, workspace, provider, agent)
    before = kubeconfig_before(workspace)
    if where == "unset":
        workspace.env.pop("OIDC_SOCK")
    elif where == "gone":
        workspace.env["OIDC_SOCK"] = str(tmp_path / "oidc-agent.sock")
    else:
        workspace.env["OIDC_SOCK"] = str(workspace.kubeconfig)
    result = workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--audience", AUDIENCE)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "oidc-agent" in line and "OIDC_SOCK" in line
    if where == "not a socket":
        assert "which is not a socket" in line
    else:
        assert "oidc-agent is not running" in line and "eval $(oidc-agent-service use)" in line
    assert workspace.kubeconfig.read_bytes() == before and workspace.cache_entries() == {}


def test_login_with_an_unknown_account_is_one_line_and_touches_nothing(provider, agent, kube_api_for, workspace):
    agent_site(kube_api_for, workspace, provider, agent)
    before = kubeconfig_before(workspace)
    result = workspace.run("kubectl-iam", "login", "--oidc-agent", "nobody-made-this", "--audience", AUDIENCE)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "oidc-agent has no account 'nobody-made-this'" in line and "oidc-gen nobody-made-this" in line
    assert workspace.kubeconfig.read_bytes() == before and workspace.cache_entries() == {}


def test_an_account_the_agent_has_not_loaded_says_oidc_add(provider, agent, kube_api_for, workspace):
    agent_site(kube_api_for, workspace, provider, agent)
    agent.add_account("unloaded", provider, login="bob")
    agent.remove_account("unloaded")  # its file stays; the agent cannot ask for its password here
    before = kubeconfig_before(workspace)
    result = workspace.run("kubectl-iam", "login", "--oidc-agent", "unloaded")
    assert result.returncode == 3, result.stderr
    line = one_line(result)
    assert "oidc-agent's account 'unloaded' is not loaded" in line and "oidc-add unloaded" in line
    assert workspace.kubeconfig.read_bytes() == before


def test_an_issuer_given_must_be_the_accounts(provider, agent, kube_api_for, workspace):
    agent_site(kube_api_for, workspace, provider, agent)
    result = workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--issuer", "https://iam.example.org")
    assert result.returncode == 2
    assert f"oidc-agent's account '{ACCOUNT}' is at {provider.issuer}, not https://iam.example.org" in one_line(result)
    assert not workspace.kubeconfig.exists()


def test_logout_forgets_our_copy_and_leaves_the_agents_account(provider, agent, kube_api_for, workspace):
    agent_site(kube_api_for, workspace, provider, agent)
    assert workspace.run("kubectl-iam", "login", "--oidc-agent", ACCOUNT, "--audience", AUDIENCE).returncode == 0
    result = workspace.run("kubectl-iam", "logout")
    assert result.returncode == 0, result.stderr
    assert f"oidc-agent keeps account {ACCOUNT}" in result.stderr
    assert workspace.cache_entries() == {}
    assert agent.run("oidc-token", ACCOUNT).returncode == 0
    # The context still works: get-token asks the agent.
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr

"""kubectl-iam against the rules INDIGO IAM really applies (issue 12), end to end: the IAM-like
test provider (tests/servers/oidc, IAM's paths, errors and tokens), the scripted browser stand-in,
real kubectl and the Kubernetes-API stand-in checking tokens as kube-apiserver does.

Each IAM behaviour gets the line a person sees and the state left behind: a confidential and a
public client both sign in; an unknown client, a scope the client may not ask for and a client
without the device grant each end in one line that says what to do; a suspended account or one
with a usage policy to sign ends get-token's refresh in the login-required line; an access token
carries the audience asked for through refreshes, and an issuer without IAM's trailing slash is
pointed out; the WLCG profile's groups reach RBAC and `status`.
"""
from __future__ import annotations

import base64
import json
import time

import pytest

from tests.integration.harness import run_with_person
from tests.servers.faults import FaultProxy
from tests.servers.kube_api import OIDCIssuerConfig

NOT_INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                              "spec": {"interactive": False}})


def claims_of(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def only_entry(workspace) -> dict:
    (entry,) = workspace.cache_entries().values()
    return entry


def exec_args(workspace) -> list:
    return workspace.config()["users"][0]["user"]["exec"]["args"]


def sign_in(workspace, provider, *extra, env=None, login="alice"):
    result, shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--no-browser", *extra],
                                    login=login, env=env)
    return result


def site(kube_api_for, workspace, provider, *, client_id, issuer=None, audience=None, groups_claim="groups"):
    """kubectl-iam set up for `client_id`, and an API stand-in trusting `issuer` (default: the
    provider's) for tokens whose aud is `audience` (default: the client id)."""
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=issuer or provider.issuer,
                                                  audience=audience or client_id, ca_file=provider.ca_cert,
                                                  username_claim="sub",
                                                  groups_claim=groups_claim)])
    workspace.env.update({"IAM_ISSUER": provider.issuer, "IAM_CLIENT_ID": client_id,
                          "IAM_CACERT": str(provider.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
        workspace.env.pop(desktop, None)
    return standin


def age(workspace, kind="id") -> None:
    """Make the cached bearer look expired, so the next get-token refreshes."""
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    entry["tokens"][kind]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(entry))


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("kubectl-iam: error: "), result.stderr
    return lines[-1]


@pytest.fixture
def iam(oidc_provider_factory):
    # 1 s polls keep each sign-in short; IAM itself sends no interval (the client then polls at 5 s).
    return oidc_provider_factory(device_interval=1)


# -- clients -------------------------------------------------------------------------------------

def test_confidential_client_signs_in_renews_and_keeps_its_secret_out_of_the_kubeconfig(
        iam, kube_api_for, workspace):
    client, secret = iam.confidential_client_id, iam.confidential_client_secret
    standin = site(kube_api_for, workspace, iam, client_id=client)
    result = sign_in(workspace, iam, env={"IAM_CLIENT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    # IAM takes the client from the device form's client_id only; the request that started the
    # sign-in was the confidential client's, and it was answered.
    (device,) = [r for r in iam.requests() if r["path"] == "/devicecode"]
    assert device["status"] == 200
    assert claims_of(only_entry(workspace)["tokens"]["id"]["value"])["aud"] == client
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == "alice"
    assert secret not in workspace.kubeconfig.read_text()
    assert secret not in " ".join(exec_args(workspace))
    # Renewal authenticates the client with the secret kept beside the refresh token (IAM refuses
    # a confidential client's refresh without it).
    age(workspace)
    pods = workspace.kubectl("get", "pods", "-n", "physics", env={"IAM_CLIENT_SECRET": ""})
    assert pods.returncode == 0, pods.stderr
    assert [r["status"] for r in iam.token_requests("refresh_token")] == [200]


def test_public_client_signs_in_and_renews(iam, kube_api_for, workspace):
    standin = site(kube_api_for, workspace, iam, client_id=iam.client_id)
    assert sign_in(workspace, iam).returncode == 0
    age(workspace)
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert standin.requests[-1]["user"] == "alice"
    assert [r["status"] for r in iam.token_requests("refresh_token")] == [200]


def test_unknown_client_is_named_as_not_registered(iam, kube_api_for, workspace):
    site(kube_api_for, workspace, iam, client_id="nobody-registered-this")
    result = workspace.run("kubectl-iam", "login", "--no-browser")
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "client id nobody-registered-this is not registered at" in line and iam.issuer.rstrip("/") in line
    assert "To sign in" not in result.stderr
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_scope_the_client_may_not_ask_for_names_the_scopes_and_the_way_out(iam, kube_api_for, workspace):
    # The default scope asks for offline_access; this client is registered without it.
    site(kube_api_for, workspace, iam, client_id=iam.no_offline_client_id)
    refused = workspace.run("kubectl-iam", "login", "--no-browser")
    assert refused.returncode == 2, refused.stderr
    line = one_line(refused)
    assert "offline_access" in line and "--scope" in line and iam.no_offline_client_id in line
    assert not workspace.kubeconfig.exists()
    # Doing what the line says works; without offline_access IAM gives no refresh token, and
    # login and status say so.
    result = sign_in(workspace, iam, "--scope", "openid profile email")
    assert result.returncode == 0, result.stderr
    assert "no refresh token" in result.stderr
    assert "refresh_token" not in only_entry(workspace) or not only_entry(workspace)["refresh_token"]
    status = workspace.run("kubectl-iam", "status")
    assert "refresh token none" in status.stdout, status.stdout


def test_client_without_the_device_grant_is_told_so(iam, kube_api_for, workspace):
    site(kube_api_for, workspace, iam, client_id=iam.no_device_client_id)
    result = workspace.run("kubectl-iam", "login", "--no-browser")
    assert result.returncode == 3, result.stderr
    line = one_line(result)
    assert "invalid_client" in line and "device code grant" in line and iam.no_device_client_id in line
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


# -- refresh refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize("refusal", ["suspended", "aup"])
def test_refresh_refused_by_account_state_ends_in_the_login_required_line(iam, kube_api_for, workspace, refusal):
    site(kube_api_for, workspace, iam, client_id=iam.client_id)
    assert sign_in(workspace, iam).returncode == 0
    if refusal == "suspended":
        iam.suspend("alice")
    else:
        iam.require_aup("alice")
    age(workspace)
    before = workspace.cache_entries()
    result = workspace.run("kubectl-iam", *exec_args(workspace), env={"KUBERNETES_EXEC_INFO": NOT_INTERACTIVE})
    assert result.returncode == 5, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "kubectl iam login" in line and "Traceback" not in result.stderr
    # One refresh, refused the way IAM refuses it; no retry, no device code.
    (refresh,) = iam.token_requests("refresh_token")
    assert (refresh["status"], refresh["error"]) == ((401, "unauthorized") if refusal == "suspended"
                                                     else (400, "invalid_grant"))
    assert "To sign in" not in result.stderr
    # The cache is left as it was: the refusal depends on the account, not on the token, so once
    # the account is in order again the same refresh token gets the person back in.
    assert workspace.cache_entries() == before
    if refusal == "suspended":
        iam.reinstate("alice")
    else:
        iam.require_aup("alice", due=False)
    again = workspace.run("kubectl-iam", *exec_args(workspace), env={"KUBERNETES_EXEC_INFO": NOT_INTERACTIVE})
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in iam.token_requests("refresh_token")][-1] == 200


# -- access tokens -------------------------------------------------------------------------------

def test_access_token_keeps_its_audience_through_refreshes(iam, kube_api_for, workspace):
    standin = site(kube_api_for, workspace, iam, client_id=iam.client_id, audience="caas-cluster")
    assert sign_in(workspace, iam, "--token", "access", "--audience", "caas-cluster").returncode == 0
    first = only_entry(workspace)["tokens"]["access"]["value"]
    # The provider, like IAM, drops an audience sent with the device request: this one came with
    # the device-code poll.
    assert claims_of(first)["aud"] in ("caas-cluster", ["caas-cluster"])
    age(workspace, "access")
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    renewed = only_entry(workspace)["tokens"]["access"]["value"]
    assert renewed != first and claims_of(renewed)["aud"] in ("caas-cluster", ["caas-cluster"])
    assert standin.requests[-1]["user"] == "alice"


def test_access_token_issuer_without_the_slash_is_pointed_out(oidc_provider_factory, kube_api_for, workspace,
                                                               oidc_pki):
    # IAM issue #1118: access tokens name the issuer without the slash the discovery document has.
    provider = oidc_provider_factory(device_interval=1, access_token_iss_without_slash=True)
    without_slash = provider.issuer.rstrip("/")
    site(kube_api_for, workspace, provider, client_id=provider.client_id, audience="caas-cluster")
    result = sign_in(workspace, provider, "--token", "access", "--audience", "caas-cluster")
    assert result.returncode == 0, result.stderr
    warning = f"warning: the access token's issuer is '{without_slash}', not the discovery issuer '{provider.issuer}'"
    assert warning in result.stderr
    status = workspace.run("kubectl-iam", "status")
    assert warning in status.stdout, status.stdout
    # Why it matters: an API server set up for the discovery issuer skips these tokens ...
    refused = workspace.kubectl("get", "pods", "-n", "physics")
    assert refused.returncode != 0 and "provide credentials" in refused.stderr
    # ... and one set up for the tokens' issuer cannot start its verifier, since the discovery
    # document names the other one (kube-apiserver checks it, discoveryURL or not).
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=without_slash, audience="caas-cluster",
                                                  ca_file=provider.ca_cert)])
    assert workspace.kubectl("--server", standin.url, "get", "pods", "-n", "physics").returncode != 0
    # What the operator guide says to do: serve a copy of the discovery document that names the
    # tokens' issuer and give its URL as discoveryURL.
    with FaultProxy(provider.issuer, oidc_pki.server_cert, oidc_pki.server_key,
                    upstream_ca=provider.ca_cert) as copy:
        copy.rewrite_json("GET", "/.well-known/openid-configuration",
                          lambda status, headers, body: (status, headers, {**body, "issuer": without_slash}))
        fixed = kube_api_for(oidc=[OIDCIssuerConfig(
            issuer_url=without_slash, audience="caas-cluster", ca_file=provider.ca_cert,
            discovery_url=copy.url + "/.well-known/openid-configuration")])
        pods = workspace.kubectl("--server", fixed.url, "get", "pods", "-n", "physics")
        assert pods.returncode == 0, pods.stderr
        assert fixed.requests[-1]["user"] == "alice"


def test_access_token_with_the_discovery_issuer_draws_no_warning(iam, kube_api_for, workspace):
    site(kube_api_for, workspace, iam, client_id=iam.client_id, audience="caas-cluster")
    result = sign_in(workspace, iam, "--token", "access", "--audience", "caas-cluster")
    assert result.returncode == 0, result.stderr
    assert "issuer" not in result.stderr.replace("To sign in", "")
    assert "warning" not in workspace.run("kubectl-iam", "status").stdout


# -- the WLCG profile ----------------------------------------------------------------------------

def test_wlcg_groups_reach_rbac_and_status(iam, kube_api_for, workspace):
    standin = site(kube_api_for, workspace, iam, client_id=iam.wlcg_client_id, groups_claim="wlcg.groups")
    result = sign_in(workspace, iam, "--scope", "openid profile email offline_access wlcg.groups")
    assert result.returncode == 0, result.stderr
    claims = claims_of(only_entry(workspace)["tokens"]["id"]["value"])
    assert "groups" not in claims and claims["wlcg.groups"] == ["/users", "/alice-group"]
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert set(standin.requests[-1]["groups"]) >= {"/users", "/alice-group"}
    status = workspace.run("kubectl-iam", "status")
    assert "groups /users, /alice-group" in status.stdout, status.stdout

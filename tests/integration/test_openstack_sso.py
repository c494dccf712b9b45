"""`kubectl openstack login --sso` end to end: a real federated Keystone (Keystone 30 under Apache
+ mod_wsgi, mod_oauth2 on the federation path, as CloudVeneto publishes it; see
tests/servers/keystone_federation.py), the IAM-like test OpenID provider, the scripted browser
stand-in, real kubectl and the Kubernetes-API stand-in validating Keystone tokens as
k8s-keystone-auth does. Both Keystone variants: with application credentials among its auth
methods, and CloudVeneto's published list without them.

No OpenStack password exists anywhere in these tests: the federated users have none.
"""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from tests.integration.harness import run_with_person, unique
from tests.servers.keystone_federation_fixtures import FEDERATION_AUDIENCE
from tests.servers.oidc_provider import OIDCProvider

NOT_INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                              "spec": {"interactive": False}})


@pytest.fixture(scope="module")
def provider(oidc_pki):
    with OIDCProvider(oidc_pki, device_interval=1) as op:
        yield op


@pytest.fixture(scope="module", params=[True, False], ids=["app-credentials", "cloudveneto-methods"])
def federation(request, federated_keystone_factory, provider):
    keystone = federated_keystone_factory(provider, app_credentials=request.param)
    project = unique("CMS")
    keystone.create_project(project)
    # IAM's access tokens (default profile) carry no groups claim: everyone the issuer vouches for
    # gets the project here.
    keystone.map_group(None, project)
    return keystone, project, request.param


def standin_for(kube_api_for, keystone):
    """The API stand-in validating tokens at this Keystone's v3 root, as k8s-keystone-auth does."""
    return kube_api_for(SimpleNamespace(url=keystone.auth_url, ca_cert=keystone.ca_cert))


def configure(workspace, keystone, provider, standin, audience=FEDERATION_AUDIENCE):
    workspace.env.update({"OS_AUTH_URL": keystone.auth_url, "OS_CACERT": str(keystone.ca_cert),
                          "IAM_ISSUER": provider.issuer, "IAM_CLIENT_ID": provider.client_id,
                          "IAM_CACERT": str(provider.ca_cert), "IAM_AUDIENCE": audience,
                          "CAAS_SERVER": standin.url, "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):
        workspace.env.pop(desktop, None)


@pytest.fixture
def sso_site(federation, provider, kube_api_for, workspace):
    keystone, project, app_credentials = federation
    standin = standin_for(kube_api_for, keystone)
    configure(workspace, keystone, provider, standin)
    return {"keystone": keystone, "project": project, "app_credentials": app_credentials, "standin": standin}


def sso_login(workspace, provider, project, *extra, login="alice", env=None):
    result, _ = run_with_person(workspace, provider, ["kubectl-openstack", "login", "--sso", "--project", project,
                                                      "--no-browser", *extra], login=login, env=env)
    return result


def project_entries(workspace):
    return {name: e for name, e in workspace.cache_entries().items() if "tokens" in e}


def only_entry(workspace):
    (entry,) = project_entries(workspace).values()
    return entry


def grant(workspace):
    """The IAM grant the SSO contexts share (a cache file of its own)."""
    (record,) = [e["sso"] for e in workspace.cache_entries().values() if "tokens" not in e]
    return record


def expire_keystone_token(workspace):
    for name in project_entries(workspace):
        path = workspace.cache / name
        entry = json.loads(path.read_text())
        entry["tokens"]["keystone"]["expires_at"] = time.time() - 5
        path.write_text(json.dumps(entry))


def exec_args(workspace):
    return workspace.config()["users"][0]["user"]["exec"]["args"]


def test_sso_login_configures_kubectl_renews_past_expiry_and_logout_leaves_nothing(sso_site, provider, workspace):
    keystone, project = sso_site["keystone"], sso_site["project"]
    result = sso_login(workspace, provider, project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    assert "password" not in result.stderr.lower()
    assert f"via infn-cc to project {project}" in result.stderr
    pods = workspace.kubectl("get", "pods", "-n", project.lower())
    assert pods.returncode == 0, pods.stderr
    assert sso_site["standin"].requests[-1]["user"] == "alice"
    entry = only_entry(workspace)
    credential = entry.get("application_credential")
    if sso_site["app_credentials"]:
        assert credential and credential["created_by_login"]
    else:
        assert credential is None and "refuses application credentials" in result.stderr
        # the credential made for the try is gone from Keystone again
        assert keystone.list_application_credentials(entry["user"]["id"]) == []
    refresh_token = grant(workspace)["refresh_token"]
    assert "refresh_token" not in entry["sso"]  # one home for it, shared by the contexts
    raw = workspace.kubeconfig.read_text()
    assert refresh_token not in raw and entry["tokens"]["keystone"]["value"] not in raw
    # Past the Keystone token's expiry kubectl keeps working, silently.
    expire_keystone_token(workspace)
    before = len(provider.token_requests("refresh_token"))
    pods = workspace.kubectl("get", "pods", "-n", project.lower())
    assert pods.returncode == 0, pods.stderr
    assert "To sign in" not in pods.stderr
    refreshes = len(provider.token_requests("refresh_token")) - before
    assert refreshes == (0 if sso_site["app_credentials"] else 1)
    renewed = only_entry(workspace)
    assert renewed["tokens"]["keystone"]["value"] != entry["tokens"]["keystone"]["value"]
    # Logout: Keystone token revoked, credential deleted, IAM refresh token revoked.
    token = renewed["tokens"]["keystone"]["value"]
    rt = grant(workspace)["refresh_token"]
    assert keystone.validate_token(token)[0] == 200
    out = workspace.run("kubectl-openstack", "logout")
    assert out.returncode == 0, out.stderr
    assert keystone.validate_token(token)[0] in (401, 404)  # revoked
    assert keystone.list_application_credentials(renewed["user"]["id"]) == []
    assert provider.introspect(rt)["active"] is False
    assert workspace.cache_entries() == {}  # the grant's file too
    after = workspace.run("kubectl-openstack", *exec_args(workspace), env={"KUBERNETES_EXEC_INFO": NOT_INTERACTIVE})
    assert after.returncode == 5 and "kubectl openstack login" in after.stderr


def test_parallel_expired_calls_renew_once(sso_site, provider, workspace):
    import subprocess

    from tests.integration.harness import BIN

    assert sso_login(workspace, provider, sso_site["project"]).returncode == 0
    expire_keystone_token(workspace)
    before = len(provider.token_requests("refresh_token"))
    procs = [subprocess.Popen([str(BIN / "kubectl-openstack"), *exec_args(workspace)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              env={**workspace.env, "KUBERNETES_EXEC_INFO": NOT_INTERACTIVE}) for _ in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    assert len({json.loads(out)["status"]["token"] for out, _ in outputs}) == 1
    assert len(provider.token_requests("refresh_token")) - before <= 1


def test_wrong_audience_is_one_line_naming_the_audience(sso_site, provider, workspace):
    result = sso_login(workspace, provider, sso_site["project"], env={"IAM_AUDIENCE": "not-keystone"})
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "refused the access token" in line and "'not-keystone'" in line and "--audience" in line
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_unknown_identity_provider_is_one_line(sso_site, provider, workspace):
    result = sso_login(workspace, provider, sso_site["project"], "--identity-provider", "nobody")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "nobody" in line and "--identity-provider" in line
    assert not workspace.kubeconfig.exists()


def test_a_person_mapped_to_no_project_is_told_to_ask_support(federated_keystone_factory, provider, kube_api_for,
                                                               workspace):
    # A Keystone of its own (its own audience) whose mapping gives nobody a project.
    keystone = federated_keystone_factory(provider, audience="keystone-unmapped")
    configure(workspace, keystone, provider, standin_for(kube_api_for, keystone), audience="keystone-unmapped")
    result = sso_login(workspace, provider, "CMS", login="carol")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "signed in as carol via infn-cc" in line and "no project" in line and "support" in line
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_another_project_is_named_with_the_ones_the_person_has(sso_site, provider, workspace):
    result = sso_login(workspace, provider, "NOT-MINE")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "NOT-MINE" in line and sso_site["project"] in line
    assert not workspace.kubeconfig.exists()


def test_projects_with_sso_lists_the_mapped_project_and_keeps_no_grant(sso_site, provider, workspace):
    result, _ = run_with_person(workspace, provider, ["kubectl-openstack", "projects", "--sso", "--no-browser"])
    assert result.returncode == 0, result.stderr
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert sso_site["project"] in names
    # nothing kept: no cache entry, no kubeconfig, and the sign-in's refresh token is revoked
    assert workspace.cache_entries() == {} and not workspace.kubeconfig.exists()
    (grant,) = [r for r in provider.token_requests("device_code") if r["status"] == 200][-1:]
    revocations = [r for r in provider.requests() if r.get("route") == "revocation"]
    assert revocations and revocations[-1]["time"] >= grant["time"]


def test_status_of_an_sso_context_says_how_it_renews(sso_site, provider, workspace):
    assert sso_login(workspace, provider, sso_site["project"]).returncode == 0
    status = workspace.run("kubectl-openstack", "status")
    assert status.returncode == 0, status.stderr
    line = status.stdout.strip()
    assert "user alice" in line and sso_site["project"] in line
    assert ("remembered" in line) if sso_site["app_credentials"] else ("SSO via infn-cc, renews with the IAM sign-in"
                                                                      in line)


def test_a_protocol_keystone_does_not_take_is_told_apart_from_a_refused_token(sso_site, provider, workspace):
    # No web-server guard on this path: Keystone answers itself (401, unsupported method).
    result = sso_login(workspace, provider, sso_site["project"], "--protocol", "saml2")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Keystone at" in line and "refused the SSO login" in line and "--protocol" in line
    assert "audience" not in line
    assert not workspace.kubeconfig.exists()


def test_all_projects_share_one_iam_grant_and_logout_ends_it_with_the_last_context(federation, provider,
                                                                                  kube_api_for, workspace):
    keystone, first, app_credentials = federation
    second = unique("ATLAS")
    keystone.create_project(second)
    keystone.map_group(None, second)
    configure(workspace, keystone, provider, standin_for(kube_api_for, keystone))
    result, _ = run_with_person(workspace, provider, ["kubectl-openstack", "login", "--sso", "--all-projects",
                                                      "--no-browser"])
    assert result.returncode == 0, result.stderr
    names = {first.lower(), second.lower()}
    assert names <= {c["name"] for c in workspace.config()["contexts"]}
    assert result.stderr.count("To sign in") == 1  # one sign-in for every project
    # Both renew past expiry, one after the other, from the one grant (IAM replaces its refresh
    # token at each use: a copy per project would die at the first renewal).
    for _ in range(2):
        expire_keystone_token(workspace)
        for name in sorted(names):
            pods = workspace.kubectl("--context", name, "get", "pods", "-n", name)
            assert pods.returncode == 0, pods.stderr
    out = workspace.run("kubectl-openstack", "logout", "--context", first.lower())
    assert out.returncode == 0, out.stderr
    assert "other contexts still use it" in out.stderr
    # (deleting the first context's credential may have used the grant, and so replaced its token)
    assert provider.introspect(grant(workspace)["refresh_token"])["active"] is True
    expire_keystone_token(workspace)
    pods = workspace.kubectl("--context", second.lower(), "get", "pods", "-n", second.lower())
    assert pods.returncode == 0, pods.stderr
    rt = grant(workspace)["refresh_token"]
    out = workspace.run("kubectl-openstack", "logout", "--context", second.lower())
    assert out.returncode == 0, out.stderr
    assert "IAM refresh token revoked" in out.stderr
    assert provider.introspect(rt)["active"] is False
    assert workspace.cache_entries() == {}

"""kubectl-iam end to end: the real OpenID provider (oidc-provider on Node), the scripted stand-in
for the person's browser, real kubectl, and the Kubernetes-API stand-in checking ID tokens against
the provider's JWKS with exact iss and aud, as kube-apiserver does."""
from __future__ import annotations

import json
import subprocess


from tests.integration.harness import exec_credential, run_with_person, wait_until

INTERACTIVE = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                          "spec": {"interactive": True}})


def login(workspace, provider, *extra, person="approve", login="alice"):
    result, shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--no-browser", *extra],
                                    person=person, login=login)
    return result


def entry(workspace):
    (only,) = workspace.cache_entries().values()
    return only


def exec_args(workspace):
    return workspace.config()["users"][0]["user"]["exec"]["args"]


def test_device_code_login_configures_kubectl(fast_provider, iam_site, workspace):
    standin = iam_site(fast_provider)
    result = login(workspace, fast_provider)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    assert "To sign in, open" in result.stderr
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert "No resources found in physics namespace." in pods.stdout + pods.stderr
    assert {r["user"] for r in standin.requests if r["namespace"] == "physics"} == {"alice"}
    cached = entry(workspace)
    raw = workspace.kubeconfig.read_text()
    for secret in (cached["refresh_token"], cached["tokens"]["id"]["value"], cached["tokens"]["access"]["value"]):
        assert secret not in raw
    exec_ = workspace.config()["users"][0]["user"]["exec"]
    # One spelling of the issuer in the kubeconfig, without IAM's trailing slash (the cache key agrees).
    assert fast_provider.issuer.endswith("/")
    assert exec_["args"][:3] == ["get-token", "--issuer", fast_provider.issuer.rstrip("/")]
    assert exec_["interactiveMode"] == "IfAvailable"


def test_cache_hit_makes_no_provider_request(fast_provider, iam_site, workspace):
    iam_site(fast_provider)
    assert login(workspace, fast_provider).returncode == 0
    before = len(fast_provider.requests())
    first = exec_credential(workspace.run("kubectl-iam", *exec_args(workspace)))
    second = exec_credential(workspace.run("kubectl-iam", *exec_args(workspace)))
    assert first == second and first["status"]["token"] == entry(workspace)["tokens"]["id"]["value"]
    assert len(fast_provider.requests()) == before


def test_expired_id_token_is_refreshed_silently(oidc_provider_factory, iam_site, workspace):
    provider = oidc_provider_factory(device_interval=1, id_token_ttl=20)
    iam_site(provider)
    assert login(workspace, provider).returncode == 0
    old = entry(workspace)["tokens"]["id"]
    wait_until(old["expires_at"])
    pods = workspace.kubectl("get", "pods", "-n", "physics")
    assert pods.returncode == 0, pods.stderr
    assert "To sign in" not in pods.stderr
    assert len(provider.token_requests("refresh_token")) == 1
    new = entry(workspace)["tokens"]["id"]
    assert new["value"] != old["value"] and new["expires_at"] > old["expires_at"]


def test_revoked_refresh_token_needs_a_new_sign_in(oidc_provider_factory, iam_site, workspace):
    provider = oidc_provider_factory(device_interval=1, id_token_ttl=20)
    iam_site(provider)
    assert login(workspace, provider).returncode == 0
    cached = entry(workspace)
    import requests

    revoked = requests.post(provider.discovery()["revocation_endpoint"], verify=str(provider.ca_cert),
                            data={"token": cached["refresh_token"], "client_id": provider.client_id}, timeout=10)
    assert revoked.status_code == 200
    wait_until(cached["tokens"]["id"]["expires_at"])
    # In the background (k9s, an IDE): fail at once, no code, no browser.
    background = workspace.run("kubectl-iam", *exec_args(workspace),
                               env={"KUBERNETES_EXEC_INFO": INTERACTIVE.replace("true", "false")})
    assert background.returncode == 5 and background.stdout == ""
    (line,) = background.stderr.strip().splitlines()
    assert "kubectl iam login" in line and "To sign in" not in background.stderr
    # At a terminal: the device flow again, then a token.
    result, shown = run_with_person(workspace, provider, ["kubectl-iam", *exec_args(workspace)],
                                    env={"KUBERNETES_EXEC_INFO": INTERACTIVE})
    assert shown and result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == entry(workspace)["tokens"]["id"]["value"]


def test_logout_revokes_the_grant_and_kubectl_no_longer_gets_in(fast_provider, iam_site, workspace):
    iam_site(fast_provider)
    assert login(workspace, fast_provider).returncode == 0
    refresh_token = entry(workspace)["refresh_token"]
    assert fast_provider.introspect(refresh_token)["active"] is True
    result = workspace.run("kubectl-iam", "logout")
    assert result.returncode == 0, result.stderr
    assert fast_provider.introspect(refresh_token)["active"] is False
    assert workspace.cache_entries() == {}
    after = workspace.run("kubectl-iam", *exec_args(workspace))
    assert after.returncode == 5 and "kubectl iam login" in after.stderr


def test_refused_sign_in_ends_with_one_clear_line(oidc_provider_factory, iam_site, workspace):
    # A provider that answers a denial with access_denied (RFC 8628), as plain oidc-provider does.
    provider = oidc_provider_factory(iam_like=False, device_interval=1)
    iam_site(provider)
    result = login(workspace, provider, person="deny")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("kubectl-iam: error: the sign-in was refused")
    assert "Traceback" not in result.stderr
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_denial_at_iam_ends_at_the_code_expiry_with_a_line_that_names_both_causes(oidc_provider_factory,
                                                                                   iam_site, workspace):
    # INDIGO IAM never answers access_denied: a denied code stays pending until it expires.
    provider = oidc_provider_factory(device_interval=1, device_code_ttl=4)
    iam_site(provider)
    result = login(workspace, provider, person="deny")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "the code expired" in last and "denied" in last, last
    assert "Traceback" not in result.stderr
    polls = provider.token_requests("device_code")
    assert polls and {p.get("error") for p in polls} <= {"authorization_pending", "expired_token"}
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_code_not_approved_in_time_expires(oidc_provider_factory, iam_site, workspace):
    provider = oidc_provider_factory(device_interval=1, device_code_ttl=3)
    iam_site(provider)
    result = login(workspace, provider, person="ignore")
    assert result.returncode == 3
    assert "the code expired" in result.stderr.strip().splitlines()[-1]
    assert not workspace.kubeconfig.exists()


def test_status_shows_identity_groups_expiry_and_refresh_token(fast_provider, iam_site, workspace):
    iam_site(fast_provider)
    assert login(workspace, fast_provider).returncode == 0
    result = workspace.run("kubectl-iam", "status")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert ": alice at " in line and "alice-group" in line and "refresh token held" in line


def test_parallel_calls_with_an_expired_token_cause_one_refresh(oidc_provider_factory, iam_site, workspace):
    provider = oidc_provider_factory(device_interval=1, id_token_ttl=20)
    iam_site(provider)
    assert login(workspace, provider).returncode == 0
    wait_until(entry(workspace)["tokens"]["id"]["expires_at"])
    argv, env = workspace.exec_as_kubectl()  # through the shell front, as kubectl runs it
    assert argv[0].endswith("kubectl_caas_front")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              text=True, env=env)
             for _ in range(16)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    assert len({json.loads(out)["status"]["token"] for out, _ in outputs}) == 1
    assert len(provider.token_requests("refresh_token")) == 1


def test_two_accounts_on_one_issuer_and_client_work_side_by_side(fast_provider, iam_site, workspace):
    # A personal and a service identity, one workstation account: each context keeps its own person.
    standin = iam_site(fast_provider)
    assert login(workspace, fast_provider, "--context", "personal", login="alice").returncode == 0
    assert login(workspace, fast_provider, "--context", "service", login="robot").returncode == 0
    assert len(workspace.cache_entries()) == 2
    for context, person in (("personal", "alice"), ("service", "robot"), ("personal", "alice")):
        pods = workspace.kubectl("--context", context, "get", "pods", "-n", "physics")
        assert pods.returncode == 0, pods.stderr
        assert standin.requests[-1]["user"] == person
    status = workspace.run("kubectl-iam", "status")
    lines = {line.split(":")[0].strip("* "): line for line in status.stdout.splitlines()}
    assert "alice" in lines["personal"] and "robot" in lines["service"]

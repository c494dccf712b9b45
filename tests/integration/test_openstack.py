"""kubectl-openstack end to end: a real Keystone, real kubectl, and the Kubernetes-API stand-in
that authenticates tokens as CloudVeneto's CaaS does (k8s-keystone-auth rules)."""
from __future__ import annotations

import json
import os
import stat
import subprocess


from tests.integration.harness import BIN, PASSWORD, exec_credential, run_on_terminal, wait_until
from tests.servers.tls import make_untrusted_ca

def login(workspace, user, *extra, project="CMS", env=None):
    return workspace.run("kubectl-openstack", "login", "--user", user, "--project", project, "--password-stdin",
                         *extra, input=PASSWORD + "\n", env=env)


def cached_token(workspace) -> dict:
    (entry,) = workspace.cache_entries().values()
    return entry


def test_seed_command_line_configures_kubectl_and_get_pods_answers_from_the_cms_namespace(
        keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", f"-user={alice['name']}", f"-password={PASSWORD}", "-project=CMS")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubectl configured correctly\n"
    assert "visible to other users in `ps`" in result.stderr
    pods = workspace.kubectl("get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert pods.stdout.strip() == "No resources found in cms namespace." or \
        pods.stderr.strip() == "No resources found in cms namespace."
    served = [r for r in site.requests if r["namespace"] == "cms"]
    assert served and all(r["user"] == alice["name"] and r["status"] == 200 for r in served)


def test_seed_form_with_separate_values_and_force(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "-user", alice["name"], "-password", PASSWORD, "-project", "CMS",
                           "-force")
    assert result.returncode == 0, result.stderr
    assert "kubectl configured correctly" in result.stdout


def test_kubeconfig_holds_an_exec_user_and_no_secret(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    config = workspace.config()
    (user,) = config["users"]
    exec_ = user["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1"
    assert exec_["interactiveMode"] == "IfAvailable"
    # The get-token sh front installed beside the plugin, told which plugin and which ready credential.
    assert os.path.isabs(exec_["command"]) and exec_["command"].endswith("kubectl_caas_front")
    env = {item["name"]: item["value"] for item in exec_["env"]}
    assert os.path.isabs(env["KUBECTL_CAAS_PLUGIN"]) and env["KUBECTL_CAAS_PLUGIN"].endswith("kubectl-openstack")
    assert (workspace.cache / env["KUBECTL_CAAS_READY"]).is_file()
    assert exec_["args"][:3] == ["get-token", "--auth-url", keystone.url]
    assert "--user" in exec_["args"] and "--project" in exec_["args"]
    assert config["contexts"][0]["context"]["namespace"] == "cms"
    assert config["current-context"] == "cms"
    entry = cached_token(workspace)
    raw = workspace.kubeconfig.read_text()
    for secret in (PASSWORD, entry["tokens"]["keystone"]["value"], entry["application_credential"]["secret"]):
        assert secret not in raw
    assert stat.S_IMODE(workspace.kubeconfig.stat().st_mode) == 0o600
    for path in workspace.cache.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(workspace.cache.stat().st_mode) == 0o700


def test_two_projects_get_two_contexts_each_in_its_namespace(keystone, site, workspace, alice):
    assert login(workspace, alice["name"], project="CMS").returncode == 0
    assert login(workspace, alice["name"], project="ATLAS").returncode == 0
    assert workspace.config()["current-context"] == "atlas"
    for context in ("cms", "atlas"):
        pods = workspace.kubectl("--context", context, "get", "pods")
        assert pods.returncode == 0, pods.stderr
        assert f"No resources found in {context} namespace." in pods.stdout + pods.stderr
    # A CMS token does not open the atlas namespace: the contexts really hold different tokens.
    denied = workspace.kubectl("--context", "cms", "get", "pods", "-n", "atlas")
    assert denied.returncode != 0 and "Forbidden" in denied.stderr


def test_login_all_projects_makes_one_context_per_project(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--all-projects",
                           "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert sorted(c["name"] for c in workspace.config()["contexts"]) == ["atlas", "cms"]
    assert len(workspace.cache_entries()) == 2


def test_cache_hit_makes_no_keystone_call(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    keystone.clear_requests()
    first = exec_credential(workspace.run("kubectl-openstack", *args))
    second = exec_credential(workspace.run("kubectl-openstack", *args))
    assert keystone.requests() == []
    assert first["status"]["token"] == second["status"]["token"] == cached_token(workspace)["tokens"]["keystone"]["value"]
    pods = workspace.kubectl("get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert keystone.logins() == []


def test_projects_lists_name_and_id(keystone, site, workspace, alice, projects):
    result = workspace.run("kubectl-openstack", "projects", "--user", alice["name"], "--password-stdin",
                           input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(f"{name}\t{pid}" for name, pid in projects.items())


def test_wrong_password_is_one_line_naming_user_domain_and_401(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--password-stdin", input="wrong\n")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert alice["name"] in lines[0] and "domain default" in lines[0] and "HTTP 401" in lines[0]
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}


def test_unknown_project_lists_the_users_projects(keystone, site, workspace, alice):
    result = login(workspace, alice["name"], project="NOPE")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "NOPE" in line and "ATLAS, CMS" in line
    assert not workspace.kubeconfig.exists()


def test_unreachable_keystone_names_the_url(site, workspace, alice):
    url = "https://127.0.0.1:9/v3"
    result = login(workspace, alice["name"], env={"OS_AUTH_URL": url})
    assert result.returncode == 4
    (line,) = result.stderr.strip().splitlines()
    assert url in line and "Traceback" not in result.stderr


def test_untrusted_keystone_certificate_suggests_cacert(keystone, site, workspace, alice, tmp_path):
    other_ca = make_untrusted_ca(tmp_path / "other")
    result = login(workspace, alice["name"], env={"OS_CACERT": str(other_ca)})
    assert result.returncode == 4
    (line,) = result.stderr.strip().splitlines()
    assert "TLS" in line and "--cacert" in line and "CloudVenetoCAs.pem" in line


def test_explicit_cacert_wins_over_requests_ca_bundle(keystone, site, workspace, alice, tmp_path):
    other_ca = make_untrusted_ca(tmp_path / "other")
    result = login(workspace, alice["name"], env={"REQUESTS_CA_BUNDLE": str(other_ca),
                                                  "SSL_CERT_FILE": str(other_ca), "CURL_CA_BUNDLE": str(other_ca)})
    assert result.returncode == 0, result.stderr


def test_existing_context_for_another_server_is_kept_without_force(keystone, site, workspace, alice):
    assert login(workspace, alice["name"], env={"CAAS_SERVER": "https://127.0.0.1:1"}).returncode == 0
    before = workspace.kubeconfig.read_bytes()
    keystone.clear_requests()
    refused = login(workspace, alice["name"])
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert workspace.kubeconfig.read_bytes() == before
    assert keystone.logins() == []  # refused before creating anything on Keystone
    assert login(workspace, alice["name"], "--force").returncode == 0
    assert workspace.kubectl("get", "pods").returncode == 0


def test_relogin_for_the_same_context_just_renews_it(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    first = cached_token(workspace)["tokens"]["keystone"]["value"]
    assert login(workspace, alice["name"]).returncode == 0
    assert cached_token(workspace)["tokens"]["keystone"]["value"] != first
    assert len(workspace.config()["contexts"]) == 1
    # the earlier login's application credential was replaced, not left behind
    (credential,) = keystone.list_application_credentials(alice["id"])
    assert credential["id"] == cached_token(workspace)["application_credential"]["id"]


def test_expired_token_is_renewed_through_the_application_credential_with_no_password_anywhere(
        keystone_factory, kube_api_for, workspace, pki):
    short = keystone_factory(expiration=20)
    project = short.create_project("CMS")
    short.create_user("carol", PASSWORD, projects=[project])
    standin = kube_api_for(short)
    workspace.env.update({"OS_AUTH_URL": short.url, "OS_CACERT": str(short.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    assert login(workspace, "carol").returncode == 0
    first = cached_token(workspace)["tokens"]["keystone"]
    assert workspace.kubectl("get", "pods").returncode == 0
    short.clear_requests()
    wait_until(first["expires_at"])  # the token is now dead at Keystone too
    assert not short.validate_token(first["value"])
    pods = workspace.kubectl("get", "pods")  # no password in the environment, no terminal
    assert pods.returncode == 0, pods.stderr
    assert "No resources found in cms namespace." in pods.stdout + pods.stderr
    logins = short.logins()
    assert len(logins) == 1 and logins[0]["auth_methods"] == ["application_credential"]
    assert cached_token(workspace)["tokens"]["keystone"]["value"] != first["value"]


def test_application_credential_refused_by_policy_is_said_once_and_login_carries_on(
        keystone_factory, kube_api_for, workspace):
    strict = keystone_factory(policy={"identity:create_application_credential": "!"})
    project = strict.create_project("CMS")
    strict.create_user("dave", PASSWORD, projects=[project])
    standin = kube_api_for(strict)
    workspace.env.update({"OS_AUTH_URL": strict.url, "OS_CACERT": str(strict.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    result = login(workspace, "dave")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("HTTP 403") == 1
    assert "application_credential" not in cached_token(workspace)
    assert workspace.kubectl("get", "pods").returncode == 0


def test_get_token_without_anything_to_renew_with_fails_at_once_saying_to_login(keystone, site, workspace, alice):
    assert login(workspace, alice["name"], "--no-remember").returncode == 0
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    result = workspace.run("kubectl-openstack", *args)
    assert result.returncode == 5 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "kubectl openstack login" in line
    renewed = workspace.run("kubectl-openstack", *args, env={"OS_PASSWORD": PASSWORD})  # automation
    assert exec_credential(renewed)["status"]["token"]


def test_environment_application_credential_serves_automation(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    credential = cached_token(workspace)["application_credential"]
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    keystone.clear_requests()
    result = workspace.run("kubectl-openstack", *args, env={"OS_APPLICATION_CREDENTIAL_ID": credential["id"],
                                                          "OS_APPLICATION_CREDENTIAL_SECRET": credential["secret"]})
    assert exec_credential(result)["status"]["token"]
    assert [r["auth_methods"] for r in keystone.logins()] == [["application_credential"]]


def test_status_shows_user_project_expiry_and_remembered_until(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    result = workspace.run("kubectl-openstack", "status")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("* cms:") and alice["name"] in line and "project CMS" in line
    assert "token " in line and "remembered until" in line and "days" in line


def test_logout_revokes_the_token_deletes_the_application_credential_and_clears_the_cache(
        keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    assert login(workspace, alice["name"], project="ATLAS").returncode == 0
    tokens = [e["tokens"]["keystone"]["value"] for e in workspace.cache_entries().values()]
    assert len(keystone.list_application_credentials(alice["id"])) == 2
    result = workspace.run("kubectl-openstack", "logout", "--all", "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert all(not keystone.validate_token(token) for token in tokens)
    assert keystone.list_application_credentials(alice["id"]) == []
    assert workspace.cache_entries() == {}
    pods = workspace.kubectl("get", "pods")
    assert pods.returncode != 0 and "kubectl openstack login" in pods.stderr


def test_logout_without_a_password_forgets_locally_and_says_when_the_credential_expires(
        keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    token = cached_token(workspace)["tokens"]["keystone"]["value"]
    result = workspace.run("kubectl-openstack", "logout")
    assert result.returncode == 0, result.stderr
    assert "stays valid there until" in result.stderr
    assert not keystone.validate_token(token)
    assert workspace.cache_entries() == {}
    assert len(keystone.list_application_credentials(alice["id"])) == 1


def test_parallel_cold_calls_cause_one_login(keystone, site, workspace, alice):
    assert login(workspace, alice["name"], "--no-remember").returncode == 0
    # As kubectl runs it: through the shell front, which sends the misses to Python.
    argv, env = workspace.exec_as_kubectl()
    assert argv[0].endswith("kubectl_caas_front")
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    keystone.clear_requests()
    env = {**env, "OS_PASSWORD": PASSWORD}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(16)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    assert len({json.loads(out)["status"]["token"] for out, _ in outputs}) == 1
    assert len(keystone.logins()) == 1
    # and the next call is a hit the front serves (the entry's ready credential), no login
    hit = workspace.front_alone()
    assert json.loads(hit.stdout)["status"]["token"] == json.loads(outputs[0][0])["status"]["token"]
    assert len(keystone.logins()) == 1


def test_clouds_yaml_entry_logs_in(keystone, site, workspace, alice):
    config_dir = workspace.home / ".config" / "openstack"
    config_dir.mkdir(parents=True)
    (config_dir / "clouds.yaml").write_text(json.dumps({"clouds": {"cloudveneto": {
        "auth": {"auth_url": keystone.url, "username": alice["name"], "project_name": "CMS",
                 "user_domain_name": "Default", "project_domain_id": "default"},
        "cacert": str(keystone.ca_cert)}}}))
    (config_dir / "secure.yaml").write_text(json.dumps({"clouds": {"cloudveneto": {"auth": {"password": PASSWORD}}}}))
    env = {"OS_AUTH_URL": "", "OS_CACERT": "", "OS_CLOUD": "cloudveneto"}
    result = workspace.run("kubectl-openstack", "login", "--no-remember", env=env)
    assert result.returncode == 0, result.stderr
    assert workspace.kubectl("get", "pods", env=env).returncode == 0
    # Renewal finds the password in the same clouds.yaml entry, even without OS_CLOUD set.
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    assert args[args.index("--os-cloud") + 1] == "cloudveneto"
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    keystone.clear_requests()
    assert exec_credential(workspace.run("kubectl-openstack", *args))["status"]["token"]
    assert [r["auth_methods"] for r in keystone.logins()] == [["password"]]


def test_missing_server_says_how_to_set_it(keystone, site, workspace, alice):
    result = login(workspace, alice["name"], env={"CAAS_SERVER": ""})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--server" in line and "CAAS_SERVER" in line


def test_two_logins_at_the_same_time_both_land(keystone, site, workspace, alice):
    procs = [subprocess.Popen([str(BIN / "kubectl-openstack"), "login", "--user", alice["name"], "--project", project,
                               "--password-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=workspace.env) for project in ("CMS", "ATLAS")]
    outputs = [p.communicate(PASSWORD, timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(c["name"] for c in workspace.config()["contexts"]) == ["atlas", "cms"]
    assert len(workspace.config()["users"]) == 2


def test_interactive_renewal_asks_for_the_password_on_the_terminal(
        keystone, site, workspace, alice):
    assert login(workspace, alice["name"], "--no-remember").returncode == 0
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for path in workspace.cache.glob("*.json"):
        path.unlink()
    info = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                       "spec": {"interactive": True}})
    code, output, asked = run_on_terminal([str(BIN / "kubectl-openstack"), *args],
                                          {**workspace.env, "KUBERNETES_EXEC_INFO": info}, {"password": PASSWORD})
    assert asked == ["password"] and code == 0, output
    assert PASSWORD not in output  # typed without echo
    token = json.loads(output[output.index("{"):])["status"]["token"]
    assert token == cached_token(workspace)["tokens"]["keystone"]["value"]


def test_empty_password_is_refused_with_one_line(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--password-stdin", input="\n")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "empty" in line
    code, output, asked = run_on_terminal([str(BIN / "kubectl-openstack"), "login", "--user", alice["name"],
                                           "--project", "CMS"], workspace.env, {"password": ""})
    assert asked == ["password"] and code == 2 and "the password is empty" in output


def test_broken_kubeconfig_is_refused_before_keystone_is_asked_even_with_force(keystone, site, workspace, alice):
    workspace.kubeconfig.parent.mkdir(parents=True)
    workspace.kubeconfig.write_text("clusters: [unclosed\n")
    keystone.clear_requests()
    result = login(workspace, alice["name"], "--force")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(workspace.kubeconfig) in line and "not valid YAML" in line
    assert keystone.requests() == []  # no token, no application credential created in vain
    assert workspace.kubeconfig.read_text() == "clusters: [unclosed\n"


def test_credential_made_by_an_interactive_renewal_is_deleted_at_logout(keystone, site, workspace, alice):
    assert login(workspace, alice["name"]).returncode == 0
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    first = entry["application_credential"]["id"]
    # The remembered credential disappears on the server (deleted in the dashboard, say) and the
    # token is due: kubectl at a terminal asks for the password and remembers the login again.
    keystone._admin("DELETE", f"/users/{alice['id']}/application_credentials/{first}")
    entry["tokens"] = {}
    path.write_text(json.dumps(entry))
    info = json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
                       "spec": {"interactive": True}})
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    code, output, asked = run_on_terminal([str(BIN / "kubectl-openstack"), *args],
                                          {**workspace.env, "KUBERNETES_EXEC_INFO": info}, {"password": PASSWORD})
    assert code == 0 and asked == ["password"], output
    (second,) = keystone.list_application_credentials(alice["id"])
    assert second["id"] != first
    logout = workspace.run("kubectl-openstack", "logout", "--password-stdin", input=PASSWORD)
    assert logout.returncode == 0, logout.stderr
    assert keystone.list_application_credentials(alice["id"]) == []


def test_forced_refresh_replaces_a_still_valid_token_with_the_remembered_credential(keystone, site, workspace,
                                                                                     alice):
    assert login(workspace, alice["name"]).returncode == 0
    before = cached_token(workspace)["tokens"]["keystone"]
    forced = workspace.run("kubectl-openstack", "get-token", "--force-refresh")
    assert forced.returncode == 0, forced.stderr
    after = cached_token(workspace)["tokens"]["keystone"]
    assert after["value"] != before["value"] and after["value"] == exec_credential(forced)["status"]["token"]
    # The ready credential moved with it, for the context's own args: the front alone serves it.
    served = workspace.front_alone()
    assert exec_credential(served)["status"]["token"] == after["value"], served.stderr
    # kubectl is then served the new token from the cache
    pods = workspace.kubectl("get", "pods", "-n", "cms")
    assert pods.returncode == 0, pods.stderr
    assert cached_token(workspace)["tokens"]["keystone"]["value"] == after["value"]

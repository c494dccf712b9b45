"""Context and namespace names derived from Keystone project names: never two projects in one
context, never a namespace kubectl would refuse, suggested commands a shell reads back as meant.
Against a real Keystone; the kubeconfig is then read by real kubectl."""
from __future__ import annotations

import json
import shlex

import pytest

from tests.integration.harness import PASSWORD, unique


@pytest.fixture
def twins(keystone):
    """Two projects whose names differ only in case, in two domains, and a user in both."""
    name = unique("Dup")
    other_domain = keystone.create_domain(unique("other"))
    upper = keystone.create_project(name)
    lower = keystone.create_project(name.lower(), domain_id=other_domain)
    user = unique("tess")
    keystone.create_user(user, PASSWORD, projects=[upper, lower])
    return {"name": name, "user": user, "ids": {upper: "default", lower: other_domain}, "other_domain": other_domain}


def contexts(workspace):
    """{context name: its exec args} as real kubectl reads the kubeconfig."""
    view = workspace.kubectl("config", "view", "-o", "json")
    assert view.returncode == 0, view.stderr
    config = json.loads(view.stdout)
    users = {u["name"]: u["user"]["exec"]["args"] for u in config["users"]}
    return {c["name"]: (users[c["context"]["user"]], c["context"].get("namespace")) for c in config["contexts"]}


def project_of(args):
    options = dict(zip(args[1::2], args[2::2]))
    return options.get("--project"), options.get("--project-domain-id")


def test_all_projects_whose_names_differ_only_in_case_get_two_contexts(keystone, site, workspace, twins):
    result = workspace.run("kubectl-openstack", "login", "--user", twins["user"], "--all-projects",
                           "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    found = contexts(workspace)
    base = twins["name"].lower()
    assert len(found) == 2 and base in found
    (suffixed,) = [name for name in found if name != base]
    assert suffixed.startswith(base + "-")
    assert f"gets context {suffixed!r}" in result.stderr
    # each context really names its own project
    assert {project_of(args) for args, _ns in found.values()} == {(twins["name"], "default"),
                                                                  (base, twins["other_domain"])}
    assert len(workspace.cache_entries()) == 2
    # and each one gets a token for its own project
    for name in found:
        pods = workspace.kubectl("--context", name, "get", "pods")
        assert pods.returncode == 0, pods.stderr


def test_a_later_login_does_not_take_over_another_projects_context(keystone, site, workspace, twins):
    first = workspace.run("kubectl-openstack", "login", "--user", twins["user"], "--project", twins["name"],
                          "--password-stdin", input=PASSWORD)
    assert first.returncode == 0, first.stderr
    second = workspace.run("kubectl-openstack", "login", "--user", twins["user"], "--project", twins["name"].lower(),
                           "--project-domain-id", twins["other_domain"], "--password-stdin", input=PASSWORD)
    assert second.returncode == 0, second.stderr
    found = contexts(workspace)
    assert project_of(found[twins["name"].lower()][0]) == (twins["name"], "default")  # untouched
    assert len(found) == 2
    # logging in to the first project again reuses its context, no third one appears
    again = workspace.run("kubectl-openstack", "login", "--user", twins["user"], "--project", twins["name"],
                          "--password-stdin", input=PASSWORD)
    assert again.returncode == 0, again.stderr
    assert len(contexts(workspace)) == 2


def test_a_project_name_that_is_not_a_namespace_gives_a_context_without_one(keystone, site, workspace):
    name = unique("Tier2_CMS")
    project_id = keystone.create_project(name)
    user = unique("nina")
    keystone.create_user(user, PASSWORD, projects=[project_id])
    result = workspace.run("kubectl-openstack", "login", "--user", user, "--project", name, "--password-stdin",
                           input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "not make a valid Kubernetes namespace" in result.stderr and "--namespace" in result.stderr
    ((_args, namespace),) = contexts(workspace).values()
    assert namespace is None


def test_an_invalid_namespace_option_is_refused_before_anything_happens(keystone, site, workspace, alice):
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--namespace", "Bad_NS", "--password-stdin", input=PASSWORD)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "not a valid Kubernetes namespace" in result.stderr
    assert not workspace.kubeconfig.exists() and workspace.cache_entries() == {}
    assert keystone.list_application_credentials(alice["id"]) == []  # no login happened


def test_suggested_commands_quote_the_context_name(keystone, site, workspace, alice):
    name = "my ctx; rm -rf ~"
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--context", name, "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "try `" in line]
    command = line.split("`")[1]
    assert shlex.split(command) == ["kubectl", "--context", name, "get", "pods"]
    pods = workspace.kubectl(*shlex.split(command)[1:])
    assert pods.returncode == 0, pods.stderr


def test_a_login_scoped_by_id_records_the_projects_real_name(keystone, site, workspace, alice, projects):
    # Horizon's clouds.yaml names the project by id too; a project name left in the environment by an
    # earlier RC file loses (keystoneauth scopes by id), and must not become the context's project.
    config = workspace.home / ".config" / "openstack"
    config.mkdir(parents=True)
    (config / "clouds.yaml").write_text(json.dumps({"clouds": {"openstack": {"auth": {
        "auth_url": keystone.url, "username": alice["name"], "project_id": projects["CMS"], "project_name": "CMS",
        "user_domain_name": "Default"}, "identity_api_version": 3, "cacert": str(keystone.ca_cert)}}}))
    result = workspace.run("kubectl-openstack", "login", "--os-cloud", "openstack", "--password-stdin",
                           input=PASSWORD, env={"OS_PROJECT_NAME": "ATLAS"})
    assert result.returncode == 0, result.stderr
    (args, namespace), = contexts(workspace).values()
    assert project_of(args)[0] == "CMS" and namespace == "cms"
    status = workspace.run("kubectl-openstack", "status", env={"OS_PROJECT_NAME": "ATLAS"})
    assert "project CMS" in status.stdout and "ATLAS" not in status.stdout

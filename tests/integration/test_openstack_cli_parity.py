"""`kubectl-openstack login` authenticates as the `openstack` command would, or is refused as it is.

python-openstackclient (its own virtualenv, tests/servers/osc.py) is the oracle for how OpenStack's
tools read clouds.yaml, secure.yaml and the OS_* variables. For each situation both programs run in
the same HOME, with the same environment and files and no identity option: `openstack token issue
-f json` and `kubectl-openstack login`. Both must end up as the same user in the same project with
the same Keystone auth method (as the real Keystone logged it), or both must be refused.

Each situation also says what the openstack command does there, and that is checked first: a
situation whose set-up is broken (a missing CA, say) cannot pass as "both refused".
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pytest
import yaml

from tests.integration.harness import PASSWORD, Workspace, unique
from tests.integration.test_dashboard_files import (
    app_cred_values,
    create_application_credential,
    horizon_download,
    keep_keystone_local,
    project_values,
    sourced_environment,
    write_clouds,
)
from tests.servers.osc import openstack_from_env


@pytest.fixture(scope="session")
def openstack_cli() -> Path:
    """The `openstack` command of the pinned python-openstackclient (its venv is built once)."""
    return openstack_from_env()


class People:
    """The users, projects and application credentials a situation needs, made when first asked for."""

    def __init__(self, keystone, projects: Dict[str, str]):
        self.keystone = keystone
        self.projects = dict(projects)

    @cached_property
    def alice(self) -> Dict[str, str]:
        """A user of the default domain, member of CMS and ATLAS (and of QST once it is asked for)."""
        name = unique("alice")
        return {"name": name, "id": self.keystone.create_user(name, PASSWORD, projects=self.projects.values())}

    @cached_property
    def physics(self) -> Dict[str, str]:
        """Another domain, holding project QST."""
        name = unique("Physics")
        domain_id = self.keystone.create_domain(name)
        return {"name": name, "id": domain_id, "qst": self.keystone.create_project("QST", domain_id=domain_id)}

    @cached_property
    def qst(self) -> str:
        self.keystone.assign_role(self.alice["id"], self.physics["qst"])
        return self.physics["qst"]

    @cached_property
    def bob(self) -> Dict[str, str]:
        """A user of the Physics domain, member of its QST."""
        name = unique("bob")
        user_id = self.keystone.create_user(name, PASSWORD, domain_id=self.physics["id"], projects=[self.physics["qst"]])
        return {"name": name, "id": user_id}

    @cached_property
    def cms_credential(self) -> Dict[str, str]:
        return create_application_credential(self.keystone, self.alice["name"], "CMS")

    @cached_property
    def atlas_credential(self) -> Dict[str, str]:
        return create_application_credential(self.keystone, self.alice["name"], "ATLAS")

    def openrc(self, workspace: Workspace, project: str = "CMS", **values: str) -> Dict[str, str]:
        """The variables Horizon's project RC file sets for alice, once sourced (password typed)."""
        rc = workspace.home / f"{project}-openrc.sh"
        project_id = self.qst if project == "QST" else self.projects[project]
        rc.write_text(horizon_download("project-openrc.sh", {
            **project_values(self.keystone, self.alice["name"], project, project_id), **values}))
        return sourced_environment(rc)

    def clouds(self, workspace: Workspace, text: str, secure: Optional[dict] = None, directory: Optional[Path] = None):
        """Write clouds.yaml (and secure.yaml) where openstacksdk looks first in HOME."""
        write_clouds(directory or workspace.home / ".config" / "openstack", text, secure)

    def horizon_clouds(self, workspace: Workspace, project: str = "CMS", **where) -> None:
        """Horizon's project clouds.yaml for alice, untouched; password and CA in secure.yaml."""
        project_id = self.qst if project == "QST" else self.projects[project]
        text = horizon_download("project-clouds.yaml", project_values(self.keystone, self.alice["name"], project,
                                                                      project_id))
        self.clouds(workspace, text, {"clouds": {"openstack": {"auth": {"password": PASSWORD},
                                                               "cacert": str(self.keystone.ca_cert)}}}, **where)


# --- the situations ------------------------------------------------------------------------

# A situation writes its files and returns (the environment, what `openstack token issue` gives:
# (user id, project id) or None for a refusal).
Expected = Optional[Tuple[str, str]]
Situation = Callable[[People, Workspace], Tuple[Dict[str, str], Expected]]
SITUATIONS: Dict[str, Tuple[Situation, tuple]] = {}


def situation(*marks):
    def register(build: Situation) -> Situation:
        SITUATIONS[build.__name__] = (build, marks)
        return build
    return register


def ca(people: People) -> Dict[str, str]:
    return {"OS_CACERT": str(people.keystone.ca_cert)}


@situation()
def horizon_openrc(people, workspace):
    """Horizon's project RC file sourced (it sets OS_PROJECT_ID and OS_PROJECT_NAME), CA exported."""
    return {**people.openrc(workspace), **ca(people)}, (people.alice["id"], people.projects["CMS"])


@situation()
def horizon_openrc_for_a_project_in_another_domain(people, workspace):
    env = people.openrc(workspace, "QST", project_domain_id=people.physics["id"])
    return {**env, **ca(people)}, (people.alice["id"], people.qst)


@situation()
def horizon_openrc_with_auth_url_without_v3(people, workspace):
    """Some catalogs publish the identity endpoint without /v3 (REFERENCE §9)."""
    env = people.openrc(workspace, auth_url=people.keystone.url[: -len("/v3")])
    return {**env, **ca(people)}, (people.alice["id"], people.projects["CMS"])


@situation()
def horizon_app_cred_openrc(people, workspace):
    rc = workspace.home / "app-cred-openrc.sh"
    rc.write_text(horizon_download("app-cred-openrc.sh", app_cred_values(people.keystone, people.cms_credential)))
    return {**sourced_environment(rc), **ca(people)}, (people.alice["id"], people.projects["CMS"])


@situation()
def app_cred_by_name_in_the_environment(people, workspace):
    env = {"OS_AUTH_TYPE": "v3applicationcredential", "OS_AUTH_URL": people.keystone.url,
           "OS_APPLICATION_CREDENTIAL_NAME": people.cms_credential["name"],
           "OS_APPLICATION_CREDENTIAL_SECRET": people.cms_credential["secret"],
           "OS_USERNAME": people.alice["name"], "OS_USER_DOMAIN_NAME": "Default"}
    return {**env, **ca(people)}, (people.alice["id"], people.projects["CMS"])


@situation()
def horizon_clouds_yaml_and_secure_yaml(people, workspace):
    people.horizon_clouds(workspace)
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["CMS"])


@situation()
def horizon_clouds_yaml_with_a_leftover_project_name(people, workspace):
    """OS_PROJECT_NAME does replace the file's project_name in openstackclient, but Horizon's file
    also has project_id, and keystoneauth scopes by the id when it has one."""
    people.horizon_clouds(workspace)
    return {"OS_CLOUD": "openstack", "OS_PROJECT_NAME": "ATLAS"}, (people.alice["id"], people.projects["CMS"])


@situation()
def clouds_yaml_project_name_with_a_leftover_project_name(people, workspace):
    """Without a project_id in the file, the environment's project name wins: OS_* beat the file."""
    people.clouds(workspace, yaml.safe_dump({"clouds": {"openstack": {
        "auth": {"auth_url": people.keystone.url, "username": people.alice["name"], "password": PASSWORD,
                 "project_name": "CMS", "user_domain_name": "Default", "project_domain_id": "default"},
        "identity_api_version": 3, "cacert": str(people.keystone.ca_cert)}}}))
    return {"OS_CLOUD": "openstack", "OS_PROJECT_NAME": "ATLAS"}, (people.alice["id"], people.projects["ATLAS"])


@situation()
def horizon_clouds_yaml_under_a_leftover_openrc(people, workspace):
    """The ATLAS RC file sourced earlier in the same shell: its OS_PROJECT_ID beats the file's."""
    env = people.openrc(workspace, "ATLAS")
    people.horizon_clouds(workspace)
    return {**env, "OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["ATLAS"])


@situation()
def horizon_clouds_yaml_for_a_project_in_another_domain(people, workspace):
    """Horizon's file has project_id and project_name but no project domain: scoped by the id."""
    people.horizon_clouds(workspace, "QST")
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.qst)


@situation()
def horizon_app_cred_clouds_yaml(people, workspace):
    """By id, with `auth_type: v3applicationcredential` in the file."""
    people.clouds(workspace, horizon_download("app-cred-clouds.yaml",
                                              app_cred_values(people.keystone, people.cms_credential)),
                  {"clouds": {"openstack": {"cacert": str(people.keystone.ca_cert)}}})
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["CMS"])


@situation()
def app_cred_by_name_in_clouds_yaml(people, workspace):
    people.clouds(workspace, yaml.safe_dump({"clouds": {"openstack": {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": people.keystone.url, "application_credential_name": people.cms_credential["name"],
                 "application_credential_secret": people.cms_credential["secret"],
                 "username": people.alice["name"], "user_domain_name": "Default"},
        "cacert": str(people.keystone.ca_cert)}}}))
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["CMS"])


@situation()
def auth_type_password_in_clouds_yaml_beats_an_app_cred_in_the_environment(people, workspace):
    """The file says password; OS_APPLICATION_CREDENTIAL_* (for ATLAS) without OS_AUTH_TYPE do not
    change that: openstack logs in to the file's CMS with the password."""
    people.horizon_clouds(workspace)
    path = workspace.home / ".config" / "openstack" / "clouds.yaml"
    path.write_text(path.read_text() + '\n    auth_type: "password"\n')
    return ({"OS_CLOUD": "openstack", "OS_APPLICATION_CREDENTIAL_ID": people.atlas_credential["id"],
             "OS_APPLICATION_CREDENTIAL_SECRET": people.atlas_credential["secret"]},
            (people.alice["id"], people.projects["CMS"]))


@situation()
def app_cred_in_clouds_yaml_without_auth_type(people, workspace):
    people.clouds(workspace, yaml.safe_dump({"clouds": {"openstack": {
        "auth": {"auth_url": people.keystone.url, "application_credential_id": people.cms_credential["id"],
                 "application_credential_secret": people.cms_credential["secret"]},
        "cacert": str(people.keystone.ca_cert)}}}))
    return {"OS_CLOUD": "openstack"}, None


@situation()
def legacy_tenant_name_in_clouds_yaml(people, workspace):
    people.clouds(workspace, yaml.safe_dump({"clouds": {"openstack": {
        "auth": {"auth_url": people.keystone.url, "username": people.alice["name"], "password": PASSWORD,
                 "tenant_name": "CMS", "user_domain_name": "Default"},
        "identity_api_version": 3, "cacert": str(people.keystone.ca_cert)}}}))
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["CMS"])


@situation()
def domain_name_for_user_and_project(people, workspace):
    """`domain_name` alone stands for both user_domain_name and project_domain_name."""
    people.clouds(workspace, yaml.safe_dump({"clouds": {"openstack": {
        "auth": {"auth_url": people.keystone.url, "username": people.bob["name"], "password": PASSWORD,
                 "project_name": "QST", "domain_name": people.physics["name"]},
        "identity_api_version": 3, "cacert": str(people.keystone.ca_cert)}}}))
    return {"OS_CLOUD": "openstack"}, (people.bob["id"], people.physics["qst"])


@situation()
def os_client_config_file_naming_a_missing_file(people, workspace):
    """openstacksdk goes on with its usual search and finds ~/.config/openstack/clouds.yaml."""
    people.horizon_clouds(workspace)
    return ({"OS_CLOUD": "openstack", "OS_CLIENT_CONFIG_FILE": str(workspace.home / "no-such-clouds.yaml")},
            (people.alice["id"], people.projects["CMS"]))


@situation()
def os_client_secure_file_elsewhere(people, workspace):
    people.horizon_clouds(workspace, directory=workspace.home / "private")
    (workspace.home / "private" / "clouds.yaml").rename(workspace.home / "clouds.yaml")  # ./clouds.yaml
    return ({"OS_CLOUD": "openstack", "OS_CLIENT_SECURE_FILE": str(workspace.home / "private" / "secure.yaml")},
            (people.alice["id"], people.projects["CMS"]))


@situation()
def clouds_yaml_in_xdg_config_home(people, workspace):
    workspace.env["XDG_CONFIG_HOME"] = str(workspace.home / "xdg")
    people.horizon_clouds(workspace, directory=workspace.home / "xdg" / "openstack")
    return {"OS_CLOUD": "openstack"}, (people.alice["id"], people.projects["CMS"])


@situation()
def lone_cloud_and_no_os_cloud(people, workspace):
    """openstacksdk takes the only cloud of clouds.yaml (secure.yaml's entry of the same name is the
    same cloud) when OS_CLOUD is unset and no other OS_* variable makes an `envvars` cloud."""
    people.horizon_clouds(workspace)
    return {}, (people.alice["id"], people.projects["CMS"])


@situation()
def lone_cloud_with_os_cacert_exported(people, workspace):
    """The same file, but OS_CACERT exported as the user guide says: to openstacksdk any OS_* variable
    but a selector (OS_CLOUD, OS_REGION_NAME, OS_CLIENT_*_FILE) makes an `envvars` cloud, which is
    then chosen instead of the file's, and it has no Keystone URL: refused."""
    people.horizon_clouds(workspace)
    return ca(people), None


# --- the test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Who a program logged in as, where, and with which Keystone auth method; all None when refused."""

    user_id: Optional[str]
    project_id: Optional[str]
    methods: Tuple[str, ...] = ()
    said: str = field(default="", compare=False)  # shown when the assertion fails

    @property
    def refused(self) -> bool:
        return self.user_id is None


def first_login_methods(keystone) -> Tuple[str, ...]:
    logins = keystone.logins()
    return tuple(logins[0]["auth_methods"]) if logins else ()


def openstack_outcome(openstack_cli: Path, workspace: Workspace, env: Dict[str, str], keystone) -> Outcome:
    import json

    keystone.clear_requests()
    done = subprocess.run([str(openstack_cli), "token", "issue", "-f", "json"], capture_output=True, text=True,
                          env={**workspace.env, **env}, cwd=workspace.home, stdin=subprocess.DEVNULL, timeout=90)
    if done.returncode != 0:
        return Outcome(None, None, said=done.stderr.strip()[-500:])
    token = json.loads(done.stdout)
    return Outcome(token["user_id"], token["project_id"], first_login_methods(keystone))


def login_outcome(workspace: Workspace, env: Dict[str, str], keystone) -> Outcome:
    keystone.clear_requests()
    done = workspace.run("kubectl-openstack", "login", env=env, timeout=90)
    if done.returncode != 0:
        return Outcome(None, None, said=done.stderr.strip()[-500:])
    (entry,) = workspace.cache_entries().values()
    return Outcome(entry["user"]["id"], entry["project"]["id"], first_login_methods(keystone), said=done.stderr)


@pytest.mark.parametrize("name", [pytest.param(name, marks=marks, id=name) for name, (_, marks) in SITUATIONS.items()])
def test_login_authenticates_as_the_openstack_cli_does(name, keystone, projects, workspace, openstack_cli):
    for variable in ("OS_AUTH_URL", "OS_CACERT"):
        workspace.env.pop(variable, None)
    # Login writes the kubeconfig but never calls the API server: any https URL will do.
    workspace.env["CAAS_SERVER"] = "https://127.0.0.1:6443"
    keep_keystone_local(workspace)
    build, _marks = SITUATIONS[name]
    env, expected = build(People(keystone, projects), workspace)

    theirs = openstack_outcome(openstack_cli, workspace, env, keystone)
    assert (None if theirs.refused else (theirs.user_id, theirs.project_id)) == expected, \
        f"the situation is not what it says: openstack gave {theirs}"
    ours = login_outcome(workspace, env, keystone)
    assert ours == theirs, f"kubectl-openstack: {ours}\nopenstack: {theirs}"

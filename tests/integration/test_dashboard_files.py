"""The files the OpenStack dashboard gives CloudVeneto users, used as a user would use them.

Horizon's four downloads (tests/data/horizon/: the project's "OpenStack RC File" and "OpenStack
clouds.yaml File", and the application credential's openrc and clouds.yaml) are filled in with the
real Keystone's values; a shell on a terminal sources an RC file and answers its password prompt,
then `kubectl-openstack login` runs with no identity option at all, real `kubectl get pods` answers
from the project's namespace, and once the token has expired a new shell with no password anywhere
gets a fresh one without being asked.

Horizon's files set no CA bundle and the test Keystone, like CloudVeneto's, has its own CA: users
pass it as the user guide says (`--cacert`, `export OS_CACERT=...`, or `cacert:` in clouds.yaml).
"""
from __future__ import annotations

import json
import re
import shlex
import string
import subprocess
from pathlib import Path
from typing import Dict, Mapping, Optional

import pytest
import yaml

from tests.integration.harness import KUBECTL, PASSWORD, Workspace, run_on_terminal, unique
from tests.integration.hostile_fixtures import age_cached_token

HORIZON = Path(__file__).resolve().parents[1] / "data" / "horizon"
HORIZON_VERSIONS = ("25.3.2", "26.0.0")
LATEST = HORIZON_VERSIONS[-1]
PLACEHOLDER = re.compile(r"\$([a-z_]+)")  # the shell's own variables ($OS_...) are upper case
RC_PASSWORD_PROMPT = "please enter your openstack password"  # the project RC file's `echo`, lower case
BASH = "/bin/bash"


# --- helpers shared with test_openstack_cli_parity.py --------------------------------------


def horizon_download(name: str, values: Mapping[str, str], version: str = LATEST) -> str:
    """One of Horizon's downloads as the dashboard would serve it for these values."""
    text = (HORIZON / version / name).read_text()
    names = set(PLACEHOLDER.findall(text))
    missing = names - set(values)
    assert not missing, f"{name} needs values for {sorted(missing)}"
    return string.Template(text).safe_substitute({key: values[key] for key in names})


def create_application_credential(keystone, user: str, project: str = "CMS", domain: str = "Default",
                                  name: Optional[str] = None) -> Dict[str, str]:
    """What the dashboard does for the user: POST /v3/users/{id}/application_credentials with the
    user's own project-scoped token. Returns id, secret, name and the project's id."""
    token, body = keystone.issue_token(user, PASSWORD, project=project, domain=domain)
    name = name or unique("kube")
    reply = keystone._http.post(f"{keystone.url}/users/{body['token']['user']['id']}/application_credentials",
                                headers={"X-Auth-Token": token}, timeout=30,
                                json={"application_credential": {"name": name, "description": "from the dashboard"}})
    assert reply.status_code == 201, reply.text
    credential = reply.json()["application_credential"]
    return {"id": credential["id"], "secret": credential["secret"], "name": name,
            "project_id": credential["project_id"]}


def project_values(keystone, user: str, project: str, project_id: str, project_domain_id: str = "default",
                   user_domain_name: str = "Default") -> Dict[str, str]:
    """The values Horizon puts into the project downloads for this user and project."""
    return {"auth_url": keystone.url, "username": user, "project_id": project_id, "project_name": project,
            "user_domain_name": user_domain_name, "project_domain_id": project_domain_id, "region": "RegionOne"}


def app_cred_values(keystone, credential: Mapping[str, str]) -> Dict[str, str]:
    return {"auth_url": keystone.url, "application_credential_id": credential["id"],
            "application_credential_secret": credential["secret"], "region": "RegionOne"}


def sourced_environment(path: Path, password: str = PASSWORD) -> Dict[str, str]:
    """The OS_* variables a shell has after `source <RC file>` (the password typed at its prompt)."""
    done = subprocess.run([BASH, "--noprofile", "--norc", "-c", 'source "$1" >/dev/null && env -0', "rc", str(path)],
                          input=password + "\n", capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                          timeout=30)
    assert done.returncode == 0, done.stderr
    pairs = (item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    return {key: value for key, value in pairs if key.startswith("OS_")}


def write_clouds(directory: Path, clouds: str, secure: Optional[dict] = None) -> Path:
    """clouds.yaml (text, as downloaded) and optionally secure.yaml (a mapping) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "clouds.yaml").write_text(clouds)
    if secure is not None:
        (directory / "secure.yaml").write_text(yaml.safe_dump(secure))
    return directory / "clouds.yaml"


# --- this module's fixtures and steps --------------------------------------------------------


@pytest.fixture
def user_shell(site, workspace: Workspace) -> Workspace:
    """A CloudVeneto user's shell before the RC file: CAAS_SERVER exported as the user guide says,
    but no OS_* variable (they come from the dashboard's files)."""
    for name in ("OS_AUTH_URL", "OS_CACERT"):
        workspace.env.pop(name, None)
    keep_keystone_local(workspace)
    return workspace


def keep_keystone_local(workspace: Workspace) -> None:
    """A user profile that shadows the built-in `cloudveneto` one with a Keystone URL on this
    machine where nothing listens: a test whose files give no Keystone URL can never reach the
    real CloudVeneto, whatever the code under test falls back to."""
    profiles = workspace.home / ".config" / "kubectl-caas" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "cloudveneto.json").write_text(json.dumps(
        {"plugin": "openstack", "auth_url": "https://127.0.0.1:9/v3", "user_domain_id": "default",
         "project_domain_id": "default"}))


def shell(workspace: Workspace, script: str, answers: Optional[Dict[str, str]] = None, env=None, timeout: float = 60):
    """`bash -c script` on a terminal in the user's HOME; answers prompts (see run_on_terminal).
    A prompt that is not answered keeps the shell waiting, and the test fails at `timeout`."""
    return run_on_terminal([BASH, "--noprofile", "--norc", "-c", f"cd ~ && {script}"],
                           {**workspace.env, **(env or {})}, answers or {}, timeout=timeout)


def save_download(workspace: Workspace, filename: str, text: str) -> Path:
    path = workspace.home / filename
    path.write_text(text)
    return path


def logged_in_entry(workspace: Workspace) -> dict:
    (entry,) = workspace.cache_entries().values()
    return entry


def assert_get_pods_then_silent_renewal(workspace: Workspace, keystone, namespace: str = "cms") -> None:
    """kubectl works now; and after the token has expired, kubectl in a new shell (on a terminal,
    where a prompt would be possible, but with no password and no OS_* variable) renews it through
    an application credential without asking anything."""
    pods = workspace.kubectl("get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert f"No resources found in {namespace} namespace." in pods.stdout + pods.stderr
    before = logged_in_entry(workspace)["tokens"]["keystone"]["value"]
    age_cached_token(workspace, "keystone")
    keystone.clear_requests()
    kubectl = f"{shlex.quote(str(KUBECTL))} --cache-dir {shlex.quote(str(workspace.root / 'kubectl-cache'))}"
    code, output, asked = shell(workspace, f"{kubectl} get pods")
    assert code == 0 and asked == [], output
    assert f"No resources found in {namespace} namespace." in output
    assert [login["auth_methods"] for login in keystone.logins()] == [["application_credential"]]
    assert logged_in_entry(workspace)["tokens"]["keystone"]["value"] != before


# --- the project's "OpenStack RC File" -------------------------------------------------------


@pytest.mark.parametrize("version", HORIZON_VERSIONS)
def test_project_openrc_sourced_then_login_with_no_identity_options(
        keystone, user_shell, alice, projects, version):
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    rc = save_download(user_shell, "CMS-openrc.sh", horizon_download("project-openrc.sh", values, version))
    code, output, asked = shell(user_shell, f"source ./{rc.name} && kubectl-openstack login "
                                            f"--cacert {shlex.quote(str(keystone.ca_cert))}",
                                {RC_PASSWORD_PROMPT: PASSWORD})
    # Only the RC file's prompt was answered: had login asked again, the shell would still be waiting.
    assert asked == [RC_PASSWORD_PROMPT] and code == 0, output
    assert "kubectl configured correctly" in output
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert entry["application_credential"]["created_by_login"]
    assert user_shell.config()["current-context"] == "cms"
    assert_get_pods_then_silent_renewal(user_shell, keystone)


def test_project_openrc_without_the_ca_says_how_to_pass_it_and_the_exported_ca_works(
        keystone, user_shell, alice, projects):
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    rc = save_download(user_shell, "CMS-openrc.sh", horizon_download("project-openrc.sh", values))
    code, output, asked = shell(user_shell, f"source ./{rc.name} && kubectl-openstack login",
                                {RC_PASSWORD_PROMPT: PASSWORD})
    assert asked == [RC_PASSWORD_PROMPT] and code == 4, output
    (line,) = [line for line in output.splitlines() if "error" in line]
    assert "TLS" in line and "--cacert" in line and "OS_CACERT" in line, line
    assert "Traceback" not in output and not user_shell.kubeconfig.exists()
    # What the line says to do, in the same way as the user guide: export OS_CACERT.
    code, output, asked = shell(user_shell, f"source ./{rc.name} && export OS_CACERT="
                                            f"{shlex.quote(str(keystone.ca_cert))} && kubectl-openstack login",
                                {RC_PASSWORD_PROMPT: PASSWORD})
    assert code == 0 and asked == [RC_PASSWORD_PROMPT], output
    assert user_shell.kubectl("get", "pods").returncode == 0


# --- the application credential's openrc ----------------------------------------------------


@pytest.mark.parametrize("version", HORIZON_VERSIONS)
def test_application_credential_openrc_sourced_then_login_asks_nothing(keystone, user_shell, alice, projects, version):
    credential = create_application_credential(keystone, alice["name"], "CMS")
    rc = save_download(user_shell, f"app-cred-{credential['name']}-openrc.sh",
                       horizon_download("app-cred-openrc.sh", app_cred_values(keystone, credential), version))
    code, output, asked = shell(user_shell, f"source ./{rc.name} && kubectl-openstack login "
                                            f"--cacert {shlex.quote(str(keystone.ca_cert))}")
    assert code == 0 and asked == [], output
    assert "kubectl configured correctly" in output
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert entry["application_credential"]["id"] == credential["id"]
    assert_get_pods_then_silent_renewal(user_shell, keystone)
    # The dashboard's credential is the user's: nothing deleted it, nothing else was created.
    assert [c["id"] for c in keystone.list_application_credentials(alice["id"])] == [credential["id"]]


def test_application_credential_openrc_after_a_project_openrc_logs_in_with_the_credential(
        keystone, user_shell, alice, projects):
    """Horizon's app-cred RC file unsets none of the project RC file's variables (OS_USERNAME,
    OS_PASSWORD, OS_PROJECT_ID...). OS_AUTH_TYPE=v3applicationcredential says which to use, and an
    application credential carries its own project: the leftover ATLAS scope must not be sent
    (Keystone refuses a scope with an application credential; the openstack CLI 10.5 sends it and
    gets HTTP 401 here)."""
    atlas = project_values(keystone, alice["name"], "ATLAS", projects["ATLAS"])
    project_rc = save_download(user_shell, "ATLAS-openrc.sh", horizon_download("project-openrc.sh", atlas))
    credential = create_application_credential(keystone, alice["name"], "CMS")
    app_rc = save_download(user_shell, "app-cred-openrc.sh",
                           horizon_download("app-cred-openrc.sh", app_cred_values(keystone, credential)))
    keystone.clear_requests()
    code, output, asked = shell(user_shell, f"source ./{project_rc.name} && source ./{app_rc.name} && "
                                            f"kubectl-openstack login --cacert {shlex.quote(str(keystone.ca_cert))}",
                                {RC_PASSWORD_PROMPT: PASSWORD})
    assert code == 0 and asked == [RC_PASSWORD_PROMPT], output
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert [login["auth_methods"] for login in keystone.logins()] == [["application_credential"]]


# --- the project's clouds.yaml -------------------------------------------------------------


def test_project_clouds_yaml_with_the_password_typed_at_the_prompt(keystone, user_shell, alice, projects):
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    write_clouds(user_shell.home / ".config" / "openstack", horizon_download("project-clouds.yaml", values))
    code, output, asked = shell(user_shell, "kubectl-openstack login --os-cloud openstack "
                                            f"--cacert {shlex.quote(str(keystone.ca_cert))}", {"password": PASSWORD})
    assert code == 0 and asked == ["password"], output
    assert PASSWORD not in output  # typed without echo
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert_get_pods_then_silent_renewal(user_shell, keystone)


def test_project_clouds_yaml_with_password_and_ca_in_secure_yaml(keystone, user_shell, alice, projects):
    """The downloaded file stays as it is; what it lacks goes into secure.yaml beside it."""
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    write_clouds(user_shell.home / ".config" / "openstack", horizon_download("project-clouds.yaml", values),
                 {"clouds": {"openstack": {"auth": {"password": PASSWORD}, "cacert": str(keystone.ca_cert)}}})
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack")
    assert result.returncode == 0, result.stderr
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert_get_pods_then_silent_renewal(user_shell, keystone)


def test_project_clouds_yaml_scopes_by_its_project_id(keystone, user_shell, alice, projects):
    """Horizon's clouds.yaml names the project by id and by name, with no project domain. A
    project in another domain than the default one must work: keystoneauth scopes by the id."""
    domain = unique("Physics")
    domain_id = keystone.create_domain(domain)
    qst = keystone.create_project("QST", domain_id=domain_id)
    keystone.assign_role(alice["id"], qst)
    values = project_values(keystone, alice["name"], "QST", qst, project_domain_id=domain_id)
    write_clouds(user_shell.home / ".config" / "openstack", horizon_download("project-clouds.yaml", values),
                 {"clouds": {"openstack": {"auth": {"password": PASSWORD}, "cacert": str(keystone.ca_cert)}}})
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack")
    assert result.returncode == 0, result.stderr
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], qst)


# --- the application credential's clouds.yaml ------------------------------------------------


def test_application_credential_clouds_yaml_logs_in_and_renews(keystone, user_shell, alice, projects):
    credential = create_application_credential(keystone, alice["name"], "CMS")
    write_clouds(user_shell.home / ".config" / "openstack",
                 horizon_download("app-cred-clouds.yaml", app_cred_values(keystone, credential)))
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack", "--cacert", str(keystone.ca_cert))
    assert result.returncode == 0, result.stderr
    entry = logged_in_entry(user_shell)
    assert (entry["user"]["id"], entry["project"]["id"]) == (alice["id"], projects["CMS"])
    assert entry["application_credential"]["id"] == credential["id"]
    assert_get_pods_then_silent_renewal(user_shell, keystone)


def test_application_credential_secret_in_secure_yaml(keystone, user_shell, alice, projects):
    credential = create_application_credential(keystone, alice["name"], "CMS")
    clouds = horizon_download("app-cred-clouds.yaml", app_cred_values(keystone, credential))
    clouds = "\n".join(line for line in clouds.splitlines() if "application_credential_secret" not in line)
    write_clouds(user_shell.home / ".config" / "openstack", clouds,
                 {"clouds": {"openstack": {"auth": {"application_credential_secret": credential["secret"]}}}})
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack", "--cacert", str(keystone.ca_cert))
    assert result.returncode == 0, result.stderr
    assert logged_in_entry(user_shell)["application_credential"]["id"] == credential["id"]
    assert user_shell.kubectl("get", "pods").returncode == 0


# --- where clouds.yaml is looked for (openstacksdk's search) ---------------------------------


def test_clouds_yaml_in_xdg_config_home(keystone, user_shell, alice, projects):
    user_shell.env["XDG_CONFIG_HOME"] = str(user_shell.home / "xdg")
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    write_clouds(user_shell.home / "xdg" / "openstack", horizon_download("project-clouds.yaml", values),
                 {"clouds": {"openstack": {"auth": {"password": PASSWORD}, "cacert": str(keystone.ca_cert)}}})
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack")
    assert result.returncode == 0, result.stderr
    assert user_shell.kubectl("get", "pods").returncode == 0


def test_missing_os_client_config_file_falls_back_to_the_usual_places(keystone, user_shell, alice, projects):
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    write_clouds(user_shell.home / ".config" / "openstack", horizon_download("project-clouds.yaml", values),
                 {"clouds": {"openstack": {"auth": {"password": PASSWORD}, "cacert": str(keystone.ca_cert)}}})
    user_shell.env["OS_CLIENT_CONFIG_FILE"] = str(user_shell.home / "no-such-clouds.yaml")
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack")
    assert result.returncode == 0, result.stderr
    assert user_shell.kubectl("get", "pods").returncode == 0


# --- refusals a user can act on --------------------------------------------------------------


def test_several_clouds_and_none_chosen_is_one_line_naming_os_cloud(keystone, user_shell, alice, projects):
    """Horizon's header comment tells users to add further clouds to the same file."""
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    project = yaml.safe_load(horizon_download("project-clouds.yaml", values))["clouds"]["openstack"]
    credential = create_application_credential(keystone, alice["name"], "CMS")
    app_cred = yaml.safe_load(horizon_download("app-cred-clouds.yaml", app_cred_values(keystone, credential)))
    clouds = {"clouds": {"openstack": project, "openstack-kube": app_cred["clouds"]["openstack"]}}
    write_clouds(user_shell.home / ".config" / "openstack", yaml.safe_dump(clouds))
    keystone.clear_requests()
    result = user_shell.run("kubectl-openstack", "login", "--cacert", str(keystone.ca_cert))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--os-cloud" in line, line
    assert keystone.requests() == [] and not user_shell.kubeconfig.exists()


@pytest.mark.parametrize("setting", [{"verify": False}, {"insecure": True}], ids=["verify-false", "insecure-true"])
def test_clouds_yaml_turning_tls_verification_off_is_refused_in_one_line(
        keystone, user_shell, alice, projects, setting):
    """The quick way round the missing CA: the setting must be refused, naming it and saying why."""
    values = project_values(keystone, alice["name"], "CMS", projects["CMS"])
    text = horizon_download("project-clouds.yaml", values)
    name = next(iter(setting))
    text += f"\n    {name}: {str(setting[name]).lower()}\n"  # the user's edit, under `openstack:`
    assert yaml.safe_load(text)["clouds"]["openstack"][name] == setting[name]
    write_clouds(user_shell.home / ".config" / "openstack", text,
                 {"clouds": {"openstack": {"auth": {"password": PASSWORD}}}})
    result = user_shell.run("kubectl-openstack", "login", "--os-cloud", "openstack")
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert name in line, line
    assert not user_shell.kubeconfig.exists() and user_shell.cache_entries() == {}


def test_dashboard_files_hold_what_the_readme_says():
    """The data files are Horizon's rendering: both versions' clouds.yaml are the same, the RC files
    differ only in quoting, and no file sets a CA bundle."""
    for name in ("project-clouds.yaml", "app-cred-clouds.yaml"):
        assert (HORIZON / "25.3.2" / name).read_bytes() == (HORIZON / "26.0.0" / name).read_bytes()
    for version in HORIZON_VERSIONS:
        for path in (HORIZON / version).iterdir():
            assert "CACERT" not in path.read_text().upper(), path
    for name in ("project-openrc.sh", "app-cred-openrc.sh"):
        old, new = ((HORIZON / version / name).read_text().replace('"', "") for version in HORIZON_VERSIONS)
        assert old == new, name

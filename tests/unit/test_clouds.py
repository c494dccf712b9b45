"""clouds.yaml read by openstacksdk's loader, and python-openstackclient's precedence on top of it:
flag > OS_* variable > clouds.yaml entry > our config file > site profile.

Each test writes real files and points OS_CLIENT_CONFIG_FILE / OS_CLIENT_SECURE_FILE at them
(openstacksdk fixes its search directories when it is imported; the search itself is exercised by
tests/integration/test_dashboard_files.py in fresh processes)."""
from __future__ import annotations

import json

import pytest

from kubectl_caas.cli import openstack_login as flows
from kubectl_caas.errors import UsageError
from kubectl_caas.runtime import Runtime

HORIZON_CLOUD = {  # the shape of the dashboard's "OpenStack clouds.yaml File"
    "auth": {"auth_url": "https://keystone.example.org:5000/v3", "username": "alice", "project_id": "cms-id",
             "project_name": "CMS", "user_domain_name": "Default"},
    "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
}


@pytest.fixture
def clouds(tmp_path, monkeypatch):
    """write(clouds, secure=None): real clouds.yaml (and secure.yaml) files for openstacksdk."""
    for name in [v for v in __import__("os").environ if v.startswith(("OS_", "KUBECTL_CAAS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config file, no profile of ours

    def write(entries, secure=None):
        path = tmp_path / "clouds.yaml"
        path.write_text(json.dumps({"clouds": entries}))  # JSON is YAML
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        if secure is not None:
            secure_path = tmp_path / "secure.yaml"
            secure_path.write_text(json.dumps({"clouds": secure}))
            monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(secure_path))
        return path
    return write


def settings(os_cloud="openstack", **flags):
    return flows.load_settings(dict(flags, os_cloud=os_cloud), "none", Runtime())


def _identity(found):
    return flows.identity_from(found)


def test_the_dashboards_clouds_yaml_scopes_by_project_id(clouds):
    clouds({"openstack": HORIZON_CLOUD})
    identity = _identity(settings())
    assert identity.scope() == {"project_id": "cms-id"}
    assert identity.user_fields()["username"] == "alice"
    assert identity.user_fields()["user_domain_name"] == "Default"


def test_os_variables_beat_the_file_as_in_the_openstack_cli(clouds, monkeypatch):
    clouds({"openstack": {"auth": {"auth_url": "https://k/v3", "username": "alice", "project_name": "CMS"}}})
    monkeypatch.setenv("OS_PROJECT_NAME", "QST")  # left over from an earlier openrc
    monkeypatch.setenv("OS_USERNAME", "bob")
    identity = _identity(settings())
    assert (identity.project, identity.user) == ("QST", "bob")


def test_a_project_flag_is_not_overridden_by_a_leftover_project_id(clouds, monkeypatch):
    clouds({"openstack": HORIZON_CLOUD})
    monkeypatch.setenv("OS_PROJECT_ID", "qst-id")
    identity = _identity(settings(project="ATLAS"))
    assert identity.scope()["project_name"] == "ATLAS" and identity.project_id is None


def test_secure_yaml_holds_the_password(clouds):
    clouds({"openstack": HORIZON_CLOUD}, secure={"openstack": {"auth": {"password": "from-secure"}}})
    assert settings().get("password") == "from-secure"


def test_os_password_beats_the_files_password(clouds, monkeypatch):
    clouds({"openstack": HORIZON_CLOUD}, secure={"openstack": {"auth": {"password": "from-secure"}}})
    monkeypatch.setenv("OS_PASSWORD", "from-env")
    assert settings().get("password") == "from-env"


def test_legacy_tenant_and_domain_names_are_read_as_openstacksdk_reads_them(clouds):
    clouds({"old": {"auth": {"auth_url": "https://k:5000/v2.0", "username": "alice", "tenant_name": "CMS",
                             "domain_name": "Physics"}}})
    identity = _identity(settings("old"))
    assert identity.project == "CMS"
    assert identity.user_domain == identity.project_domain == "Physics"
    assert identity.auth_url == "https://k:5000/v3"


def test_application_credential_by_name_is_an_application_credential_login(clouds):
    clouds({"ac": {"auth_type": "v3applicationcredential",
                   "auth": {"auth_url": "https://k/v3", "application_credential_name": "mine", "username": "alice",
                            "user_domain_name": "Default", "application_credential_secret": "s"}}})
    found = settings("ac")
    assert flows.auth_type(found) == "application_credential"
    assert (found.get("application_credential_name"), found.get("application_credential_secret")) == ("mine", "s")


@pytest.mark.parametrize("auth_type", ["v3token", "v3oidcpassword", "v3totp", "admin_token"])
def test_an_auth_type_we_cannot_serve_is_one_clear_line(clouds, auth_type):
    clouds({"openstack": {**HORIZON_CLOUD, "auth_type": auth_type}})
    with pytest.raises(UsageError) as caught:
        flows.auth_type(settings())
    assert auth_type in str(caught.value) and "v3applicationcredential" in str(caught.value)


def test_os_auth_type_beats_the_file(clouds, monkeypatch):
    clouds({"openstack": {**HORIZON_CLOUD, "auth_type": "v3applicationcredential"}})
    monkeypatch.setenv("OS_AUTH_TYPE", "v3password")
    assert flows.auth_type(settings()) == "password"


@pytest.mark.parametrize("switch", [{"verify": False}, {"insecure": True}])
def test_turning_tls_verification_off_is_refused_naming_the_setting(clouds, switch):
    clouds({"openstack": {**HORIZON_CLOUD, **switch}})
    with pytest.raises(UsageError) as caught:
        settings()
    assert "verify: false" in str(caught.value) and "cacert" in str(caught.value)


def test_an_unknown_cloud_names_the_known_ones(clouds):
    clouds({"openstack": HORIZON_CLOUD, "other": HORIZON_CLOUD})
    with pytest.raises(UsageError) as caught:
        settings("nope")
    assert "openstack, other" in str(caught.value)


def test_a_missing_os_client_config_file_falls_back_to_the_usual_search(clouds, monkeypatch, tmp_path):
    clouds({})
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(UsageError) as caught:  # no clouds.yaml anywhere: the entry is unknown, nothing crashes
        settings()
    assert "no cloud named 'openstack'" in str(caught.value)


def test_the_only_cloud_is_used_when_none_is_chosen_as_the_openstack_command_does(clouds, capsys):
    clouds({"openstack": HORIZON_CLOUD})
    identity = _identity(settings(os_cloud=None))
    assert identity.project_id == "cms-id" and identity.os_cloud == "openstack"
    assert "using cloud 'openstack', the only one" in capsys.readouterr().err


def test_os_variables_describing_a_cloud_win_over_the_only_cloud(clouds, monkeypatch):
    clouds({"openstack": HORIZON_CLOUD})
    monkeypatch.setenv("OS_AUTH_URL", "https://env.example.org:5000/v3")  # what sourcing an openrc does
    identity = _identity(settings(os_cloud=None))
    assert identity.os_cloud is None and identity.auth_url == "https://env.example.org:5000/v3"


def test_with_several_clouds_and_none_chosen_the_hint_names_them(clouds):
    clouds({"cms": {"auth": {"username": "alice"}}, "atlas": {"auth": {"username": "alice"}}})
    with pytest.raises(UsageError) as caught:
        _identity(settings(os_cloud=None))
    assert "atlas, cms" in str(caught.value) and "--os-cloud" in str(caught.value)


def test_an_application_credential_flag_wins_over_the_entrys_default_auth_type(clouds):
    # openstacksdk gives every entry auth_type `password` when the file names none
    clouds({"openstack": HORIZON_CLOUD})
    assert flows.auth_type(settings()) == "password"
    assert flows.uses_application_credential(settings(application_credential_id="ac-1"), password_stdin=False)
    assert not flows.uses_application_credential(settings(), password_stdin=False)


def test_without_a_user_name_nobody_is_asked_for_a_password(clouds):
    clouds({"openstack": {"auth": {"auth_url": "https://k/v3", "project_name": "CMS"}}})
    found = settings()

    def ask(prompt):
        raise AssertionError(f"asked {prompt!r}")
    with pytest.raises(UsageError) as caught:
        flows.password_for(found, _identity(found), Runtime(ask_secret=ask), password_stdin=False)
    assert "no user name" in str(caught.value)


def test_secrets_never_come_from_our_config_file(clouds, tmp_path, monkeypatch):
    clouds({"openstack": HORIZON_CLOUD})
    config = tmp_path / "kubectl-caas.yaml"
    config.write_text("openstack:\n  password: from-config\n  server: https://caas.example.org:6443\n")
    monkeypatch.setenv("KUBECTL_CAAS_CONFIG", str(config))
    found = settings()
    assert found.get("password") is None and found.get("server") == "https://caas.example.org:6443"


@pytest.mark.parametrize("auth_type, kept, dropped", [
    (None, "password", "application_credential_secret"),
    ("v3applicationcredential", "application_credential_secret", "password"),
])
def test_renewal_takes_only_the_secret_of_the_entrys_auth_type(clouds, auth_type, kept, dropped):
    from kubectl_caas.keystone import Identity
    from kubectl_caas.keystone.renewal import _cloud_secrets

    entry = {"auth": {"auth_url": "https://k/v3", "username": "alice", "password": "pw",
                      "application_credential_id": "other-project", "application_credential_secret": "s"}}
    if auth_type:
        entry["auth_type"] = auth_type
    clouds({"openstack": entry})
    identity = Identity(auth_url="https://k/v3", user="alice", os_cloud="openstack")
    secrets = _cloud_secrets(identity, Runtime())
    assert kept in secrets and dropped not in secrets


def test_an_application_credential_named_on_the_command_line_is_used_with_a_user_flag(clouds):
    clouds({})
    found = flows.load_settings({"auth_url": "https://k/v3", "user": "alice", "application_credential_name": "kube"},
                                "none", Runtime())
    assert flows.uses_application_credential(found, password_stdin=False)


@pytest.mark.parametrize("where, flags, environ", [
    ("--auth-type", {"auth_type": "token"}, {}),
    ("OS_AUTH_TYPE", {}, {"OS_AUTH_TYPE": "token"}),
])
def test_a_refused_auth_type_names_where_it_came_from(clouds, monkeypatch, where, flags, environ):
    clouds({})
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    found = flows.load_settings(dict(flags, auth_url="https://k/v3"), "none", Runtime())
    with pytest.raises(UsageError) as caught:
        flows.auth_type(found)
    assert str(caught.value).startswith(f"{where} asks for auth type 'token'")


def test_the_cloud_recorded_for_renewals_is_the_one_the_login_read(clouds, tmp_path, monkeypatch):
    clouds({"openstack": HORIZON_CLOUD, "other": {"auth": {"auth_url": "https://elsewhere/v3"}}})
    config = tmp_path / "kubectl-caas.yaml"
    config.write_text("openstack:\n  os_cloud: openstack\n")
    monkeypatch.setenv("KUBECTL_CAAS_CONFIG", str(config))
    identity = _identity(flows.load_settings({}, "none", Runtime()))
    assert identity.os_cloud == "openstack" and identity.project_id == "cms-id"

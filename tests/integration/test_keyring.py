"""--token-storage keyring: long-term secrets in the OS keyring, a one-time notice and disk when
there is none. The OS keyring is played by tests/servers/file_keyring.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness import PASSWORD, exec_credential

REPO = Path(__file__).resolve().parents[2]


def login(workspace, user, env=None):
    return workspace.run("kubectl-openstack", "login", "--user", user, "--project", "CMS", "--password-stdin",
                         "--token-storage", "keyring", input=PASSWORD, env=env)


@pytest.fixture
def keyring_env(tmp_path):
    return {"PYTHON_KEYRING_BACKEND": "tests.servers.file_keyring.FileKeyring", "PYTHONPATH": str(REPO),
            "TEST_KEYRING_FILE": str(tmp_path / "keyring.json")}


def test_keyring_keeps_the_application_credential_secret_out_of_the_cache(
        keystone, site, workspace, alice, keyring_env, tmp_path):
    workspace.env.update(keyring_env)
    result = login(workspace, alice["name"])
    assert result.returncode == 0, result.stderr
    (entry,) = workspace.cache_entries().values()
    assert entry["application_credential"]["secret"] == {"stored_in": "keyring"}
    stored = json.loads((tmp_path / "keyring.json").read_text())
    (secret,) = stored.values()
    assert secret not in json.dumps(entry)
    # Renewal reads the secret back from the keyring: drop the token, keep the credential.
    (path,) = workspace.cache.glob("*.json")
    entry["tokens"] = {}
    path.write_text(json.dumps(entry))
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    assert args[-2:] == ["--token-storage", "keyring"]
    keystone.clear_requests()
    assert exec_credential(workspace.run("kubectl-openstack", *args))["status"]["token"]
    assert [r["auth_methods"] for r in keystone.logins()] == [["application_credential"]]
    # Logout removes it from the keyring too.
    assert workspace.run("kubectl-openstack", "logout", "--password-stdin", input=PASSWORD).returncode == 0
    assert json.loads((tmp_path / "keyring.json").read_text()) == {}


def test_without_a_keyring_secrets_stay_on_disk_with_a_one_time_notice(keystone, site, workspace, alice,
                                                                        keyring_env):
    workspace.env.update({**keyring_env, "TEST_KEYRING_BROKEN": "1"})
    first = login(workspace, alice["name"])
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("no usable OS keyring") == 1
    (entry,) = workspace.cache_entries().values()
    assert isinstance(entry["application_credential"]["secret"], str)
    second = login(workspace, alice["name"])
    assert second.returncode == 0, second.stderr
    assert "no usable OS keyring" not in second.stderr

"""The shared kubeconfig core: merge rules, KUBECONFIG lists, atomic 0600 writes, refusals."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from kubectl_caas import kubeconfig
from kubectl_caas.errors import CaasError

GOLDEN = Path(__file__).parent / "golden"


def entry(context="cms", server="https://caas.example.org:6443", user="alice@cms", args=("get-token",)):
    return kubeconfig.Entry(
        context=context, cluster="caas-example", server=server, user=user,
        user_body=kubeconfig.exec_user_body("/opt/bin/kubectl-openstack", list(args)), namespace=context,
    )


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return tmp_path


def load_yaml(path):
    return yaml.safe_load(Path(path).read_text())


def test_new_kubeconfig_is_created_with_mode_0600_and_the_context_is_current(tmp_path):
    path = tmp_path / "home" / ".kube" / "config"
    written = kubeconfig.upsert(entry())
    assert written == [str(path)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = load_yaml(path)
    assert data["current-context"] == "cms"
    assert data["contexts"] == [{"name": "cms", "context": {"cluster": "caas-example", "user": "alice@cms",
                                                             "namespace": "cms"}}]
    exec_ = data["users"][0]["user"]["exec"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1"
    assert exec_["interactiveMode"] == "IfAvailable"


def test_login_keeps_every_other_entry_unknown_field_and_key_order(tmp_path):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / "valid_other_entries.yaml", path)
    before = load_yaml(path)
    kubeconfig.upsert(entry(), explicit_path=str(path))
    after = load_yaml(path)
    assert list(after)[: len(before)] == list(before)  # top-level key order kept
    assert after["clusters"][0] == before["clusters"][0]
    assert after["users"][0] == before["users"][0]
    assert after["contexts"][0] == before["contexts"][0]
    assert after["extensions"] == before["extensions"]
    assert after["preferences"] == before["preferences"]
    assert [c["name"] for c in after["contexts"]] == ["prod", "cms"]
    assert after["current-context"] == "cms"


def test_relogin_updates_in_place_and_replaces_a_stale_static_token(tmp_path):
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "caas-example", "cluster": {"server": "https://caas.example.org:6443",
                                                          "proxy-url": "socks5://127.0.0.1:1080"}}],
        "users": [{"name": "other", "user": {}}, {"name": "alice@cms", "user": {"token": "gAAAA-old-static"}}],
        "contexts": [{"name": "cms", "context": {"cluster": "caas-example", "user": "alice@cms",
                                                 "extensions": [{"name": "e", "extension": {}}]}}],
    }, sort_keys=False))
    kubeconfig.upsert(entry(), explicit_path=str(path), force=True)
    data = load_yaml(path)
    assert [u["name"] for u in data["users"]] == ["other", "alice@cms"]  # position kept
    assert "token" not in data["users"][1]["user"]
    assert data["clusters"][0]["cluster"]["proxy-url"] == "socks5://127.0.0.1:1080"
    assert data["contexts"][0]["context"]["extensions"] == [{"name": "e", "extension": {}}]
    assert data["contexts"][0]["context"]["namespace"] == "cms"


def test_existing_context_pointing_at_another_server_is_not_overwritten_without_force(tmp_path):
    path = tmp_path / "kc"
    kubeconfig.upsert(entry(server="https://other.example.org"), explicit_path=str(path))
    before = path.read_bytes()
    with pytest.raises(kubeconfig.ContextConflict, match="--force"):
        kubeconfig.upsert(entry(), explicit_path=str(path))
    assert path.read_bytes() == before
    kubeconfig.upsert(entry(), explicit_path=str(path), force=True)
    assert load_yaml(path)["clusters"][0]["cluster"]["server"] == "https://caas.example.org:6443"


def test_existing_context_of_another_user_is_not_overwritten_without_force(tmp_path):
    path = tmp_path / "kc"
    kubeconfig.upsert(entry(args=["get-token", "--user", "bob"]), explicit_path=str(path))
    with pytest.raises(kubeconfig.ContextConflict, match="another user"):
        kubeconfig.upsert(entry(args=["get-token", "--user", "alice"]), explicit_path=str(path))


def test_kubeconfig_list_new_stanzas_go_to_the_first_existing_file(tmp_path, monkeypatch):
    missing, first, second = tmp_path / "missing", tmp_path / "a", tmp_path / "b"
    shutil.copy(GOLDEN / "valid_other_entries.yaml", second)
    first.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, [missing, first, second])))
    kubeconfig.upsert(entry())
    assert not missing.exists()
    assert [c["name"] for c in load_yaml(first)["contexts"]] == ["cms"]
    # current-context lives in the first file that sets one: b, not a
    assert load_yaml(second)["current-context"] == "cms"
    assert "current-context" not in load_yaml(first)
    assert [c["name"] for c in load_yaml(second)["contexts"]] == ["prod"]


def test_kubeconfig_list_modifies_a_stanza_in_the_file_that_defines_it(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("apiVersion: v1\nkind: Config\n")
    kubeconfig.upsert(entry(), explicit_path=str(second))
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
    kubeconfig.upsert(entry(context="cms"), force=True)
    assert not load_yaml(first).get("contexts")
    assert [c["name"] for c in load_yaml(second)["contexts"]] == ["cms"]


def test_kubeconfig_list_with_no_existing_file_creates_the_last_one(tmp_path, monkeypatch):
    first, last = tmp_path / "x" / "a", tmp_path / "y" / "b"
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{last}")
    kubeconfig.upsert(entry())
    assert not first.exists()
    assert load_yaml(last)["current-context"] == "cms"


def test_explicit_kubeconfig_overrides_the_environment(tmp_path, monkeypatch):
    env_file, explicit = tmp_path / "env", tmp_path / "explicit"
    monkeypatch.setenv("KUBECONFIG", str(env_file))
    kubeconfig.upsert(entry(), explicit_path=str(explicit))
    assert explicit.exists() and not env_file.exists()


@pytest.mark.parametrize("name, message", [
    ("invalid_not_yaml.yaml", "is not valid YAML at line"),
    ("invalid_clusters_type.yaml", "clusters must be a list"),
])
def test_kubeconfig_that_does_not_parse_is_refused_naming_the_file_and_left_untouched(tmp_path, name, message):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / name, path)
    before = path.read_bytes()
    with pytest.raises(CaasError) as raised:
        kubeconfig.upsert(entry(), explicit_path=str(path))
    assert str(path) in str(raised.value) and message in str(raised.value)
    assert path.read_bytes() == before


def test_duplicate_names_for_the_stanza_we_change_are_refused(tmp_path):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / "invalid_duplicate_users.yaml", path)
    before = path.read_bytes()
    with pytest.raises(CaasError, match="2 users named 'alice@cms'"):
        kubeconfig.upsert(entry(), explicit_path=str(path))
    assert path.read_bytes() == before


def test_unreadable_entry_in_the_kubeconfig_list_is_named(tmp_path, monkeypatch):
    # A directory stands in for an unreadable file: tests run as root, who can read any file.
    good, bad = tmp_path / "good", tmp_path / "bad"
    bad.mkdir()
    good.write_text("apiVersion: v1\nkind: Config\n")
    before = good.read_bytes()
    monkeypatch.setenv("KUBECONFIG", f"{good}{os.pathsep}{bad}")
    with pytest.raises(CaasError, match=str(bad)):
        kubeconfig.upsert(entry())
    assert good.read_bytes() == before


def _login_in_process(path: str, index: int) -> None:
    kubeconfig.upsert(entry(context=f"project{index}", user=f"alice@project{index}"), explicit_path=path)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "kc")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_login_in_process, args=(path, i)) for i in range(12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    data = load_yaml(path)
    assert sorted(c["name"] for c in data["contexts"]) == sorted(f"project{i}" for i in range(12))
    assert len(data["users"]) == 12


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "kc"
    kubeconfig.upsert(entry(), explicit_path=str(path))
    kubeconfig.upsert(entry(context="two", user="alice@two"), explicit_path=str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kc"]

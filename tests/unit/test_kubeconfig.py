"""The shared kubeconfig core: merge rules, KUBECONFIG lists, atomic 0600 writes, refusals."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from kubectl_caas import goyaml, kubeconfig, kubeconfig_files
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


def test_kubeconfig_list_new_stanzas_and_current_context_go_to_the_first_existing_file(tmp_path, monkeypatch):
    missing, first, second = tmp_path / "missing", tmp_path / "a", tmp_path / "b"
    shutil.copy(GOLDEN / "valid_other_entries.yaml", second)
    first.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, [missing, first, second])))
    kubeconfig.upsert(entry())
    assert not missing.exists()
    assert [c["name"] for c in load_yaml(first)["contexts"]] == ["cms"]
    # kubectl writes a new current-context into that same default file, not into b that sets one:
    # a's value wins the merge, and b keeps its own
    assert load_yaml(first)["current-context"] == "cms"
    assert load_yaml(second)["current-context"] == "prod"
    assert [c["name"] for c in load_yaml(second)["contexts"]] == ["prod"]
    assert kubeconfig.load(kubeconfig.resolve_paths()).current_context == "cms"


def test_current_context_already_in_effect_is_not_written_again(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("apiVersion: v1\nkind: Config\n")
    second.write_text("apiVersion: v1\nkind: Config\ncurrent-context: cms\n")
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
    kubeconfig.upsert(entry())
    assert "current-context" not in load_yaml(first)
    assert load_yaml(second)["current-context"] == "cms"


def test_a_single_kubeconfig_item_gets_everything_even_before_it_exists(tmp_path, monkeypatch):
    only = tmp_path / "new" / "config"
    monkeypatch.setenv("KUBECONFIG", str(only))
    kubeconfig.upsert(entry())
    assert load_yaml(only)["current-context"] == "cms"


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


# What each refusal must say; tests/integration/test_kubectl_oracle.py checks that real kubectl
# refuses every invalid_* file and accepts every valid_* one.
REFUSALS = {
    "invalid_not_yaml.yaml": "is not valid YAML at line",
    "invalid_clusters_type.yaml": "clusters must be a list, not a mapping",
    "invalid_duplicate_users.yaml": "2 users named 'alice@cms'",
    "invalid_duplicate_clusters.yaml": "2 clusters named 'caas-example'",
    "invalid_duplicate_contexts.yaml": "2 contexts named 'cms'",
    "invalid_duplicate_unnamed_users.yaml": "2 users named ''",
    "invalid_duplicate_extensions.yaml": "2 extensions named 'e'",
    "invalid_namespace_number.yaml": "contexts[name=cms].context.namespace must be a string, not a number",
    "invalid_server_boolean.yaml": "clusters[name=caas].cluster.server must be a string, not a boolean",
    "invalid_current_context_number.yaml": "current-context must be a string, not a number",
    "invalid_exec_args_number.yaml": "users[name=alice].user.exec.args[2] must be a string, not a number",
    "invalid_insecure_as_text.yaml": "insecure-skip-tls-verify must be true or false, not a string",
    "invalid_certificate_data.yaml": "certificate-authority-data is not valid base64",
    "invalid_kind.yaml": "kind 'Pod'",
    "invalid_api_version.yaml": "apiVersion 'v2'",
    "invalid_nan_in_unknown_field.yaml": "x-tool-settings.ratio is .nan",
    "invalid_null_key.yaml": "empty (null) key",
    "invalid_huge_integer_key.yaml": "larger than a 64-bit integer",
    "invalid_not_a_mapping.yaml": "not a mapping",
    "invalid_alias_bomb.yaml": "excessive aliasing",
    "invalid_anchor_contains_itself.yaml": "contains itself",
}


def test_every_invalid_golden_file_has_its_expected_refusal():
    assert sorted(REFUSALS) == sorted(p.name for p in GOLDEN.glob("invalid_*.yaml"))


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_kubeconfig_kubectl_refuses_is_refused_naming_the_file_and_left_untouched(tmp_path, name):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / name, path)
    before = path.read_bytes()
    for attempt in (lambda: kubeconfig.check_before_login("cms", "https://caas.example.org:6443", lambda body: True,
                                                          str(path)),
                    lambda: kubeconfig.upsert(entry(), explicit_path=str(path), force=True)):
        with pytest.raises(kubeconfig.KubeconfigError) as raised:
            attempt()
        assert str(path) in str(raised.value) and REFUSALS[name] in str(raised.value)
        assert path.read_bytes() == before


def test_a_refused_file_anywhere_in_the_list_stops_the_login_before_any_file_changes(tmp_path, monkeypatch):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("apiVersion: v1\nkind: Config\n")
    shutil.copy(GOLDEN / "invalid_namespace_number.yaml", bad)
    before = good.read_bytes()
    monkeypatch.setenv("KUBECONFIG", f"{good}{os.pathsep}{bad}")
    with pytest.raises(kubeconfig.KubeconfigError, match=str(bad)):
        kubeconfig.upsert(entry())
    assert good.read_bytes() == before


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("valid_*.yaml")))
def test_a_kubeconfig_kubectl_accepts_is_accepted_and_what_we_do_not_touch_keeps_its_meaning(tmp_path, name):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / name, path)
    before = kubeconfig.load([str(path)])
    kubeconfig.upsert(entry(context="caas-login", user="caas-user@login"), explicit_path=str(path), force=True)
    after = kubeconfig.load([str(path)])
    for section in kubeconfig.SECTIONS:
        for stanza in before.names(section):
            if stanza not in ("caas-login", "caas-user@login", "caas-example"):
                assert after.get(section, stanza) == before.get(section, stanza), (section, stanza)
    untouched = goyaml.parse((GOLDEN / name).read_bytes())
    if untouched:  # everything outside the three lists, unknown fields included
        def outside(data):
            return {k: v for k, v in data.items() if k not in (*kubeconfig.SECTIONS, "current-context")}
        assert outside(goyaml.parse(path.read_bytes())) == outside(untouched)


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


# --- which files, as kubectl names them ----------------------------------------------------------


def test_a_tilde_in_kubeconfig_is_taken_literally_as_kubectl_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", "~/kc")
    kubeconfig.upsert(entry())
    assert (tmp_path / "~" / "kc").exists()
    assert not (tmp_path / "home" / "kc").exists()


def test_a_tilde_in_the_explicit_kubeconfig_is_taken_literally_as_kubectl_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kubeconfig.upsert(entry(), explicit_path="~/kc")
    assert (tmp_path / "~" / "kc").exists()


def test_relative_kubeconfig_items_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("KUBECONFIG", "kc")
    assert kubeconfig.resolve_paths() == [str(tmp_path / "work" / "kc")]
    kubeconfig.upsert(entry())
    assert (tmp_path / "work" / "kc").exists()


def test_empty_and_repeated_kubeconfig_items_are_skipped(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(["", str(a), "", str(a), str(b)]))
    assert kubeconfig.resolve_paths() == [str(a), str(b)]
    kubeconfig.upsert(entry())
    assert b.exists() and not a.exists()  # none existed: the last item


def test_a_kubeconfig_list_ending_in_an_empty_item_with_no_file_is_refused_before_login(tmp_path, monkeypatch):
    # kubectl fails here too ("no location of origin"): its default file would be ""
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}{os.pathsep}")
    with pytest.raises(kubeconfig.KubeconfigError, match="empty"):
        kubeconfig.check_before_login("cms", "https://caas.example.org:6443", lambda body: True)
    with pytest.raises(kubeconfig.KubeconfigError, match="empty"):
        kubeconfig.upsert(entry())
    assert not (tmp_path / "a").exists()


def test_a_symlinked_kubeconfig_is_updated_through_the_link(tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    shutil.copy(GOLDEN / "valid_other_entries.yaml", dotfiles / "kubeconfig")
    link = tmp_path / "kc"
    link.symlink_to(dotfiles / "kubeconfig")
    written = kubeconfig.upsert(entry(), explicit_path=str(link))
    assert written == [str(link)]
    assert link.is_symlink() and os.readlink(link) == str(dotfiles / "kubeconfig")
    assert [c["name"] for c in load_yaml(dotfiles / "kubeconfig")["contexts"]] == ["prod", "cms"]
    assert sorted(p.name for p in dotfiles.iterdir()) == ["kubeconfig"]  # the temporary file was beside the target


def test_a_dangling_symlink_creates_its_target_as_kubectl_does(tmp_path):
    (tmp_path / "dotfiles").mkdir()
    link = tmp_path / "kc"
    link.symlink_to("dotfiles/kubeconfig")
    kubeconfig.upsert(entry(), explicit_path=str(link))
    assert link.is_symlink()
    assert load_yaml(tmp_path / "dotfiles" / "kubeconfig")["current-context"] == "cms"


def test_a_file_listed_twice_through_a_link_is_written_once_with_every_change(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'link'}{os.pathsep}{real}")
    kubeconfig.upsert(entry())
    data = load_yaml(real)
    assert data["current-context"] == "cms" and [c["name"] for c in data["clusters"]] == ["caas-example"]


# --- what changes inside a file --------------------------------------------------------------------


def test_a_stanza_sharing_a_yaml_anchor_is_copied_out_and_the_others_keep_their_meaning(tmp_path):
    path = tmp_path / "kc"
    shutil.copy(GOLDEN / "valid_anchors_and_merges.yaml", path)
    before = kubeconfig.load([str(path)])
    kubeconfig.upsert(entry(), explicit_path=str(path), force=True)
    after = kubeconfig.load([str(path)])
    assert after.get("clusters", "caas-example")["cluster"]["server"] == "https://caas.example.org:6443"
    # prod shared the anchor with caas-example, staging merged it: both still mean the old cluster
    assert after.get("clusters", "prod") == before.get("clusters", "prod")
    assert after.get("clusters", "prod")["cluster"]["server"] == "https://old.example.org:6443"
    assert after.get("clusters", "staging") == before.get("clusters", "staging")
    # the context and user we changed shared anchors too
    assert after.get("contexts", "prod") == before.get("contexts", "prod")
    assert after.get("users", "admin") == {"name": "admin", "user": {"token": "not-ours"}}
    assert "exec" in after.get("users", "alice@cms")["user"]


@pytest.mark.parametrize("server", ["https://old.example.org", "https://caas.example.org:6443"])
def test_login_drops_tls_server_name_and_insecure_mode_as_kubectl_set_cluster_server_does(tmp_path, server):
    # kubectl's --server always drops tls-server-name (it named the old server's certificate), and
    # set-cluster always turns insecure-skip-tls-verify off; the oracle test checks both against kubectl
    path = tmp_path / "kc"
    path.write_text(f"clusters:\n- name: caas-example\n  cluster:\n    server: {server}\n"
                    "    tls-server-name: old.example.org\n    insecure-skip-tls-verify: true\n    proxy-url: socks5://127.0.0.1:1\n")
    kubeconfig.upsert(entry(), explicit_path=str(path), force=True)
    assert load_yaml(path)["clusters"][0]["cluster"] == {"server": "https://caas.example.org:6443",
                                                         "proxy-url": "socks5://127.0.0.1:1"}


def test_ca_data_replaces_a_ca_file_and_insecure_mode_as_kubectl_embed_certs_does(tmp_path):
    path = tmp_path / "kc"
    path.write_text("clusters:\n- name: caas-example\n  cluster:\n    server: https://caas.example.org:6443\n"
                    "    certificate-authority: /old/ca.pem\n    insecure-skip-tls-verify: true\n")
    caas = entry()
    caas.certificate_authority_data = "Zm9v"
    kubeconfig.upsert(caas, explicit_path=str(path), force=True)
    assert load_yaml(path)["clusters"][0]["cluster"] == {"server": "https://caas.example.org:6443",
                                                         "certificate-authority-data": "Zm9v"}


@pytest.mark.parametrize("name", ["y", "n", "08", "1e3", "0o17", "~", "=", "<<", "1:20", "on", "2001-12-14"])
def test_names_yaml_would_retype_are_written_so_they_read_back_as_the_same_strings(tmp_path, name):
    path = tmp_path / "kc"
    caas = kubeconfig.Entry(context=name, cluster=name, server=name, user=name, namespace=name,
                            user_body=kubeconfig.exec_user_body(name, [name]))
    kubeconfig.upsert(caas, explicit_path=str(path))
    for data in (goyaml.parse(path.read_bytes()), load_yaml(path)):
        assert data["contexts"][0] == {"name": name, "context": {"cluster": name, "user": name, "namespace": name}}
        assert data["clusters"][0]["cluster"]["server"] == name
        assert data["current-context"] == name


# --- locking --------------------------------------------------------------------------------------


def test_a_kubeconfig_directory_locked_by_someone_else_ends_in_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "kc"
    shutil.copy(GOLDEN / "valid_other_entries.yaml", path)
    before = path.read_bytes()
    holder = os.open(tmp_path, os.O_RDONLY)  # another open file description: flock conflicts with it
    fcntl.flock(holder, fcntl.LOCK_EX)
    monkeypatch.setattr(kubeconfig_files, "LOCK_TIMEOUT", 0.0)
    try:
        with pytest.raises(kubeconfig.KubeconfigError, match=f"directory {tmp_path} stayed locked"):
            kubeconfig.upsert(entry(), explicit_path=str(path))
    finally:
        os.close(holder)
    assert path.read_bytes() == before
    kubeconfig.upsert(entry(), explicit_path=str(path))  # released: the next login goes through

"""The get-token shell front (scripts/kubectl_caas_front) and the ready credential it serves
(kubectl_caas/ready.py): the behaviour the Python hit has (apiVersion echo, expiry, damaged or
planted files, logout), run as kubectl runs it, with each POSIX shell at hand."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubectl_caas import cache, contexts, identity, kubeconfig, ready, store
from kubectl_caas.credential import exec_credential, ready_path
from kubectl_caas.plugins import IAM, OPENSTACK

ROOT = Path(__file__).resolve().parents[2]
FRONT = ROOT / "scripts" / "kubectl_caas_front"
ARGS = ["get-token", "--auth-url", "https://keystone.example.org/v3", "--user", "alice", "--project", "CMS"]
V1, V1BETA1 = "client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"
MISS = "PYTHON-GET-TOKEN"


def kubectl_info(version=V1, interactive=False):
    """KUBERNETES_EXEC_INFO exactly as kubectl writes it (Go's encoding/json, compact)."""
    return json.dumps({"kind": "ExecCredential", "apiVersion": version, "spec": {"interactive": interactive}},
                      separators=(",", ":"))


SHELLS = [["sh"]] + [[name, *extra] for name, *extra in (["dash"], ["bash", "--posix"], ["busybox", "sh"])
                     if shutil.which(name)]


@pytest.fixture(params=[" ".join(s) for s in SHELLS] + ["shebang"])
def shell(request):
    return None if request.param == "shebang" else request.param.split()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def python_plugin(tmp_path):
    """Stands in for the Python get-token: says it ran, with the args it got."""
    fake = tmp_path / "kubectl-openstack"
    fake.write_text(f'#!/bin/sh\necho "{MISS} $*"\nexit 7\n')
    fake.chmod(0o755)
    return fake


def entry_path(args=ARGS, plugin=OPENSTACK):
    return plugin.entry_path(identity.from_args(plugin.options, args, plugin.command))


def login(token="tok-1", lifetime=3600.0, left=3000.0, args=ARGS, plugin=OPENSTACK, kind="keystone", extra=None):
    """What a login does to the cache: the entry and its ready credential, under the lock."""
    now = time.time()
    entry = {"tokens": {kind: {"value": token, "expires_at": now + left, "issued_at": now + left - lifetime},
                        **(extra or {})}}
    store.replace(plugin, entry_path(args, plugin), entry, None, args=args)
    return entry


def ready_name(args=ARGS, plugin=OPENSTACK, kind="keystone"):
    return os.path.basename(ready_path(entry_path(args, plugin), kind))


def run_front(python_plugin, shell, args=ARGS, info=None, env=None, name=None):
    environ = {**os.environ, "KUBECTL_CAAS_READY": name if name is not None else ready_name(),
               "KUBECTL_CAAS_PLUGIN": str(python_plugin), "KUBERNETES_EXEC_INFO": info or kubectl_info(),
               **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    argv = [*(shell or []), str(FRONT), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=30)


def served(result):
    assert MISS not in result.stdout, result.stderr
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def missed(result, args=ARGS):
    assert result.stdout == f"{MISS} {' '.join(args)}\n", (result.stdout, result.stderr)
    assert result.returncode == 7


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_a_fresh_ready_credential_is_printed_echoing_the_api_version(python_plugin, shell, version):
    entry = login()
    result = run_front(python_plugin, shell, info=kubectl_info(version))
    assert result.stdout == exec_credential(version, entry["tokens"]["keystone"]) + "\n"  # byte for byte Python's
    assert served(result)["apiVersion"] == version
    assert result.stderr == ""


def test_no_exec_info_is_v1_as_in_python(python_plugin, shell):
    login()
    assert served(run_front(python_plugin, shell, info="", env={"KUBERNETES_EXEC_INFO": None}))["apiVersion"] == V1


@pytest.mark.parametrize("info", [
    kubectl_info("client.authentication.k8s.io/v2"), kubectl_info("client.authentication.k8s.io/v1alpha1"),
    json.dumps({"kind": "ExecCredential", "apiVersion": V1}),  # not kubectl's form: Python reads it
    "not json", '{"apiVersion":"client.authentication.k8s.io/v1"}'])
def test_any_other_exec_info_goes_to_python(python_plugin, shell, info):
    login()
    missed(run_front(python_plugin, shell, info=info))


def test_a_token_past_its_renewal_point_is_never_served(python_plugin, shell):
    login(left=30.0)  # a 1 h token with 30 s left: inside the 60 s margin
    assert not os.path.exists(ready_path(entry_path(), "keystone"))
    missed(run_front(python_plugin, shell))


def test_the_front_checks_the_clock_itself(python_plugin, shell):
    """A ready file written while fresh is refused once `date +%s` reaches its renewal point."""
    now = time.time()
    for token, expect_hit in (({"value": "t", "expires_at": now + 61.5, "issued_at": now - 3000}, True),
                              ({"value": "t", "expires_at": now + 59, "issued_at": now - 3000}, False),
                              ({"value": "t", "expires_at": now - 1, "issued_at": now - 3600}, False),
                              ({"value": "t", "expires_at": now + 3600, "issued_at": now + 30}, False)):  # clock behind
        login()
        payload = ready.render(ready_name(), ARGS, token)
        cache.write_cache_file(ready_path(entry_path(), "keystone"), payload)
        result = run_front(python_plugin, shell)
        if expect_hit:
            assert served(result)["status"]["token"] == "t"
        else:
            missed(result)


def test_other_args_than_the_ready_credential_answers_go_to_python(python_plugin, shell):
    login()
    other = [*ARGS[:-1], "ATLAS"]
    missed(run_front(python_plugin, shell, args=other), other)
    missed(run_front(python_plugin, shell, args=[*ARGS, "--debug"]), [*ARGS, "--debug"])
    missed(run_front(python_plugin, shell, args=["status"]), ["status"])


@pytest.mark.parametrize("name", ["", ".hidden", "../cache/x.keystone.ready", "a/b", "x y", "nonexistent.keystone.ready"])
def test_a_bad_or_unknown_ready_name_goes_to_python(python_plugin, shell, name):
    login()
    missed(run_front(python_plugin, shell, name=name))


@pytest.mark.parametrize("damage", ["truncate", "magic", "name", "until", "huge", "credential", "no-end", "empty"])
def test_a_damaged_ready_credential_goes_to_python(python_plugin, shell, damage):
    login()
    path = ready_path(entry_path(), "keystone")
    text = Path(path).read_text()
    lines = text.split("\n")
    if damage == "truncate":
        text = text[: len(text) - 5]
    elif damage == "magic":
        text = text.replace("kubectl-caas-ready-1", "kubectl-caas-ready-2", 1)
    elif damage == "name":
        text = text.replace(ready_name(), "openstack-x.keystone.ready", 1)
    elif damage == "until":
        fields = lines[0].split("\t")
        text = "\n".join(["\t".join([*fields[:3], fields[3] + "x"]), *lines[1:]])
    elif damage == "huge":
        fields = lines[0].split("\t")
        text = "\n".join(["\t".join([*fields[:3], "9" * 30]), *lines[1:]])
    elif damage == "credential":
        text = text.replace('"kind": "ExecCredential"', '"kind": "Other"')
    elif damage == "no-end":
        text = "\n".join(lines[:3]) + "\n"
    elif damage == "empty":
        text = ""
    cache.write_cache_file(path, text.encode())
    missed(run_front(python_plugin, shell))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_partial_ready_file_goes_to_python(python_plugin, cut):
    login()
    path = ready_path(entry_path(), "keystone")
    data = Path(path).read_bytes()
    cache.write_cache_file(path, data[: cut % len(data)])
    missed(run_front(python_plugin, ["sh"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(min_size=1, max_size=300).filter(lambda t: "\x00" not in t),
       lifetime=st.floats(min_value=20, max_value=400 * 86400), version=st.sampled_from([V1, V1BETA1]))
def test_the_front_prints_what_python_prints_for_any_token(python_plugin, token, lifetime, version):
    entry = login(token=token, lifetime=lifetime, left=lifetime * 0.8)
    result = run_front(python_plugin, ["sh"], info=kubectl_info(version))
    assert result.stdout == exec_credential(version, entry["tokens"]["keystone"]) + "\n"


def test_a_symlinked_ready_file_is_never_followed(python_plugin, shell, tmp_path):
    login()
    path = ready_path(entry_path(), "keystone")
    planted = tmp_path / "planted.ready"
    os.rename(path, planted)
    os.symlink(planted, path)
    missed(run_front(python_plugin, shell))


def test_a_symlinked_cache_directory_is_never_followed(python_plugin, shell, cache_dir, tmp_path):
    login()
    os.rename(cache_dir, tmp_path / "real")
    os.symlink(tmp_path / "real", cache_dir)
    missed(run_front(python_plugin, shell))


@pytest.mark.parametrize("target, mode", [("file", 0o640), ("file", 0o604), ("file", 0o620), ("dir", 0o770),
                                          ("dir", 0o707)])
def test_modes_the_cache_refuses_go_to_python(python_plugin, shell, cache_dir, target, mode):
    login()
    os.chmod(ready_path(entry_path(), "keystone") if target == "file" else cache_dir, mode)
    missed(run_front(python_plugin, shell))


def test_logout_leaves_nothing_to_serve(python_plugin, shell):
    login()
    with store.locked(entry_path()):
        store.forget(OPENSTACK, entry_path())
    assert not os.path.exists(ready_path(entry_path(), "keystone"))
    missed(run_front(python_plugin, shell))


def test_an_entry_removed_by_hand_takes_its_ready_credential_with_it(python_plugin, shell):
    login()
    os.unlink(entry_path())
    missed(run_front(python_plugin, shell))


def test_a_renewal_replaces_the_ready_credential_for_every_args_it_answered(python_plugin, shell):
    login(token="old")
    # A renewal (a forced refresh, say) by get-token with the same args: the new token, at once.
    now = time.time()
    renewed = {"tokens": {"keystone": {"value": "new", "expires_at": now + 3600, "issued_at": now}}}
    with store.locked(entry_path()):
        assert store.save_renewed(OPENSTACK, entry_path(), renewed, None) is None  # no args: kept those it had
    assert served(run_front(python_plugin, shell))["status"]["token"] == "new"


def test_a_renewal_that_leaves_no_fresh_token_leaves_no_ready_credential(python_plugin, shell):
    login(token="old")
    now = time.time()
    with store.locked(entry_path()):
        store.save(OPENSTACK, entry_path(), {"tokens": {"keystone": {"value": "x", "expires_at": now + 5,
                                                                     "issued_at": now - 3000}}}, None, ARGS)
    missed(run_front(python_plugin, shell))


def test_iam_writes_one_ready_credential_per_bearer_its_contexts_use(python_plugin):
    id_args = ["get-token", "--issuer", "https://iam.example.org/", "--client-id", "c1"]
    access_args = [*id_args, "--token", "access"]
    now = time.time()
    tokens = {"id": {"value": "id-tok", "expires_at": now + 600, "issued_at": now},
              "access": {"value": "access-tok", "expires_at": now + 3600, "issued_at": now}}
    path = entry_path(id_args, IAM)
    store.replace(IAM, path, {"tokens": tokens}, None, args=id_args)
    store.replace(IAM, path, {"tokens": tokens}, None, args=access_args)  # another context, same entry
    for args, kind, token in ((id_args, "id", "id-tok"), (access_args, "access", "access-tok")):
        result = run_front(python_plugin, ["sh"], args=args, name=ready_name(args, IAM, kind))
        assert served(result)["status"]["token"] == token


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(explicit=st.sampled_from([None, "", "rel-cache", "abs"]), kube=st.sampled_from([None, "", "kc"]),
       home=st.sampled_from([None, "", "home"]))
def test_the_front_finds_the_cache_where_python_does_or_goes_to_python(python_plugin, tmp_path_factory, explicit,
                                                                       kube, home):
    base = tmp_path_factory.mktemp("where")
    env = {"KUBECTL_CAAS_CACHE_DIR": {None: None, "": "", "rel-cache": "rel-cache", "abs": str(base / "abs")}[explicit],
           "KUBECACHEDIR": {None: None, "": "", "kc": str(base / "kc")}[kube],
           "HOME": {None: None, "": "", "home": str(base / "home")}[home]}
    saved = {k: os.environ.get(k) for k in env}
    cwd = os.getcwd()
    os.chdir(base)
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        directory = cache.cache_dir()
        if not directory.startswith(str(base)) and not directory.startswith("rel-cache"):
            return  # Python's own fallback (the password database's home, or "/"): not the front's business
        login()
        result = subprocess.run(["sh", str(FRONT), *ARGS], capture_output=True, text=True, timeout=30, cwd=base,
                                env={**{k: v for k, v in os.environ.items() if k not in env},
                                     **{k: v for k, v in env.items() if v is not None},
                                     "KUBECTL_CAAS_READY": ready_name(), "KUBECTL_CAAS_PLUGIN": str(python_plugin),
                                     "KUBERNETES_EXEC_INFO": kubectl_info()})
        if home == "" and not explicit and not kube:
            missed(result)  # HOME set but empty: Python's expanduser says "/", the front does not guess
        else:
            assert served(result)["status"]["token"] == "tok-1"
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_login_writes_the_front_into_the_kubeconfig_and_reads_it_back(tmp_path, python_plugin, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python3"))  # no front beside it
    bindir = tmp_path / "bin"
    bindir.mkdir()
    plugin = bindir / "kubectl-openstack"
    shutil.copy(python_plugin, plugin)
    shutil.copy(FRONT, bindir / kubeconfig.FRONT)
    command, env = contexts.front_stanza(OPENSTACK, str(plugin), ARGS)
    assert command == str(bindir / kubeconfig.FRONT)
    assert env == [{"name": "KUBECTL_CAAS_READY", "value": ready_name()},
                   {"name": "KUBECTL_CAAS_PLUGIN", "value": str(plugin)}]
    body = kubeconfig.exec_user_body(command, ARGS, None, env)
    assert kubeconfig.exec_command(body) == str(plugin)  # status, logout and re-login find the plugin
    assert contexts.same_person(OPENSTACK, identity.from_args(OPENSTACK.options, ARGS, "x"))(body)
    # No front beside the plugin, or args it cannot compare, or opted out: the plugin itself.
    os.unlink(bindir / kubeconfig.FRONT)
    assert contexts.front_stanza(OPENSTACK, str(plugin), ARGS) == (str(plugin), None)
    shutil.copy(FRONT, bindir / kubeconfig.FRONT)
    assert contexts.front_stanza(OPENSTACK, str(plugin), [*ARGS[:-1], "C\tMS"]) == (str(plugin), None)
    os.environ["KUBECTL_CAAS_FAST_PATH"] = "0"
    try:
        assert contexts.front_stanza(OPENSTACK, str(plugin), ARGS) == (str(plugin), None)
    finally:
        del os.environ["KUBECTL_CAAS_FAST_PATH"]


def test_a_single_file_build_starts_with_the_front():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", ROOT / "plugins" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    head = build.front_head()
    assert head.startswith(b"#!/bin/sh\n") and kubeconfig.FRONT_MARK in head
    assert b'exec python3 "$0" "$@"' in head


def test_a_pipx_install_finds_the_front_in_its_venv(tmp_path, python_plugin, monkeypatch):
    # pipx exposes the console scripts as links in ~/.local/bin to its venv's bin, where the front
    # is installed; login writes the front's real place and the link as the plugin to run.
    venv_bin = tmp_path / "venvs" / "kubectl-caas" / "bin"
    venv_bin.mkdir(parents=True)
    shutil.copy(python_plugin, venv_bin / "kubectl-openstack")
    shutil.copy(FRONT, venv_bin / kubeconfig.FRONT)
    exposed = tmp_path / "local" / "bin"
    exposed.mkdir(parents=True)
    (exposed / "kubectl-openstack").symlink_to(venv_bin / "kubectl-openstack")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python3"))
    command, env = contexts.front_stanza(OPENSTACK, str(exposed / "kubectl-openstack"), ARGS)
    assert command == str(venv_bin / kubeconfig.FRONT)
    assert {"name": "KUBECTL_CAAS_PLUGIN", "value": str(exposed / "kubectl-openstack")} in env
    # and beside the interpreter, when the script was copied out of its venv
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(python_plugin, copied / "kubectl-openstack")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python3"))
    assert contexts.front_stanza(OPENSTACK, str(copied / "kubectl-openstack"), ARGS)[0] == str(venv_bin / kubeconfig.FRONT)


def test_python_writes_a_missing_ready_credential_again_on_a_fresh_hit(python_plugin, capsys):
    # Removed by hand (or lost to a full disk at the last renewal): the front sends the hit to
    # Python, which answers from the entry and writes the ready credential again.
    from kubectl_caas import exec_plugin
    from kubectl_caas.runtime import Runtime

    login(token="tok-1")
    ready = ready_path(entry_path(), "keystone")
    os.unlink(ready)
    missed(run_front(python_plugin, None))
    environ = {"KUBECTL_CAAS_READY": ready_name(), "KUBERNETES_EXEC_INFO": kubectl_info()}
    assert exec_plugin.get_token(OPENSTACK, ARGS[1:], Runtime(environ=environ)) == 0
    assert json.loads(capsys.readouterr().out)["status"]["token"] == "tok-1"
    assert served(run_front(python_plugin, None))["status"]["token"] == "tok-1"
    # Not when the front did not send it (no name, or another one).
    os.unlink(ready)
    for other in ({"KUBERNETES_EXEC_INFO": kubectl_info()}, dict(environ, KUBECTL_CAAS_READY="other.keystone.ready")):
        assert exec_plugin.get_token(OPENSTACK, ARGS[1:], Runtime(environ=other)) == 0
        assert not os.path.lexists(ready)


@pytest.mark.parametrize("missing", ["date", "ls", "both"])
def test_a_shell_without_the_programs_it_needs_goes_to_python(python_plugin, shell, tmp_path, missing):
    # PATH holds only what is left: a system without `date` or `ls` (or a PATH that lost them).
    login()
    tools = tmp_path / "tools"
    tools.mkdir()
    for program in ("date", "ls"):
        if missing not in (program, "both"):
            (tools / program).symlink_to(shutil.which(program))
    for program in {argv[0] for argv in SHELLS}:  # the shell itself is there
        (tools / program).symlink_to(shutil.which(program))
    missed(run_front(python_plugin, shell, env={"PATH": str(tools)}))
    assert served(run_front(python_plugin, shell))["status"]["token"] == "tok-1"  # with them: a hit


def test_an_entry_written_after_its_ready_credential_makes_it_stale(python_plugin, shell, capsys):
    # Something that knows nothing of ready credentials rewrote the entry (a hand edit, an older
    # kubectl-caas renewing): the front leaves it to Python, which answers and writes it again.
    from kubectl_caas import exec_plugin
    from kubectl_caas.runtime import Runtime

    login(token="tok-1")
    path = entry_path()
    entry = json.loads(Path(path).read_text())
    entry["tokens"]["keystone"]["value"] = "tok-2"
    ready_file = ready_path(path, "keystone")
    earlier = os.stat(ready_file).st_mtime - 2  # file times tick coarsely: make "after" unmistakable
    os.utime(ready_file, (earlier, earlier))
    Path(path).write_text(json.dumps(entry))
    missed(run_front(python_plugin, shell))
    environ = {"KUBECTL_CAAS_READY": ready_name(), "KUBERNETES_EXEC_INFO": kubectl_info()}
    assert exec_plugin.get_token(OPENSTACK, ARGS[1:], Runtime(environ=environ)) == 0
    assert json.loads(capsys.readouterr().out)["status"]["token"] == "tok-2"
    assert served(run_front(python_plugin, shell))["status"]["token"] == "tok-2"

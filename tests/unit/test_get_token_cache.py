"""get-token's hot path and the token cache: the ExecCredential contract, freshness, file safety."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from kubectl_caas import cache, exec_plugin, identity, locks
from kubectl_caas.plugins import PLUGINS

OPENSTACK_ARGS = ["--auth-url", "https://keystone.example.org/v3", "--user", "alice",
                  "--user-domain-id", "default", "--project", "CMS", "--project-domain-id", "default"]
HEAVY = ("typer", "keystoneauth1", "authlib", "requests", "yaml", "rich", "click")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(directory))
    monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)
    return directory


def entry_path(plugin="openstack", args=OPENSTACK_ARGS):
    record = PLUGINS[plugin]
    values, _ = identity.parse_args(record.options, list(args), record.command)
    return record.entry_path(values)


def store(token="tok-1", lifetime=3600.0, left=3000.0, kind="keystone", path=None):
    now = time.time()
    entry = {"tokens": {kind: {"value": token, "expires_at": now + left, "issued_at": now + left - lifetime}}}
    cache.write_entry(path or entry_path(), entry)
    return entry


def run_get_token(*args, env=None, plugin="kubectl-openstack"):
    # Runs the console-script entry point as installed, then reports which heavy modules it loaded.
    code = ("import sys\nfrom kubectl_caas import console\n"
            f"sys.argv[0] = {plugin!r}\n"
            "try:\n    console.%s_main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n'); sys.exit(code)"
            % (plugin.split("-")[1], HEAVY))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.mark.parametrize("version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_cache_hit_prints_only_an_exec_credential_echoing_the_api_version(version):
    entry = store()
    info = json.dumps({"kind": "ExecCredential", "apiVersion": version, "spec": {"interactive": False}})
    result = run_get_token("get-token", *OPENSTACK_ARGS, env={"KUBERNETES_EXEC_INFO": info + "\n"})
    assert result.returncode == 0, result.stderr
    credential = json.loads(result.stdout)
    assert credential["apiVersion"] == version and credential["kind"] == "ExecCredential"
    assert credential["status"]["token"] == "tok-1"
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["tokens"]["keystone"]["expires_at"]))
    assert credential["status"]["expirationTimestamp"] == expected


def test_cache_hit_path_imports_none_of_the_heavy_libraries():
    store()
    result = run_get_token("get-token", *OPENSTACK_ARGS)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr


def test_iam_cache_hit_path_imports_none_of_the_heavy_libraries():
    args = ["--issuer", "https://iam.example.org/", "--client-id", "c1"]
    store(kind="id", path=entry_path("iam", args))
    result = run_get_token("get-token", *args, plugin="kubectl-iam")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "tok-1"
    assert "HEAVY=\n" in result.stderr


def test_package_init_is_empty():
    import kubectl_caas

    with open(kubectl_caas.__file__) as handle:
        assert handle.read().strip() == ""


@pytest.mark.parametrize("lifetime, margin", [(3600, 60), (600, 60), (25, 2.5), (20, 2), (0, 0)])
def test_renew_margin_is_at_most_60s_and_a_tenth_of_the_lifetime(lifetime, margin):
    assert exec_plugin.renew_margin(lifetime) == pytest.approx(margin)


def test_token_inside_the_margin_is_not_fresh():
    now = time.time()
    entry = {"tokens": {"keystone": {"value": "t", "expires_at": now + 2.0, "issued_at": now - 18.0}}}
    assert exec_plugin.fresh_token(entry, "keystone", now) is None  # 20 s token, 2 s margin: due
    entry["tokens"]["keystone"]["expires_at"] = now + 2.5
    assert exec_plugin.fresh_token(entry, "keystone", now - 1) is not None


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"tokens": {"keystone": {"value": 3}}}', b"\x00\xff" * 10,
                                     b'{"tokens": {"keystone": {"value": "t", "expires_at": "soon"}}}',
                                     b"[" * 100_000])  # nested deeper than the JSON parser recurses
def test_corrupt_or_truncated_entry_is_a_miss_not_a_crash(content):
    path = entry_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:  # as the cache writes them
        handle.write(content)
    assert exec_plugin.fresh_token(cache.read_entry(path), "keystone", time.time()) is None
    # with nothing to renew with, get-token fails cleanly and asks for a login
    result = run_get_token("get-token", *OPENSTACK_ARGS, env={"OS_PASSWORD": ""})
    assert result.returncode == 5
    assert "Traceback" not in result.stderr
    assert "kubectl openstack login" in result.stderr.splitlines()[0]


def test_a_symlinked_cache_file_is_never_followed(tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"tokens": {"keystone": {"value": "planted", "expires_at": time.time() + 999,
                                                         "issued_at": time.time()}}}))
    path = entry_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.symlink(secret, path)
    assert cache.read_entry(path) is None
    store(token="real", path=path)  # replacing it swaps the link itself, leaving the target alone
    assert not os.path.islink(path)
    assert json.loads(secret.read_text())["tokens"]["keystone"]["value"] == "planted"


def test_cache_files_are_0600_in_a_0700_directory(cache_dir):
    store()
    path = entry_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    with locks.EntryLock(path):
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600


def test_a_cache_directory_others_can_read_is_tightened_and_said(cache_dir, capsys):
    cache_dir.mkdir(mode=0o755)
    os.chmod(cache_dir, 0o755)
    store()
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert "tightened permissions" in capsys.readouterr().err


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECTL_CAAS_CACHE_DIR")
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kc"))
    assert cache.cache_dir() == str(tmp_path / "kc" / "kubectl-caas")
    monkeypatch.delenv("KUBECACHEDIR")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache.cache_dir() == str(tmp_path / "h" / ".kube" / "cache" / "kubectl-caas")


def test_cache_key_separates_identities_and_names_the_user():
    base = entry_path()
    other_project = entry_path(args=[*OPENSTACK_ARGS[:-4], "--project", "ATLAS", "--project-domain-id", "default"])
    other_user = entry_path(args=["--auth-url", "https://keystone.example.org/v3", "--user", "bob",
                                  "--project", "CMS"])
    assert len({base, other_project, other_user}) == 3
    assert "alice" in os.path.basename(base)


def test_unknown_get_token_option_is_a_one_line_usage_error():
    result = run_get_token("get-token", "--password", "x")
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if not line.startswith("HEAVY")] == \
        ["kubectl-openstack: error: get-token: unknown option --password; see `kubectl-openstack get-token --help`"]
    assert result.stdout == ""


def test_entry_lock_is_per_entry_and_released_when_the_holder_dies(tmp_path):
    path = entry_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from kubectl_caas.locks import EntryLock\n"
                               f"lock = EntryLock({path!r}).__enter__(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match="held"):
        with locks.EntryLock(path, timeout=0.2):
            pass
    with locks.EntryLock(path + "-other", timeout=0.2):  # another entry does not wait
        pass
    holder.kill()
    holder.wait()
    with locks.EntryLock(path, timeout=5):  # the kernel released the dead holder's lock
        pass


def test_cache_hit_path_does_not_load_typing_or_openssl():
    """Each costs milliseconds on every kubectl command; the hot path needs neither."""
    store()
    code = ("import sys\nfrom kubectl_caas import console\nsys.argv[0] = 'kubectl-openstack'\n"
            "try:\n    console.openstack_main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('LOADED=' + ','.join(m for m in ('typing', '_hashlib') if m in sys.modules) + '\\n')")
    result = subprocess.run([sys.executable, "-c", code, "get-token", *OPENSTACK_ARGS], capture_output=True,
                            text=True, env=os.environ, timeout=60)
    assert json.loads(result.stdout)["status"]["token"] == "tok-1"
    assert "LOADED=\n" in result.stderr


def test_cache_hit_path_reads_without_loading_the_locks():
    """A hit only reads its entry; the entry lock (and fcntl) is for renewals."""
    store()
    code = ("import sys\nfrom kubectl_caas import console\nsys.argv[0] = 'kubectl-openstack'\n"
            "try:\n    console.openstack_main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('LOADED=' + ','.join(m for m in ('kubectl_caas.locks', 'kubectl_caas.store', 'fcntl')"
            " if m in sys.modules) + '\\n')")
    result = subprocess.run([sys.executable, "-c", code, "get-token", *OPENSTACK_ARGS], capture_output=True,
                            text=True, env=os.environ, timeout=60)
    assert json.loads(result.stdout)["status"]["token"] == "tok-1"
    assert "LOADED=\n" in result.stderr

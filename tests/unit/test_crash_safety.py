"""A writer killed at any point leaves the previous kubeconfig and cache intact and readable, and
its locks do not block the next writer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from kubectl_caas import cache, kubeconfig, locks

KILL_AT = {
    # after the temporary file is written and flushed, before the rename
    "before-rename": "os.replace",
    # the temporary file is written but not yet synced to disk
    "before-fsync": "os.fsync",
}


def run_killed(code: str, kill_at: str, env: dict) -> subprocess.CompletedProcess:
    """Run `code` in a child that SIGKILLs itself when it reaches `kill_at`."""
    target = KILL_AT[kill_at]
    module, name = target.split(".")
    prelude = textwrap.dedent(f"""
        import os, signal, {module}
        def _die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        {target} = _die
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def entry(context: str) -> kubeconfig.Entry:
    return kubeconfig.Entry(context=context, cluster="c", server="https://127.0.0.1:6443", user=f"u-{context}",
                            user_body=kubeconfig.exec_user_body("/bin/kubectl-openstack", ["get-token"]))


@pytest.mark.parametrize("kill_at", sorted(KILL_AT))
def test_kubeconfig_write_killed_leaves_the_previous_file_intact(tmp_path, kill_at):
    path = tmp_path / "config"
    kubeconfig.upsert(entry("before"), explicit_path=str(path))
    before = path.read_bytes()
    child = run_killed(f"""
        from kubectl_caas import kubeconfig
        kubeconfig.upsert(kubeconfig.Entry(context="after", cluster="c", server="https://127.0.0.1:6443",
                          user="u", user_body={{}}), explicit_path={str(path)!r})
    """, kill_at, {})
    assert child.returncode == -9, child.stderr
    assert path.read_bytes() == before
    assert [c["name"] for c in yaml.safe_load(before)["contexts"]] == ["before"]
    # the next writer succeeds (the lock died with its holder) and sweeps the orphaned temp file
    kubeconfig.upsert(entry("next"), explicit_path=str(path))
    assert sorted(c["name"] for c in yaml.safe_load(path.read_text())["contexts"]) == ["before", "next"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


@pytest.mark.parametrize("kill_at", sorted(KILL_AT))
def test_cache_write_killed_leaves_the_previous_entry_intact(tmp_path, kill_at):
    env = {"KUBECTL_CAAS_CACHE_DIR": str(tmp_path / "cache")}
    os.environ.update(env)
    try:
        path = cache.entry_path("openstack", {"user": "alice", "project": "cms"})
        cache.write_entry(path, {"tokens": {"keystone": {"value": "old", "expires_at": 1, "issued_at": 0}}})
        before = open(path, "rb").read()
        child = run_killed(f"""
            from kubectl_caas import cache, locks
            with locks.EntryLock({path!r}):
                cache.write_entry({path!r}, {{"tokens": {{"keystone": {{"value": "new"}}}}}})
        """, kill_at, env)
        assert child.returncode == -9, child.stderr
        assert open(path, "rb").read() == before
        assert json.loads(before)["tokens"]["keystone"]["value"] == "old"
        with locks.EntryLock(path, timeout=5):  # not blocked by the dead writer's lock
            cache.write_entry(path, {"tokens": {}})
        assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
    finally:
        for key in env:
            os.environ.pop(key, None)


def test_kubeconfig_lock_of_a_killed_process_does_not_block(tmp_path):
    path = tmp_path / "config"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from kubectl_caas import kubeconfig
        with kubeconfig.locked([{str(path)!r}]):
            print("locked", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    kubeconfig.upsert(entry("after-kill"), explicit_path=str(path))
    assert yaml.safe_load(path.read_text())["current-context"] == "after-kill"

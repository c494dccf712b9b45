"""The token cache trusts only what the user running the plugin controls.

A cache directory that is a symbolic link or belongs to someone else, and entries or locks that
another user could have planted, are never used: reading treats them as a miss, writing and
locking refuse them with one line saying what to do. Tests that hand files to another user need
root (os.chown); CI runs them as root.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubectl_caas import cache, exec_plugin, identity, locks
from kubectl_caas.plugins import OPENSTACK
from kubectl_caas.runtime import Runtime
from kubectl_caas.errors import CaasError

OTHER_UID = 65534  # nobody
OPENSTACK_ARGS = ["--auth-url", "https://keystone.example.org/v3", "--user", "alice",
                  "--user-domain-id", "default", "--project", "CMS", "--project-domain-id", "default"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "kubectl-openstack"

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user (os.chown) needs root")


@pytest.fixture(autouse=True)
def no_exec_info(monkeypatch):
    monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache directory of ours, 0700, as the cache itself would create it."""
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(directory))
    return directory


def entry_name() -> str:
    values, _ = identity.parse_args(OPENSTACK.options, list(OPENSTACK_ARGS), OPENSTACK.command)
    return os.path.basename(OPENSTACK.entry_path(values))


def fresh_entry(token: str) -> dict:
    now = time.time()
    return {"tokens": {"keystone": {"value": token, "expires_at": now + 3000, "issued_at": now - 600}}}


def plant(path: Path, content, mode: int = 0o600, uid: int = None) -> Path:
    """Write a file by hand (not through the cache) with exactly this mode and owner."""
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def make_dir(path: Path, mode: int, uid: int = None) -> Path:
    path.mkdir()
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def get_token(capsys) -> tuple:
    code = exec_plugin.get_token(OPENSTACK, list(OPENSTACK_ARGS), Runtime())
    out, err = capsys.readouterr()
    return code, out, err


def run_console_script(cache_directory: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECTL_CAAS_CACHE_DIR": str(cache_directory), "OS_PASSWORD": ""}
    env.pop("KUBERNETES_EXEC_INFO", None)
    return subprocess.run([str(CONSOLE_SCRIPT), "get-token", *OPENSTACK_ARGS], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=60)


# ---------------------------------------------------------------------------------------------
# The cache directory


def test_symlinked_cache_directory_is_refused_on_write_and_its_target_is_not_touched(tmp_path):
    target = make_dir(tmp_path / "target", 0o755)
    link = tmp_path / "cache"
    link.symlink_to(target)
    with pytest.raises(CaasError) as refused:
        cache.write_entry(str(link / entry_name()), fresh_entry("mine"))
    assert "symbolic link" in str(refused.value) and "KUBECTL_CAAS_CACHE_DIR" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755  # not chmod-ed through the link
    assert list(target.iterdir()) == []
    with pytest.raises(CaasError, match="symbolic link"):
        cache.ensure_private_dir(str(link))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755


def test_symlinked_cache_directory_is_ignored_on_read(tmp_path):
    target = make_dir(tmp_path / "target", 0o700)
    plant(target / entry_name(), fresh_entry("through-the-link"))
    link = tmp_path / "cache"
    link.symlink_to(target)
    assert cache.read_entry(str(link / entry_name())) is None
    state, entry, reason = cache.inspect_entry(str(link / entry_name()))
    assert (state, entry) == (cache.UNTRUSTED, None) and "symbolic link" in reason


def test_symlinked_cache_directory_refuses_the_lock_and_the_deletion(tmp_path):
    target = make_dir(tmp_path / "target", 0o700)
    planted = plant(target / entry_name(), fresh_entry("kept"))
    link = tmp_path / "cache"
    link.symlink_to(target)
    with pytest.raises(CaasError, match="symbolic link"):
        with locks.EntryLock(str(link / entry_name()), timeout=1):
            pass
    with pytest.raises(CaasError, match="symbolic link"):
        cache.delete_entry(str(link / entry_name()))
    assert planted.exists() and sorted(p.name for p in target.iterdir()) == [entry_name()]


@needs_root
def test_foreign_cache_directory_is_refused_even_for_root(tmp_path):
    foreign = make_dir(tmp_path / "cache", 0o700, OTHER_UID)  # root could read and write it: must not
    plant(foreign / entry_name(), fresh_entry("theirs"), uid=OTHER_UID)
    path = str(foreign / entry_name())
    assert cache.read_entry(path) is None
    assert cache.inspect_entry(path)[0] == cache.UNTRUSTED
    for attempt in (lambda: cache.write_entry(path, fresh_entry("mine")), lambda: locks.EntryLock(path, 1).__enter__(),
                    lambda: cache.delete_entry(path), lambda: cache.ensure_private_dir(str(foreign))):
        with pytest.raises(CaasError) as refused:
            attempt()
        assert f"belongs to uid {OTHER_UID}" in str(refused.value)
        assert "set KUBECTL_CAAS_CACHE_DIR to a directory of your own" in str(refused.value)
    assert sorted(p.name for p in foreign.iterdir()) == [entry_name()]
    assert stat.S_IMODE(os.stat(foreign).st_mode) == 0o700


@needs_root
def test_foreign_world_writable_cache_directory_cannot_hand_kubectl_a_token(tmp_path, monkeypatch, capsys):
    # KUBECTL_CAAS_CACHE_DIR=/tmp/x, where another user got there first
    foreign = make_dir(tmp_path / "x", 0o777, OTHER_UID)
    plant(foreign / entry_name(), fresh_entry("planted-token"), uid=OTHER_UID)
    monkeypatch.setenv("KUBECTL_CAAS_CACHE_DIR", str(foreign))
    monkeypatch.setenv("OS_PASSWORD", "")
    code, out, err = get_token(capsys)
    assert code != 0 and out == "" and "planted-token" not in err
    assert [line for line in err.splitlines() if line] == [
        f"kubectl-openstack: error: the token cache directory {foreign} belongs to uid {OTHER_UID}, not to you "
        f"(uid {os.getuid()}); set KUBECTL_CAAS_CACHE_DIR to a directory of your own"]
    assert stat.S_IMODE(os.stat(foreign).st_mode) == 0o777


@needs_root
def test_console_script_refuses_a_foreign_cache_directory_in_one_line(tmp_path):
    foreign = make_dir(tmp_path / "x", 0o777, OTHER_UID)
    plant(foreign / entry_name(), fresh_entry("planted-token"), uid=OTHER_UID)
    result = run_console_script(foreign)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"belongs to uid {OTHER_UID}" in result.stderr and "KUBECTL_CAAS_CACHE_DIR" in result.stderr


def test_console_script_ignores_a_symlinked_cache_directory(tmp_path):
    target = make_dir(tmp_path / "target", 0o700)
    plant(target / entry_name(), fresh_entry("through-the-link"))
    link = tmp_path / "cache"
    link.symlink_to(target)
    result = run_console_script(link)
    assert result.returncode == 1 and result.stdout == ""
    assert "through-the-link" not in result.stderr and "symbolic link" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_cache_directory_of_ours_that_others_can_write_is_a_miss_until_tightened(tmp_path, capsys):
    directory = make_dir(tmp_path / "cache", 0o777)
    plant(directory / entry_name(), fresh_entry("mine"))
    path = str(directory / entry_name())
    assert cache.read_entry(path) is None  # others could have swapped entries around
    assert cache.inspect_entry(path)[0] == cache.UNTRUSTED
    cache.write_entry(path, fresh_entry("renewed"))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert "tightened permissions" in capsys.readouterr().err
    assert cache.read_entry(path)["tokens"]["keystone"]["value"] == "renewed"


@pytest.fixture
def swapped_after_check(tmp_path, monkeypatch):
    """Once the cache has checked its directory, another process renames it away and puts a link to a
    decoy of its own in its place. Returns (directory, where it went, decoy)."""
    directory = make_dir(tmp_path / "cache", 0o700)
    moved, decoy = tmp_path / "moved", make_dir(tmp_path / "decoy", 0o700)
    check = cache._open_dir

    def check_then_swap(path, uid):
        opened = check(path, uid)
        if not directory.is_symlink():
            os.rename(directory, moved)
            directory.symlink_to(decoy)
        return opened

    monkeypatch.setattr(cache, "_open_dir", check_then_swap)
    return directory, moved, decoy


def test_a_swapped_cache_directory_cannot_redirect_a_write(swapped_after_check):
    directory, moved, decoy = swapped_after_check
    cache.write_entry(str(directory / entry_name()), fresh_entry("mine"))
    assert list(decoy.iterdir()) == []
    assert json.loads((moved / entry_name()).read_text())["tokens"]["keystone"]["value"] == "mine"


def test_a_swapped_cache_directory_cannot_redirect_a_read(swapped_after_check):
    directory, _moved, decoy = swapped_after_check
    plant(directory / entry_name(), fresh_entry("mine"))
    plant(decoy / entry_name(), fresh_entry("decoy"))
    assert cache.read_entry(str(directory / entry_name()))["tokens"]["keystone"]["value"] == "mine"


def test_a_swapped_cache_directory_cannot_redirect_a_deletion(swapped_after_check):
    directory, moved, decoy = swapped_after_check
    plant(directory / entry_name(), fresh_entry("mine"))
    plant(decoy / entry_name(), fresh_entry("decoy"))
    assert cache.delete_entry(str(directory / entry_name())) is True
    assert not (moved / entry_name()).exists() and (decoy / entry_name()).exists()


def test_kubeconfig_writer_still_follows_a_symlinked_directory(tmp_path):
    """The cache's strictness is not imposed on kubeconfig files, which live where the user keeps them."""
    dotfiles = make_dir(tmp_path / "dotfiles", 0o755)
    kube = tmp_path / ".kube"
    kube.symlink_to(dotfiles)
    cache.write_private_file_atomically(str(kube / "config"), b"apiVersion: v1\n")
    assert (dotfiles / "config").read_bytes() == b"apiVersion: v1\n"
    assert stat.S_IMODE(os.stat(dotfiles / "config").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dotfiles).st_mode) == 0o755


# ---------------------------------------------------------------------------------------------
# Entries


@needs_root
def test_planted_entry_of_another_user_is_ignored(cache_dir, capsys):
    path = plant(cache_dir / entry_name(), fresh_entry("planted-token"), uid=OTHER_UID)
    assert cache.read_entry(str(path)) is None
    assert f"belongs to uid {OTHER_UID}" in capsys.readouterr().err
    state, entry, reason = cache.inspect_entry(str(path))
    assert (state, entry) == (cache.UNREADABLE, None) and f"uid {OTHER_UID}" in reason


@needs_root
def test_get_token_does_not_print_a_planted_entry_of_another_user(cache_dir, monkeypatch, capsys):
    plant(cache_dir / entry_name(), fresh_entry("planted-token"), uid=OTHER_UID)
    monkeypatch.setenv("OS_PASSWORD", "")
    code, out, err = get_token(capsys)
    assert code != 0 and out == ""
    assert "planted-token" not in out + err
    assert f"ignoring {cache_dir / entry_name()}: it belongs to uid {OTHER_UID}" in err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_entry_others_can_read_or_write_is_ignored(cache_dir, mode, capsys):
    path = plant(cache_dir / entry_name(), fresh_entry("exposed"), mode=mode)
    assert cache.read_entry(str(path)) is None
    assert "others can read or write it" in capsys.readouterr().err
    assert cache.inspect_entry(str(path))[0] == cache.UNREADABLE


def test_entry_that_is_a_symlink_is_ignored_even_to_a_good_file_of_ours(cache_dir, tmp_path):
    elsewhere = make_dir(tmp_path / "elsewhere", 0o700)
    good = plant(elsewhere / "good.json", fresh_entry("linked"))
    (cache_dir / entry_name()).symlink_to(good)
    assert cache.read_entry(str(cache_dir / entry_name())) is None
    state, _entry, reason = cache.inspect_entry(str(cache_dir / entry_name()))
    assert state == cache.UNREADABLE and "symbolic link" in reason


def test_entry_that_is_a_fifo_is_ignored_without_hanging(cache_dir):
    path = str(cache_dir / entry_name())
    os.mkfifo(path, 0o600)
    # in a child with a deadline: a plain open() of a FIFO waits for a writer for ever
    child = subprocess.run([sys.executable, "-c", f"from kubectl_caas import cache; print(cache.inspect_entry({path!r}))"],
                           capture_output=True, text=True, timeout=30)
    assert child.stdout.strip() == repr((cache.UNREADABLE, None, "it is not a regular file")), child.stderr


def test_inspect_entry_tells_missing_ok_and_unreadable_apart(tmp_path, cache_dir):
    path = str(cache_dir / entry_name())
    assert cache.inspect_entry(str(tmp_path / "no-such-dir" / entry_name())) == (cache.MISSING, None, None)
    assert cache.inspect_entry(path) == (cache.MISSING, None, None)
    cache.write_entry(path, fresh_entry("mine"))
    state, entry, reason = cache.inspect_entry(path)
    assert (state, entry["tokens"]["keystone"]["value"], reason) == (cache.OK, "mine", None)
    plant(Path(path), b'{"tokens": ')
    assert cache.inspect_entry(path) == (cache.UNREADABLE, None, "it is not valid JSON")
    assert cache.read_entry(path) is None


def test_delete_entry_removes_an_unreadable_entry_and_says_whether_there_was_one(cache_dir):
    path = str(plant(cache_dir / entry_name(), b"\x00 not json"))
    assert cache.delete_entry(path) is True
    assert cache.inspect_entry(path)[0] == cache.MISSING
    assert cache.delete_entry(path) is False


def test_delete_entry_removes_a_planted_link_but_not_its_target(cache_dir, tmp_path):
    target = plant(tmp_path / "precious.json", fresh_entry("keep me"))
    (cache_dir / entry_name()).symlink_to(target)
    assert cache.delete_entry(str(cache_dir / entry_name())) is True
    assert target.exists() and not os.path.lexists(cache_dir / entry_name())


# ---------------------------------------------------------------------------------------------
# Size limit


def padded_entry(size: int) -> dict:
    """An entry whose serialised form (as write_entry makes it) is exactly `size` bytes."""
    overhead = len(json.dumps({"pad": ""}, indent=1, sort_keys=True).encode())
    return {"pad": "x" * (size - overhead)}


def test_entry_exactly_at_the_size_limit_round_trips(cache_dir):
    path = str(cache_dir / entry_name())
    cache.write_entry(path, padded_entry(cache.MAX_ENTRY_BYTES))
    assert os.path.getsize(path) == cache.MAX_ENTRY_BYTES
    assert cache.read_entry(path) == padded_entry(cache.MAX_ENTRY_BYTES)


def test_entry_over_the_size_limit_is_refused_at_write_and_the_old_one_kept(cache_dir):
    path = str(cache_dir / entry_name())
    cache.write_entry(path, fresh_entry("old"))
    with pytest.raises(CaasError, match=f"over the cache's limit of {cache.MAX_ENTRY_BYTES}"):
        cache.write_entry(path, padded_entry(cache.MAX_ENTRY_BYTES + 1))
    assert cache.read_entry(path)["tokens"]["keystone"]["value"] == "old"
    assert sorted(p.name for p in cache_dir.iterdir()) == [entry_name()]


def test_entry_over_the_size_limit_on_disk_is_unreadable_not_missing(cache_dir):
    path = plant(cache_dir / entry_name(), json.dumps(padded_entry(cache.MAX_ENTRY_BYTES + 1), indent=1).encode())
    assert cache.read_entry(str(path)) is None
    state, _entry, reason = cache.inspect_entry(str(path))
    assert state == cache.UNREADABLE and "larger than" in reason


# ---------------------------------------------------------------------------------------------
# Locks


@needs_root
def test_lock_file_of_another_user_is_refused_with_a_clear_line(cache_dir):
    path = str(cache_dir / entry_name())
    plant(Path(path + ".lock"), b"", uid=OTHER_UID)
    with pytest.raises(CaasError) as refused:
        with locks.EntryLock(path, timeout=1):
            pass
    message = str(refused.value)
    assert message == (f"the cache lock {path}.lock belongs to uid {OTHER_UID}, not to you (uid {os.getuid()}); "
                       "remove it (it holds no data), or set KUBECTL_CAAS_CACHE_DIR to a directory of your own")


def test_lock_file_that_is_a_symlink_is_refused(cache_dir, tmp_path):
    path = str(cache_dir / entry_name())
    target = plant(tmp_path / "elsewhere", b"")
    os.symlink(target, path + ".lock")
    with pytest.raises(CaasError, match="symbolic link"):
        with locks.EntryLock(path, timeout=1):
            pass


def test_lock_file_others_can_open_is_tightened(cache_dir):
    path = str(cache_dir / entry_name())
    plant(Path(path + ".lock"), b"", mode=0o644)
    with locks.EntryLock(path, timeout=1):
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600


def test_lock_held_past_the_timeout_ends_in_a_clear_line(cache_dir):
    path = str(cache_dir / entry_name())
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys\nfrom kubectl_caas.locks import EntryLock\n"
                               f"with EntryLock({path!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CaasError) as timed_out:
            with locks.EntryLock(path, timeout=0.3):
                pass
        assert str(timed_out.value) == (
            f"another process has held the cache lock {path}.lock for over 0.3 s (probably another kubectl-caas "
            "renewing the same entry); let it finish or end it, then retry")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with locks.EntryLock(path, timeout=5):  # free again once its holder let go
        pass

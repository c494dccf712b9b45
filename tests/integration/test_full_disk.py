"""A full disk during renewal: the renewal already happened at the provider (and rotated the
refresh token), so kubectl still gets the new credential, the user is warned in one line, and the
rotated refresh token is kept where any storage works. A real tmpfs filled to the last byte holds
the token cache; the OpenID provider is the real one, rotating refresh tokens."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import exec_credential, run_with_person


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs of our own (root only; CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write until the file system refuses one more byte (unbuffered: every write reaches it)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    probe = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):  # really full: even one more byte fails
            os.write(probe, b"x")
    finally:
        os.close(probe)
        os.unlink(directory / "probe")
    return filler


def age(entry_path: Path) -> None:
    entry = json.loads(entry_path.read_text())
    entry["tokens"]["id"]["expires_at"] = time.time() - 5
    entry_path.write_text(json.dumps(entry))


def test_renewal_on_a_full_disk_hands_kubectl_the_token_and_keeps_the_rotated_refresh_token(
        oidc_provider_factory, iam_site, workspace, tiny_disk):
    provider = oidc_provider_factory(device_interval=1)
    iam_site(provider)
    workspace.env["KUBECTL_CAAS_CACHE_DIR"] = str(tiny_disk)
    login, shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--no-browser"])
    assert shown and login.returncode == 0, login.stderr
    (entry_path,) = tiny_disk.glob("*.json")
    age(entry_path)
    old_refresh = json.loads(entry_path.read_text())["refresh_token"]
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    filler = fill(tiny_disk)

    renewed = workspace.run("kubectl-iam", *args)
    credential = exec_credential(renewed)
    assert credential["status"]["token"]
    (warning,) = renewed.stderr.splitlines()
    assert "warning" in warning and "free some space" in warning
    kept = json.loads(entry_path.read_bytes())  # written in place, padded with spaces: still JSON
    assert kept["refresh_token"] != old_refresh  # the provider rotated it, and the new one was kept
    assert kept["tokens"]["id"]["value"] == credential["status"]["token"]

    # The next renewal works with the kept refresh token (the old one is dead after rotation).
    filler.unlink()
    age(entry_path)
    refreshes = len(provider.token_requests("refresh_token"))
    again = workspace.run("kubectl-iam", *args)
    assert exec_credential(again)["status"]["token"] and again.stderr == ""
    assert len(provider.token_requests("refresh_token")) == refreshes + 1
    # (an ID token issued in the same second may be byte-identical; the refresh token rotates)
    assert json.loads(entry_path.read_bytes())["refresh_token"] not in (old_refresh, kept["refresh_token"])


def test_renewal_with_no_storage_left_still_answers_and_says_what_was_lost(
        oidc_provider_factory, iam_site, workspace, tiny_disk):
    provider = oidc_provider_factory(device_interval=1)
    iam_site(provider)
    workspace.env["KUBECTL_CAAS_CACHE_DIR"] = str(tiny_disk)
    login, _shown = run_with_person(workspace, provider, ["kubectl-iam", "login", "--no-browser"])
    assert login.returncode == 0, login.stderr
    (entry_path,) = tiny_disk.glob("*.json")
    age(entry_path)
    # An entry too small to be overwritten in place, then a full disk: nothing can hold the new one.
    small = json.loads(entry_path.read_text())
    small.pop("metadata", None), small.pop("jwks", None), small.pop("claims", None)
    entry_path.write_text(json.dumps(small, separators=(",", ":")))
    args = workspace.config()["users"][0]["user"]["exec"]["args"]
    for ready in tiny_disk.glob("*.ready"):  # the renewal removes it first: its block must not be free space
        ready.unlink()
    fill(tiny_disk)
    before = entry_path.read_bytes()

    renewed = workspace.run("kubectl-iam", *args)
    assert exec_credential(renewed)["status"]["token"]
    (warning,) = renewed.stderr.splitlines()
    assert "could not save the renewed token" in warning and "kubectl iam login" in warning
    assert entry_path.read_bytes() == before  # nothing half-written


def test_login_on_a_full_disk_fails_in_one_line_and_leaves_no_application_credential(
        keystone, site, workspace, alice, tiny_disk):
    from tests.integration.harness import PASSWORD

    workspace.env["KUBECTL_CAAS_CACHE_DIR"] = str(tiny_disk)
    fill(tiny_disk)
    result = workspace.run("kubectl-openstack", "login", "--user", alice["name"], "--project", "CMS",
                           "--password-stdin", input=PASSWORD + "\n")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "cannot write the token cache entry" in line and "free some space" in line
    assert keystone.list_application_credentials(alice["id"]) == []  # created, then deleted again
    assert not workspace.kubeconfig.exists()

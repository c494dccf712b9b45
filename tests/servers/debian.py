"""Debian packages the tests need (Chromium, oidc-agent), installed on first use.

    from tests.servers.debian import ensure_commands

    missing = ensure_commands({"chromium": "chromium"})   # {command: package}
    if missing:
        pytest.skip(missing)                               # why they could not be had

`make test` must install what it needs on a fresh machine, and CI runs as root with Debian's
package archive reachable: a command not on PATH is installed with apt-get (one process at a
time, under a lock in the temp directory, so pytest-xdist workers do not race for dpkg's lock;
`apt-get update` only when the first try cannot find the package). Where that is impossible (not
root, no apt-get, no archive), the answer says why, for a skip reason.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Optional

_APT_TIMEOUT = 900.0


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=_APT_TIMEOUT, env=env,
                          stdin=subprocess.DEVNULL)


def ensure_commands(wanted: Mapping[str, str]) -> Optional[str]:
    """Make each command in `wanted` ({command: Debian package}) available; None when all are,
    else one line saying which are missing and why they could not be installed."""
    missing = {cmd: pkg for cmd, pkg in wanted.items() if shutil.which(cmd) is None}
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed and no apt-get here"
    if os.geteuid() != 0:
        return f"{', '.join(missing)} not installed and not root (apt-get install {' '.join(set(missing.values()))})"
    lock_path = Path(tempfile.gettempdir()) / "kubectl-caas-apt.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = {cmd: pkg for cmd, pkg in missing.items() if shutil.which(cmd) is None}
        if not missing:
            return None
        packages = sorted(set(missing.values()))
        result = _apt("install", "-y", "--no-install-recommends", *packages)
        if result.returncode != 0:
            _apt("update")
            result = _apt("install", "-y", "--no-install-recommends", *packages)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"apt-get install {' '.join(packages)} failed: {tail[0]}"
    still = [cmd for cmd in missing if shutil.which(cmd) is None]
    return f"installed, but {', '.join(still)} still not on PATH" if still else None

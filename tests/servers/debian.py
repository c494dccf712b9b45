"""Debian packages the tests need (Chromium, oidc-agent, Apache), installed on first use.

    from tests.servers.debian import ensure_commands, ensure_packages

    missing = ensure_commands({"chromium": "chromium"})   # {command: package}
    if missing:
        pytest.skip(missing)                               # why they could not be had
    missing = ensure_packages(["libapache2-mod-oauth2"])   # packages that bring no command

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
from typing import Callable, Iterable, List, Mapping, Optional

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
    failure = _install_locked(lambda: sorted({pkg for cmd, pkg in missing.items() if shutil.which(cmd) is None}))
    if failure:
        return failure
    still = [cmd for cmd in missing if shutil.which(cmd) is None]
    return f"installed, but {', '.join(still)} still not on PATH" if still else None


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().endswith(" installed")


def _install_locked(still_missing: Callable[[], List[str]]) -> Optional[str]:
    # One apt-get at a time (a lock in the temp directory); `still_missing` is asked again under
    # the lock, since another process may have installed the packages meanwhile.
    lock_path = Path(tempfile.gettempdir()) / "kubectl-caas-apt.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        packages = still_missing()
        if not packages:
            return None
        result = _apt("install", "-y", "--no-install-recommends", *packages)
        if result.returncode != 0:
            _apt("update")
            result = _apt("install", "-y", "--no-install-recommends", *packages)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"apt-get install {' '.join(packages)} failed: {tail[0]}"
    return None


def ensure_packages(packages: Iterable[str]) -> Optional[str]:
    """Make each Debian package in `packages` installed (for packages that bring no command, such
    as an Apache module); None when all are, else one line saying why they could not be."""
    wanted = list(dict.fromkeys(packages))

    def still_missing() -> List[str]:
        return [pkg for pkg in wanted if not _installed(pkg)]

    missing = still_missing() if shutil.which("dpkg-query") else wanted
    if not missing:
        return None
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        return f"{', '.join(missing)} not installed and no apt-get here"
    if os.geteuid() != 0:
        return f"{', '.join(missing)} not installed and not root (apt-get install {' '.join(missing)})"
    failure = _install_locked(still_missing)
    if failure:
        return failure
    still = still_missing()
    return f"installed, but {', '.join(still)} still not installed" if still else None

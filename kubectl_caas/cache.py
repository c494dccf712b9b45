"""Token cache: one JSON file per identity, written atomically with mode 0600, and a lock per entry.

Standard library only: get-token reads the cache on every kubectl command.

Layout: ``<cache dir>/<plugin>-<readable part>-<hash>.json`` with a sibling ``.lock`` file. The
readable part helps a person find an entry; the hash of the full key keeps names unique. Neither
contains a secret.
"""
from __future__ import annotations

import errno
import json
import os
import re
import sys
import time

from kubectl_caas.errors import CaasError

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Optional

# How long a get-token waits for another process that is renewing the same entry. A device-code
# login by another process can legitimately take minutes; the lock is released by the kernel when
# its holder dies, so a crashed process never blocks us.
DEFAULT_LOCK_TIMEOUT = 900.0


def cache_dir() -> str:
    """$KUBECTL_CAAS_CACHE_DIR, else $KUBECACHEDIR/kubectl-caas, else ~/.kube/cache/kubectl-caas."""
    explicit = os.environ.get("KUBECTL_CAAS_CACHE_DIR")
    if explicit:
        return explicit
    kube_cache = os.environ.get("KUBECACHEDIR")
    if kube_cache:
        return os.path.join(kube_cache, "kubectl-caas")
    return os.path.join(os.path.expanduser("~"), ".kube", "cache", "kubectl-caas")


def ensure_private_dir(path: str) -> str:
    """Create the cache directory 0700, or tighten an existing one that others can read."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise CaasError(f"cannot create the token cache directory {path}: {exc.strerror}",
                        "set KUBECTL_CAAS_CACHE_DIR to a writable directory") from None
    if st.st_mode & 0o077:
        if st.st_uid != os.getuid():
            raise CaasError(f"the token cache directory {path} belongs to another user and others can "
                            "read it", "set KUBECTL_CAAS_CACHE_DIR to a directory of your own")
        os.chmod(path, 0o700)
        print(f"kubectl-caas: tightened permissions of {path} to 0700 (others could read it)",
              file=sys.stderr)
    return path


def entry_key(plugin: str, fields: Mapping[str, Optional[str]]) -> str:
    """A stable file name for one identity. `fields` must hold no secret."""
    canonical = json.dumps({"plugin": plugin, **{k: v for k, v in fields.items() if v}},
                           sort_keys=True, separators=(",", ":"))
    digest = _sha256(canonical.encode()).hexdigest()[:16]
    readable = "_".join(str(v) for k, v in fields.items() if v and k in _READABLE_FIELDS)
    readable = re.sub(r"[^A-Za-z0-9@.+=-]+", "_", readable)[:80].strip("_")
    return f"{plugin}-{readable}-{digest}" if readable else f"{plugin}-{digest}"


# Fields that make a cache file name readable; the rest only feed the hash.
_READABLE_FIELDS = ("user", "project", "application_credential_id", "client_id")


def _sha256(data: bytes):
    """hashlib.sha256 without loading OpenSSL's libcrypto (~3 ms): CPython's built-in implementation."""
    try:
        from _sha256 import sha256  # CPython 3.9-3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def entry_path(plugin: str, fields: Mapping[str, Optional[str]]) -> str:
    return os.path.join(cache_dir(), entry_key(plugin, fields) + ".json")


def read_entry(path: str) -> Optional[Dict[str, Any]]:
    """The entry at `path`, or None when missing, unreadable, corrupt or a symlink (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            print(f"kubectl-caas: ignoring {path}: it is a symbolic link, which the cache never follows",
                  file=sys.stderr)
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_entry(path: str, data: Mapping[str, Any]) -> None:
    """Replace the entry atomically: temp file 0600 in the same directory, fsync, rename."""
    directory = ensure_private_dir(os.path.dirname(path))
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    write_private_file_atomically(path, payload, directory)


def write_private_file_atomically(path: str, payload: bytes, directory: Optional[str] = None) -> None:
    directory = directory or os.path.dirname(path) or "."
    base = os.path.basename(path)
    _remove_orphaned_temp_files(directory, base)
    for attempt in range(100):
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.{attempt}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a hundred stale temp files of this very pid
        raise CaasError(f"cannot create a temporary file in {directory}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        # rename replaces a symlink at `path` itself instead of writing through it
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _remove_orphaned_temp_files(directory: str, base: str) -> None:
    """Temp files of writers that were killed before their rename (their pid is gone)."""
    prefix = f".{base}."
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def delete_entry(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock() on `fd`, waiting at most `timeout` seconds; False if it stayed taken.

    Every lock in kubectl-caas goes through here, so none can block for ever: a holder that is
    stuck (or another user's process holding a shared file) ends in a clear line instead.
    """
    import fcntl

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)  # waiting for another process, not for timing
            delay = min(delay * 2, 0.1)


class EntryLock:
    """An exclusive lock on one cache entry, held while it is renewed.

    flock() on a sibling ``.lock`` file: the kernel drops it when the holder exits or is killed,
    so a stale lock never blocks. Different entries have different lock files and never wait for
    each other.
    """

    def __init__(self, entry: str, timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.path = entry + ".lock"
        self.timeout = timeout
        self._fd: Optional[int] = None

    def __enter__(self) -> "EntryLock":
        ensure_private_dir(os.path.dirname(self.path))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         0o600)
        except OSError as exc:
            raise CaasError(f"cannot open the cache lock {self.path}: {exc.strerror}",
                            "remove it, or set KUBECTL_CAAS_CACHE_DIR") from None
        if not flock_within(fd, self.timeout):
            os.close(fd)
            raise CaasError(f"another kubectl-caas process has held {self.path} for over "
                            f"{int(self.timeout)} s", "let it finish or end it, then retry")
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

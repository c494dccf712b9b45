"""Locks that never block for ever: flock() with a time limit, and the lock of one cache entry.

Kept apart from cache.py so that a cache hit, which only reads, loads none of this: get-token
takes an entry's lock only when it has to renew the token, and kubeconfig writes lock their
directories with the same `flock_within`. Standard library only, like the cache.

The lock files live in the token cache directory and are opened through cache.py's checked
directory descriptor, so they get the same trust rules as the entries beside them.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from kubectl_caas import cache
from kubectl_caas.errors import CaasError

TYPE_CHECKING = False  # as in cache.py: no typing import at run time
if TYPE_CHECKING:
    from typing import Optional

# How long a get-token waits for another process that is renewing the same entry. A device-code
# login by another process can legitimately take minutes; the kernel releases a lock when its
# holder dies, so a crashed process never blocks us.
DEFAULT_LOCK_TIMEOUT = 900.0

_REMOVE_HINT = "remove it (it holds no data), or " + cache.OWN_DIRECTORY_HINT


def flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock() on `fd`, waiting at most `timeout` seconds; False if it stayed taken.

    Every lock in kubectl-caas goes through here, so none can block for ever: a holder that is
    stuck (or another user's process holding a shared file) ends in a clear line instead.
    """
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
    each other. The lock file must be ours: another user able to open it could hold it for ever.
    """

    def __init__(self, entry: str, timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.path = entry + ".lock"
        self.timeout = timeout
        self._fd: Optional[int] = None

    def __enter__(self) -> "EntryLock":
        directory, name = cache.split_path(self.path)
        dfd = cache.open_dir_for_writing(directory)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise CaasError(f"cannot open the cache lock {self.path}: {reason}", _REMOVE_HINT) from None
        finally:
            os.close(dfd)
        st, uid = os.fstat(fd), os.getuid()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            os.close(fd)
            what = "is not a regular file" if not stat.S_ISREG(st.st_mode) else \
                f"belongs to uid {st.st_uid}, not to you (uid {uid})"
            raise CaasError(f"the cache lock {self.path} {what}", _REMOVE_HINT)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # so that no one else can open it and sit on our lock
        if not flock_within(fd, self.timeout):
            os.close(fd)
            raise CaasError(f"another process has held the cache lock {self.path} for over {self.timeout:g} s "
                            "(probably another kubectl-caas renewing the same entry)",
                            "let it finish or end it, then retry")
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

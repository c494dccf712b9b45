"""Token cache: one JSON file per identity, written atomically with mode 0600.

Standard library only: get-token reads the cache on every kubectl command. The lock each entry
has (locks.py) opens its file through this module's checked directory, but lives apart: a cache
hit reads without locking, so it never loads that module.

Layout: ``<cache dir>/<plugin>-<readable part>-<hash>.json`` with a sibling ``.lock`` file. The
readable part helps a person find an entry; the hash of the full key keeps names unique. Neither
contains a secret.

Trust: the cache may live in a shared place (``KUBECTL_CAAS_CACHE_DIR=/tmp/...``), so it believes
only what the user running the plugin controls. The cache directory must be a real directory (not
a symbolic link) owned by that user; entries must be regular files of that user that no one else
can read or write. Entries, locks and temporary files are opened relative to the directory's
descriptor, so a directory renamed or swapped half-way cannot redirect a read, a write or a
deletion. What fails these checks is a miss when reading and a one-line error when writing.
"""
from __future__ import annotations

import errno
import os
import sys

from kubectl_caas import hotpath
from kubectl_caas.errors import CaasError

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Optional, Tuple

# One size limit for writing and reading, so whatever is written can be read back (an entry that
# could not be read would look logged out while its refresh token stayed on disk).
MAX_ENTRY_BYTES = 1 << 20

# What inspect_entry finds.
MISSING = "missing"  # no entry (or no cache directory yet)
OK = "ok"
UNREADABLE = "unreadable"  # something is there but cannot be used: corrupt, too large, not ours, a link...
UNTRUSTED = "untrusted"  # the cache directory itself is refused: a link, another user's, writable by others

OWN_DIRECTORY_HINT = "set KUBECTL_CAAS_CACHE_DIR to a directory of your own"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# O_NONBLOCK: a FIFO planted as an entry must not hang kubectl in open()
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
_S_IFMT, _S_IFREG = 0o170000, 0o100000  # stat.S_ISREG's masks, spelled out to keep the imports as they are


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
    """Create the cache directory 0700, or tighten one of ours that others can use; refuse any other."""
    os.close(open_dir_for_writing(path))
    return path


def entry_key(plugin: str, fields: Mapping[str, Optional[str]]) -> str:
    """A stable file name for one identity. `fields` must hold no secret."""
    # json.dumps(..., sort_keys=True, separators=(",", ":")) as earlier releases computed it, without
    # importing json (see hotpath.py): the same text, so the same file names.
    canonical = hotpath.dumps_flat({"plugin": plugin, **{k: v for k, v in fields.items() if v}},
                                   sort_keys=True, compact=True)
    digest = hotpath.sha256(canonical.encode()).hexdigest()[:16]
    readable = "_".join(str(v) for k, v in fields.items() if v and k in _READABLE_FIELDS)
    readable = hotpath.only_safe(readable)[:80].strip("_")
    return f"{plugin}-{readable}-{digest}" if readable else f"{plugin}-{digest}"


# Fields that make a cache file name readable; the rest only feed the hash.
_READABLE_FIELDS = ("user", "project", "application_credential_id", "client_id")


def entry_path(plugin: str, fields: Mapping[str, Optional[str]]) -> str:
    return os.path.join(cache_dir(), entry_key(plugin, fields) + ".json")


# ---------------------------------------------------------------------------------------------
# The cache directory


class _Untrusted(Exception):
    """The cache directory cannot be trusted; the message says why."""


def _open_dir(path: str, uid: int) -> Tuple[int, int]:
    """(descriptor, mode) of the cache directory when it is a real directory owned by `uid`.

    FileNotFoundError when it does not exist, _Untrusted otherwise. O_NOFOLLOW refuses a symbolic
    link in the last component; fstat on the descriptor checks the directory actually opened.
    """
    try:
        fd = os.open(path or ".", _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(exc.errno, exc.strerror, path) from None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # Linux says ENOTDIR for a link with O_DIRECTORY
            if os.path.islink(path):
                raise _Untrusted(f"the token cache directory {path} is a symbolic link, which the cache does not "
                                 "follow") from None
            raise _Untrusted(f"the token cache directory {path} is not a directory") from None
        raise _Untrusted(f"cannot open the token cache directory {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid != uid:
        os.close(fd)
        raise _Untrusted(f"the token cache directory {path} belongs to uid {st.st_uid}, not to you (uid {uid})")
    return fd, st.st_mode


def open_dir_for_writing(path: str) -> int:
    """The cache directory's descriptor for a write or a lock (locks.py): created 0700 if missing,
    tightened to 0700 if it is ours and others can use it, and refused with one line otherwise."""
    uid = os.getuid()
    failure: Optional[OSError] = None
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        failure = exc  # opening it below may say more precisely what is wrong (a dangling link, say)
    try:
        fd, mode = _open_dir(path, uid)
    except FileNotFoundError:
        reason = failure.strerror if failure is not None else "it vanished while being created"
        raise CaasError(f"cannot create the token cache directory {path}: {reason}",
                        "set KUBECTL_CAAS_CACHE_DIR to a writable directory") from None
    except _Untrusted as exc:
        raise CaasError(str(exc), OWN_DIRECTORY_HINT) from None
    if mode & 0o077:
        # fchmod on the descriptor: the directory we checked, never whatever the path names by now
        os.fchmod(fd, 0o700)
        print(f"kubectl-caas: tightened permissions of {path} to 0700 (others could read it)", file=sys.stderr)
    return fd


def split_path(path: str) -> Tuple[str, str]:
    """(directory, name) of a file of the cache; a bare name is in the working directory."""
    directory, name = os.path.split(path)
    return directory or ".", name


# ---------------------------------------------------------------------------------------------
# Reading


def read_bytes(path: str) -> Optional[bytes]:
    """A file of the cache (a ready credential), with read_entry's checks; None when missing or refused."""
    state, data, _reason = _read(path, False)
    return data if state == OK else None


def read_entry(path: str) -> Optional[Dict[str, Any]]:
    """The entry at `path`, or None when it is missing or cannot be trusted or parsed.

    An entry refused for safety (a symbolic link, another user's file, one others can read) is
    reported on stderr; a missing or corrupt one is an ordinary miss.
    """
    return _load(path, True)[1]


def inspect_entry(path: str) -> Tuple[str, Optional[Dict[str, Any]], Optional[str]]:
    """(state, entry, reason): state is MISSING, OK (entry set), UNREADABLE or UNTRUSTED (reason set).

    For logout and status, which must tell "nothing there" from "something there we cannot use";
    read_entry is the same check without the distinction.
    """
    return _load(path, False)


def _load(path: str, report: bool) -> Tuple[str, Optional[Dict[str, Any]], Optional[str]]:
    state, data, reason = _read(path, report)
    if state != OK:
        return state, None, reason
    try:
        entry = hotpath.loads(data)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deeper than the parser goes
        return UNREADABLE, None, "it is not valid JSON"
    if not isinstance(entry, dict):
        return UNREADABLE, None, "it does not hold a JSON object"
    return OK, entry, None


def _read(path: str, report: bool) -> Tuple[str, Optional[bytes], Optional[str]]:
    directory, name = split_path(path)
    uid = os.getuid()
    try:
        dfd, dir_mode = _open_dir(directory, uid)
    except FileNotFoundError:
        return MISSING, None, None
    except _Untrusted as exc:
        return UNTRUSTED, None, f"{exc}; {OWN_DIRECTORY_HINT}"
    try:
        if dir_mode & 0o022:
            # others could swap our entries for each other; the next write tightens the directory
            return UNTRUSTED, None, f"others can write to the token cache directory {directory}"
        fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        return MISSING, None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _refused(path, "it is a symbolic link, which the cache never follows", report)
        return UNREADABLE, None, exc.strerror
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if st.st_mode & _S_IFMT != _S_IFREG:
            return _refused(path, "it is not a regular file", report)
        if st.st_uid != uid:
            return _refused(path, f"it belongs to uid {st.st_uid}, not to you", report)
        if st.st_mode & 0o066:
            return _refused(path, f"others can read or write it (mode {st.st_mode & 0o777:o})", report)
        if st.st_size > MAX_ENTRY_BYTES:
            return UNREADABLE, None, f"it is larger than the cache's limit of {MAX_ENTRY_BYTES} bytes"
        # Writers replace entries by rename and never change one in place, so fstat's size is the
        # whole file: one read, asking one byte more to notice if that ever stops being true.
        data = os.read(fd, st.st_size + 1)
        while len(data) != st.st_size and len(data) <= MAX_ENTRY_BYTES:
            more = os.read(fd, MAX_ENTRY_BYTES + 1 - len(data))
            if not more:
                break
            data += more
    except OSError as exc:
        return UNREADABLE, None, exc.strerror
    finally:
        os.close(fd)
    if len(data) > MAX_ENTRY_BYTES:
        return UNREADABLE, None, f"it is larger than the cache's limit of {MAX_ENTRY_BYTES} bytes"
    return OK, data, None


def _refused(path: str, reason: str, report: bool) -> Tuple[str, None, str]:
    """An entry we will not use because someone may have planted it; the next write replaces it."""
    if report:
        print(f"kubectl-caas: ignoring {path}: {reason}", file=sys.stderr)
    return UNREADABLE, None, reason


# ---------------------------------------------------------------------------------------------
# Writing and deleting


def write_entry(path: str, data: Mapping[str, Any]) -> None:
    """Replace the entry atomically: temp file 0600 in the cache directory, fsync, rename.

    Refuses an entry over MAX_ENTRY_BYTES, which could not be read back.
    """
    import json

    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    if len(payload) > MAX_ENTRY_BYTES:
        raise CaasError(f"the cache entry {path} would be {len(payload)} bytes, over the cache's limit of "
                        f"{MAX_ENTRY_BYTES}; nothing was written", "report this: it is a bug in kubectl-caas")
    write_cache_file(path, payload)


def overwrite_entry_in_place(path: str, data: Mapping[str, Any]) -> bool:
    """Last resort when the disk is full: write `data` over the existing entry's own bytes, padded
    with spaces (which JSON ignores) to its size, so that no new block is needed. Not atomic, so
    only for keeping what would otherwise be lost (a refresh token the provider just rotated); a
    crash mid-write leaves an unreadable entry, which is a miss. False when it cannot be done."""
    import json

    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    directory, name = split_path(path)
    try:
        dfd, _mode = _open_dir(directory, os.getuid())
    except (FileNotFoundError, _Untrusted):
        return False
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if st.st_mode & _S_IFMT != _S_IFREG or st.st_uid != os.getuid() or st.st_mode & 0o066 \
                or not len(payload) <= st.st_size <= MAX_ENTRY_BYTES:
            return False
        padded = payload + b" " * (st.st_size - len(payload))
        written = 0
        while written < len(padded):
            written += os.pwrite(fd, padded[written:], written)
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def write_cache_file(path: str, payload: bytes) -> None:
    """Write any file of the cache atomically, through the trusted cache directory."""
    directory, name = split_path(path)
    dfd = open_dir_for_writing(directory)
    try:
        _replace_atomically(dfd, name, payload, directory)
    except OSError as exc:  # a full disk or quota, say: the old entry is still there, unchanged
        raise CaasError(f"cannot write the token cache entry {path}: {exc.strerror}",
                        "free some space, or set KUBECTL_CAAS_CACHE_DIR to another directory") from None
    finally:
        os.close(dfd)


def write_private_file_atomically(path: str, payload: bytes, directory: Optional[str] = None) -> None:
    """Replace `path` with a 0600 file holding `payload`, atomically, in a directory of the user's choosing.

    For files outside the cache (kubeconfig files): the directory may be a symbolic link and is not
    checked for ownership. `directory` is the one holding `path` (its dirname by default).
    """
    directory = directory or os.path.dirname(path) or "."
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _replace_atomically(dfd, os.path.basename(path), payload, directory)
    finally:
        os.close(dfd)


def _replace_atomically(dfd: int, name: str, payload: bytes, directory: str) -> None:
    """Temporary file beside `name`, synced, then renamed over it: a crash leaves the old file or the new."""
    _remove_orphaned_temp_files(dfd, name)
    for attempt in range(100):
        tmp = f".{name}.{os.getpid()}.{attempt}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
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
        # rename replaces a symlink at `name` itself instead of writing through it
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    try:
        os.fsync(dfd)  # makes the rename itself durable
    except OSError:
        pass


def _remove_orphaned_temp_files(dfd: int, name: str) -> None:
    """Temp files of writers that were killed before their rename (their pid is gone)."""
    prefix = f".{name}."
    try:
        names = [n for n in os.listdir(dfd) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for orphan in names:
        pid = orphan[len(prefix):].split(".", 1)[0]
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
            os.unlink(orphan, dir_fd=dfd)
        except OSError:
            pass


def delete_entry(path: str) -> bool:
    """Remove the entry, whatever it holds; True if there was one. Never works through a refused directory."""
    directory, name = split_path(path)
    try:
        dfd, _mode = _open_dir(directory, os.getuid())
    except FileNotFoundError:
        return False
    except _Untrusted as exc:
        raise CaasError(str(exc), OWN_DIRECTORY_HINT) from None
    try:
        os.unlink(name, dir_fd=dfd)  # removes a planted link itself, never its target
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CaasError(f"cannot remove the cache entry {path}: {exc.strerror}") from None
    finally:
        os.close(dfd)

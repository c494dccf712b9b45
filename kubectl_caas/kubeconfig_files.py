"""Kubeconfig files as kubectl reads and writes them: which files, loading and merging, locking,
and atomic writes.

Which file gets what (client-go tools/clientcmd loader.go and config.go, checked against kubectl):

- `--kubeconfig FILE` is the only file. Otherwise KUBECONFIG split on os.pathsep with exact
  duplicates dropped, taken literally (no `~` expansion; relative to the working directory); an
  empty item is never read. Without KUBECONFIG, ~/.kube/config.
- The merged view: for each cluster, user and context name the first file defining it wins; the
  current context is the first non-empty one.
- The default file, which gets new stanzas and a new current-context: the explicit file; the
  only KUBECONFIG item; else the first item that exists, else the last item.

YAML is read and written as kubectl does (goyaml.py): plain scalars typed by go-yaml v2's rules,
every string we write quoted when it could be read as anything else. A file kubectl refuses to
load (kubeconfig_schema.py) is refused with its path and the reason, before anything is written.

Writing goes through symbolic links to the final file, atomically (temporary file beside it,
fsync, rename), mode 0600, while a flock is held on each directory involved, waiting at most
LOCK_TIMEOUT.

What goes into the files (a login's cluster, user and context) is kubeconfig.py's business; this
module neither knows nor cares which stanza changed.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from kubectl_caas import cache, locks
from kubectl_caas.errors import UsageError
from kubectl_caas.goyaml import dump, parse
from kubectl_caas.kubeconfig_schema import refusal

SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}

# Long enough for a slow disk or a busy machine, short enough that a lock held by a stuck process
# (or by another user's process on a shared directory) ends in a clear line instead of a hang.
LOCK_TIMEOUT = 30.0

LEFT_UNTOUCHED = "kubectl cannot load it either; fix or move the file (it was left untouched)"


class KubeconfigError(UsageError):
    pass


def validate(path: str, data: Any) -> None:
    """Refuse, naming the file, what kubectl's loader refuses; accept everything it accepts."""
    reason = refusal(data)
    if reason is not None:
        raise KubeconfigError(f"kubeconfig {path}: {reason}", LEFT_UNTOUCHED)


# ---------------------------------------------------------------------------------------------
# Which files


def default_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".kube", "config")


def _absolute(path: str) -> str:
    # joined, not normalised: "link/.." must mean what the kernel (and kubectl) make of it
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _listed(explicit: Optional[str]) -> Tuple[List[str], bool]:
    """kubectl's list as written: (items, whether it is an explicit file). Empty items are kept:
    they take part in choosing the default file, though nothing is read from them."""
    if explicit:
        return [explicit], True
    env = os.environ.get("KUBECONFIG")
    if env:
        items: List[str] = []
        for item in env.split(os.pathsep):
            if item not in items:
                items.append(item)
        return items, False
    return [default_path()], False


def resolve_paths(explicit: Optional[str] = None) -> List[str]:
    """The files kubectl would read, in precedence order (absolute)."""
    return [_absolute(p) for p in _listed(explicit)[0] if p]


def default_file(explicit: Optional[str] = None) -> str:
    """Where kubectl puts a new stanza or a new current-context (PathOptions.GetDefaultFilename);
    "" when KUBECONFIG leaves it none (then kubectl fails too)."""
    items, is_explicit = _listed(explicit)
    if is_explicit or len(items) == 1:
        return _absolute(items[0]) if items[0] else ""
    for item in items:
        if item and os.path.exists(item):
            return _absolute(item)
    return _absolute(items[-1]) if items[-1] else ""


def no_default_file() -> KubeconfigError:
    """The error when KUBECONFIG leaves no file to write to (kubectl fails there too)."""
    return KubeconfigError("KUBECONFIG gives no file to write to: none of its files exists and its last item is empty",
                           "remove the empty item from KUBECONFIG (kubectl fails here too) or create one of the files")


def _target(path: str) -> str:
    """The file actually read and written: a symlinked kubeconfig is updated through the link."""
    return os.path.realpath(path)


# ---------------------------------------------------------------------------------------------
# Loading and merging


@dataclass
class KubeconfigFile:
    path: str  # as the list names it
    data: Dict[str, Any]
    exists: bool
    changed: bool = False
    target: str = ""  # after symlinks

    def find(self, section: str, name: str) -> Optional[int]:
        """Index of the stanza with this name (kubectl refuses duplicates, so there is one at most)."""
        for index, item in enumerate(self.data.get(section) or []):
            if ((item if isinstance(item, dict) else {}).get("name") or "") == name:
                return index
        return None


def _empty_config() -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [],
            "current-context": "", "preferences": {}, "users": []}


def load_file(path: str) -> KubeconfigFile:
    """Load and check one file; a missing file is an empty config that does not exist yet."""
    target = _target(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return KubeconfigFile(path, _empty_config(), exists=False, target=target)
    except IsADirectoryError:
        raise KubeconfigError(f"kubeconfig {path} is a directory", "point KUBECONFIG or --kubeconfig at a file") from None
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}",
                              "fix its permissions or remove it from KUBECONFIG") from None
    try:
        data = parse(raw)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        elif isinstance(exc, yaml.reader.ReaderError):
            where = f" at byte {exc.position}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML{where}" + (f": {problem}" if problem else ""),
                              LEFT_UNTOUCHED) from None
    except RecursionError:
        raise KubeconfigError(f"kubeconfig {path} nests too deep to read", LEFT_UNTOUCHED) from None
    if data is None:
        data = _empty_config()
    validate(path, data)
    return KubeconfigFile(path, data, exists=True, target=target)


@dataclass
class Merged:
    """What kubectl sees: for each name the first definition wins."""

    files: List[KubeconfigFile]
    current_context: str = ""
    stanzas: Dict[str, Dict[str, Tuple[KubeconfigFile, Dict[str, Any]]]] = field(default_factory=dict)

    def get(self, section: str, name: str) -> Optional[Dict[str, Any]]:
        found = self.stanzas.get(section, {}).get(name)
        return found[1] if found else None

    def owner(self, section: str, name: str) -> Optional[KubeconfigFile]:
        found = self.stanzas.get(section, {}).get(name)
        return found[0] if found else None

    def names(self, section: str) -> List[str]:
        return list(self.stanzas.get(section, {}))

    def file(self, path: str) -> KubeconfigFile:
        """The loaded file behind a path of the list (two paths may lead to one file)."""
        target = _target(path)
        return next(f for f in self.files if f.target == target)


def load(paths: Sequence[str]) -> Merged:
    files: List[KubeconfigFile] = []
    for path in paths:
        if path and not any(f.target == _target(path) for f in files):  # a file listed twice merges as once
            files.append(load_file(path))
    merged = Merged(files)
    for section in SECTIONS:
        seen: Dict[str, Tuple[KubeconfigFile, Dict[str, Any]]] = {}
        for kfile in files:
            for item in kfile.data.get(section) or []:
                item = item if isinstance(item, dict) else {}
                seen.setdefault(item.get("name") or "", (kfile, item))
        merged.stanzas[section] = seen
    for kfile in files:
        if kfile.data.get("current-context"):
            merged.current_context = kfile.data["current-context"]
            break
    return merged


# ---------------------------------------------------------------------------------------------
# Locking


@contextlib.contextmanager
def locked(paths: Sequence[str], timeout: Optional[float] = None) -> Iterator[None]:
    """Hold an exclusive lock on each directory that holds one of the files (after symlinks).

    flock() on the directory itself: no lock file is left beside the kubeconfig, kubectl's own
    `<file>.lock` convention is untouched, and the kernel releases it if we are killed.
    Directories are locked in sorted order so that two writers never deadlock.
    """
    wait = LOCK_TIMEOUT if timeout is None else timeout
    directories = sorted({os.path.dirname(_target(p)) for p in paths if p})
    fds: List[int] = []
    try:
        for directory in directories:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(directory, os.O_RDONLY)
            except OSError as exc:
                raise KubeconfigError(f"cannot use the kubeconfig directory {directory}: {exc.strerror}",
                                      "check that it exists and is writable") from None
            fds.append(fd)
            if not locks.flock_within(fd, wait):
                raise KubeconfigError(f"the kubeconfig directory {directory} stayed locked by another process for "
                                      f"{wait:g} s", "wait for the other kubectl-caas command to finish, then retry")
        yield
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Writing


def write_changed(merged: Merged) -> List[str]:
    """Write every loaded file marked changed; returns their paths as the list names them.

    All of them are checked first (kubectl must be able to load each, and each must read back as
    meant), so a refusal leaves every file as it was. Call it while holding `locked`.
    """
    payloads = []
    for kfile in merged.files:
        if kfile.changed:
            validate(kfile.path, kfile.data)
            payload = dump(kfile.data)
            _check_round_trip(kfile, payload)
            payloads.append((kfile, payload))
    written = []
    for kfile, payload in payloads:
        try:
            cache.write_private_file_atomically(kfile.target, payload)
        except OSError as exc:
            raise KubeconfigError(f"cannot write kubeconfig {kfile.path}: {exc.strerror}",
                                  "check that its directory is writable") from None
        written.append(kfile.path)
    return written


def _check_round_trip(kfile: KubeconfigFile, payload: bytes) -> None:
    """What we are about to write must read back as what we meant; a bug here must not cost a file."""
    try:
        back = parse(payload)
    except yaml.YAMLError:
        back = None
    if back != kfile.data:
        raise KubeconfigError(f"kubectl-caas would have written {kfile.path} wrongly, so it was left untouched",
                              "report this: it is a bug in kubectl-caas")


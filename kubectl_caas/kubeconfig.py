"""Read, merge and write kubeconfig files the way kubectl does.

- `--kubeconfig` names one file; otherwise the KUBECONFIG list (os.pathsep separated); otherwise
  ~/.kube/config.
- A stanza (cluster, user, context) is changed in the file of the list that defines it first;
  a new stanza goes to the first file of the list that exists, or to the last one when none does.
- current-context goes to the first file that sets one, else to that same default file.
- Every other entry, unknown field and key order is kept. Files are written atomically (temporary
  file in the same directory, fsync, rename) with mode 0600, under a lock, so concurrent writers
  (several logins, or our login beside another of ours) lose nothing.
- A file that does not parse, or whose lists have the wrong type, is refused with its path, and
  left as it was.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from kubectl_caas.cache import write_private_file_atomically
from kubectl_caas.errors import UsageError

SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


class KubeconfigError(UsageError):
    pass


def default_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".kube", "config")


def resolve_paths(explicit: Optional[str] = None) -> List[str]:
    """The files kubectl would read, in precedence order."""
    if explicit:
        return [os.path.abspath(os.path.expanduser(explicit))]
    env = os.environ.get("KUBECONFIG")
    if env:
        paths: List[str] = []
        for item in env.split(os.pathsep):
            if item:
                path = os.path.abspath(os.path.expanduser(item))
                if path not in paths:
                    paths.append(path)
        if paths:
            return paths
    return [default_path()]


def default_write_path(paths: Sequence[str]) -> str:
    """kubectl's rule for where new things go: the first file that exists, else the last one."""
    if len(paths) == 1:
        return paths[0]
    for path in paths:
        if os.path.exists(path):
            return path
    return paths[-1]


@dataclass
class KubeconfigFile:
    path: str
    data: Dict[str, Any]
    exists: bool
    changed: bool = False

    def section(self, name: str) -> List[Dict[str, Any]]:
        items = self.data.get(name)
        if items is None:
            items = self.data[name] = []
        return items

    def find(self, section: str, name: str) -> Optional[Dict[str, Any]]:
        matches = [item for item in self.data.get(section) or [] if item.get("name") == name]
        if len(matches) > 1:
            raise KubeconfigError(f"{self.path} has {len(matches)} {section} named {name!r}",
                                  "remove the duplicates (kubectl would use only one of them)")
        return matches[0] if matches else None


def _empty_config() -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [],
            "current-context": "", "preferences": {}, "users": []}


def load_file(path: str) -> KubeconfigFile:
    """Load and validate one file; a missing file is an empty config that does not exist yet."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return KubeconfigFile(path, _empty_config(), exists=False)
    except IsADirectoryError:
        raise KubeconfigError(f"kubeconfig {path} is a directory", "point KUBECONFIG or --kubeconfig at a file")
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}",
                              "fix its permissions or remove it from KUBECONFIG") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML{where}",
                              "fix or move the file; it was left untouched") from None
    if data is None:
        data = _empty_config()
    if not isinstance(data, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping of settings",
                              "fix or move the file; it was left untouched")
    _validate(path, data)
    return KubeconfigFile(path, data, exists=True)


def _validate(path: str, data: Dict[str, Any]) -> None:
    for section, inner in SECTIONS.items():
        items = data.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            raise KubeconfigError(f"kubeconfig {path}: {section} must be a list, not {type(items).__name__}",
                                  "fix or move the file; it was left untouched")
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KubeconfigError(f"kubeconfig {path}: {section}[{index}] needs a string `name`",
                                      "fix or move the file; it was left untouched")
            body = item.get(inner)
            if body is not None and not isinstance(body, dict):
                raise KubeconfigError(f"kubeconfig {path}: {section}[name={item['name']}]/{inner} must be "
                                      "a mapping", "fix or move the file; it was left untouched")
    current = data.get("current-context")
    if current is not None and not isinstance(current, str):
        raise KubeconfigError(f"kubeconfig {path}: current-context must be a string",
                              "fix or move the file; it was left untouched")


def dump(data: Dict[str, Any]) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).encode()


@contextlib.contextmanager
def locked(paths: Sequence[str]) -> Iterator[None]:
    """Hold an exclusive lock on each directory that holds one of the files.

    flock() on the directory itself: no lock file is left beside the kubeconfig, kubectl's own
    `<file>.lock` convention is untouched, and the kernel releases it if we are killed.
    Directories are locked in sorted order so that two writers never deadlock.
    """
    import fcntl

    directories = sorted({os.path.dirname(p) or "." for p in paths})
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
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)


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


def load(paths: Sequence[str]) -> Merged:
    files = [load_file(p) for p in paths]
    merged = Merged(files)
    for section in SECTIONS:
        seen: Dict[str, Tuple[KubeconfigFile, Dict[str, Any]]] = {}
        for kfile in files:
            for item in kfile.data.get(section) or []:
                seen.setdefault(item["name"], (kfile, item))
        merged.stanzas[section] = seen
    for kfile in files:
        if kfile.data.get("current-context"):
            merged.current_context = kfile.data["current-context"]
            break
    return merged


@dataclass
class Entry:
    """One login's worth of kubeconfig: a cluster, a user and a context tying them together."""

    context: str
    cluster: str
    server: str
    user: str
    user_body: Dict[str, Any]
    namespace: Optional[str] = None
    certificate_authority_data: Optional[str] = None


class ContextConflict(UsageError):
    pass


def context_points_elsewhere(merged: Merged, entry: Entry,
                             same_user: Callable[[Dict[str, Any]], bool]) -> Optional[str]:
    """Why the existing context of this name is not ours to overwrite, or None."""
    existing = merged.get("contexts", entry.context)
    if existing is None:
        return None
    body = existing.get("context") or {}
    cluster = merged.get("clusters", body.get("cluster", "")) or {}
    server = (cluster.get("cluster") or {}).get("server")
    if server and server.rstrip("/") != entry.server.rstrip("/"):
        return f"it points at server {server}"
    user = merged.get("users", body.get("user", ""))
    if user is not None and not same_user(user.get("user") or {}):
        return f"it uses another user ({body.get('user')})"
    return None


def refuse_conflict(merged: Merged, entry: Entry, same_user: Callable[[Dict[str, Any]], bool]) -> None:
    reason = context_points_elsewhere(merged, entry, same_user)
    if reason:
        raise ContextConflict(f"context {entry.context!r} already exists and {reason}",
                              "pass --force to overwrite it, or --context NAME to use another name")


def check_before_login(context: Optional[str], server: str, same_user: Callable[[Dict[str, Any]], bool],
                       explicit_path: Optional[str] = None, force: bool = False) -> None:
    """Before a login talks to anyone, refuse now what `upsert` would refuse later: a kubeconfig
    that does not load, or (without force) a context of this name that points elsewhere."""
    merged = load(resolve_paths(explicit_path))
    if context and not force:
        refuse_conflict(merged, Entry(context=context, cluster="", server=server, user="", user_body={}), same_user)


def upsert(entry: Entry, *, explicit_path: Optional[str] = None, make_current: bool = True,
           force: bool = False, same_user: Optional[Callable[[Dict[str, Any]], bool]] = None) -> List[str]:
    """Add or update the entry's cluster, user and context; returns the files written."""
    paths = resolve_paths(explicit_path)
    same_user = same_user or (lambda body: body == entry.user_body)
    with locked(paths):
        merged = load(paths)
        if not force:
            refuse_conflict(merged, entry, same_user)
        default = next(f for f in merged.files if f.path == default_write_path(paths))

        def stanza(section: str, name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
            """(stanza, its body) to change: where kubectl's rules put it, created if missing."""
            kfile = merged.owner(section, name) or default
            item = kfile.find(section, name)
            if item is None:
                item = {"name": name}
                kfile.section(section).append(item)
            kfile.changed = True
            inner = SECTIONS[section]
            if item.get(inner) is None:
                item[inner] = {}
            return item, item[inner]

        _, cluster = stanza("clusters", entry.cluster)
        cluster["server"] = entry.server
        if entry.certificate_authority_data:
            cluster.pop("certificate-authority", None)
            cluster.pop("insecure-skip-tls-verify", None)
            cluster["certificate-authority-data"] = entry.certificate_authority_data

        user, _ = stanza("users", entry.user)
        # The user stanza is ours: replace it whole, so no stale static token is left behind.
        user["user"] = copy.deepcopy(entry.user_body)

        _, context = stanza("contexts", entry.context)
        context["cluster"] = entry.cluster
        context["user"] = entry.user
        if entry.namespace:
            context["namespace"] = entry.namespace

        if make_current:
            holder = next((f for f in merged.files if f.data.get("current-context")), default)
            if holder.data.get("current-context") != entry.context:
                holder.data["current-context"] = entry.context
                holder.changed = True

        written = []
        for kfile in merged.files:
            if kfile.changed:
                write_private_file_atomically(kfile.path, dump(kfile.data))
                written.append(kfile.path)
        return written


def exec_user_body(command: str, args: Sequence[str], install_hint: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": command,
        "args": list(args),
        "env": None,
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
    }
    if install_hint:
        body["installHint"] = install_hint
    return {"exec": body}


def exec_args(user_body: Dict[str, Any]) -> Optional[List[str]]:
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    if not isinstance(exec_, dict):
        return None
    args = exec_.get("args")
    return [str(a) for a in args] if isinstance(args, list) else []


def exec_command(user_body: Dict[str, Any]) -> Optional[str]:
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    return exec_.get("command") if isinstance(exec_, dict) else None


def contexts_of_plugin(merged: Merged, plugin_command: str) -> List[Tuple[str, Dict[str, Any], List[str]]]:
    """(context name, context body, get-token args) for every context whose user runs this plugin."""
    found = []
    for name in merged.names("contexts"):
        body = (merged.get("contexts", name) or {}).get("context") or {}
        user = merged.get("users", body.get("user", "")) or {}
        command = exec_command(user.get("user") or {})
        if command and os.path.basename(str(command)) == plugin_command:
            args = exec_args(user.get("user") or {}) or []
            found.append((name, body, args))
    return found

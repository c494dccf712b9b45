"""Read, merge and write kubeconfig files exactly as kubectl does.

Which file gets what (client-go tools/clientcmd loader.go and config.go, checked against kubectl):

- `--kubeconfig FILE` is the only file. Otherwise KUBECONFIG split on os.pathsep with exact
  duplicates dropped, taken literally (no `~` expansion; relative to the working directory); an
  empty item is never read. Without KUBECONFIG, ~/.kube/config.
- The merged view: for each cluster, user and context name the first file defining it wins; the
  current context is the first non-empty one.
- A stanza that exists is changed in the file that defines it. A new stanza, and a new non-empty
  current-context, go to the default file: the explicit file; the only KUBECONFIG item; else the
  first item that exists, else the last item. (Only clearing current-context looks for the file
  that sets it, and we never clear it.)
- The cluster is set as `kubectl config set-cluster NAME --server=URL` sets it: tls-server-name
  and insecure-skip-tls-verify are dropped, and embedded CA data replaces a CA file.

YAML is read and written as kubectl does (goyaml.py): plain scalars typed by go-yaml v2's rules,
every string we write quoted when it could be read as anything else. A file kubectl refuses to
load (wrong types, duplicate names, another kind or apiVersion, .nan, null keys) is refused with
its path and the reason, before anything is written.

Writing goes through symbolic links to the final file, atomically (temporary file beside it,
fsync, rename), mode 0600, while a flock is held on each directory involved, waiting at most
LOCK_TIMEOUT. Every other entry, unknown field and key order is kept; a stanza we change is
first copied out of any YAML anchor it shares.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from kubectl_caas import cache
from kubectl_caas.errors import UsageError
from kubectl_caas.goyaml import dump, parse

SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}

# Long enough for a slow disk or a busy machine, short enough that a lock held by a stuck process
# (or by another user's process on a shared directory) ends in a clear line instead of a hang.
LOCK_TIMEOUT = 30.0

LEFT_UNTOUCHED = "kubectl cannot load it either; fix or move the file (it was left untouched)"


class KubeconfigError(UsageError):
    pass


# ---------------------------------------------------------------------------------------------
# What kubectl refuses to load: client-go's v1.Config and its conversion (types.go, conversion.go)

_EXTENSIONS = ("named", {"name": "string", "extension": "any"})
_CLUSTER = {"server": "string", "tls-server-name": "string", "insecure-skip-tls-verify": "bool",
            "certificate-authority": "string", "certificate-authority-data": "bytes", "proxy-url": "string",
            "disable-compression": "bool", "extensions": _EXTENSIONS}
_EXEC = {"command": "string", "args": ("list", "string"),
         "env": ("list", {"name": "string", "value": "string"}), "apiVersion": "string",
         "installHint": "string", "provideClusterInfo": "bool", "interactiveMode": "string"}
_USER = {"client-certificate": "string", "client-certificate-data": "bytes", "client-key": "string",
         "client-key-data": "bytes", "token": "string", "tokenFile": "string", "as": "string", "as-uid": "string",
         "as-groups": ("list", "string"), "as-user-extra": ("map", ("list", "string")), "username": "string",
         "password": "string", "auth-provider": {"name": "string", "config": ("map", "string")}, "exec": _EXEC,
         "extensions": _EXTENSIONS}
_CONTEXT = {"cluster": "string", "user": "string", "namespace": "string", "extensions": _EXTENSIONS}
_CONFIG = {"kind": "string", "apiVersion": "string",
           "preferences": {"colors": "bool", "extensions": _EXTENSIONS},
           "clusters": ("named", {"name": "string", "cluster": _CLUSTER}),
           "users": ("named", {"name": "string", "user": _USER}),
           "contexts": ("named", {"name": "string", "context": _CONTEXT}),
           "current-context": "string", "extensions": _EXTENSIONS}

_EXPECTED = {"string": "a string", "bool": "true or false", "bytes": "base64 text", "list": "a list",
             "named": "a list", "map": "a mapping"}


def _shape(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


class _Refusal(Exception):
    pass


def _json_key(key: Any, where: str) -> str:
    """The JSON key sigs.k8s.io/yaml makes of a YAML key, or the refusal it ends in."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        if key >= 1 << 63:
            raise _Refusal(f"{where or 'the top level'} has the key {key}, which kubectl cannot read (it is larger "
                           "than a 64-bit integer)")
        return str(key)
    if isinstance(key, float):
        return repr(key)  # only compared with field names, which are never numbers
    raise _Refusal(f"{where or 'the top level'} has an empty (null) key, which kubectl cannot read")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_json(value: Any, where: str) -> None:
    """What the YAML-to-JSON step refuses anywhere, known field or not: null keys, .nan and .inf."""
    if isinstance(value, float) and not math.isfinite(value):
        word = ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        raise _Refusal(f"{where or 'the file'} is {word}, which kubectl cannot read (JSON has no such number)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, _join(where, _json_key(key, where)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")


def _check(value: Any, schema: Any, where: str) -> None:
    """Go's JSON decoding into the v1 types: null fits anything, unknown fields are ignored."""
    if value is None or schema == "any":
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _Refusal(f"{where} must be a mapping, not {_shape(value)}")
        fields = {_json_key(k, where): v for k, v in value.items()}
        for name, inner in schema.items():
            if name in fields:
                _check(fields[name], inner, _join(where, name))
        return
    if isinstance(schema, tuple):
        container, inner = schema
        if container == "map":
            if not isinstance(value, dict):
                raise _Refusal(f"{where} must be a mapping, not {_shape(value)}")
            for key, item in value.items():
                _check(item, inner, _join(where, _json_key(key, where)))
            return
        if not isinstance(value, list):
            raise _Refusal(f"{where} must be a list, not {_shape(value)}")
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) else None
            _check(item, inner, f"{where}[name={name}]" if isinstance(name, str) else f"{where}[{index}]")
        if container == "named":
            _check_unique_names(value, where)
        return
    if schema == "string" and isinstance(value, str):
        return
    if schema == "bool" and isinstance(value, bool):
        return
    if schema == "bytes":
        if isinstance(value, str):
            try:
                # Go's base64 decoding skips line breaks and wants the padding
                base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
                return
            except (binascii.Error, ValueError):
                raise _Refusal(f"{where} is not valid base64") from None
        if isinstance(value, list) and all(type(b) is int and 0 <= b <= 255 for b in value):
            return  # Go also takes a list of byte values
    hint = " (write it in quotes)" if schema == "string" and not isinstance(value, (dict, list)) else ""
    raise _Refusal(f"{where} must be {_EXPECTED[schema]}, not {_shape(value)}{hint}")


def _check_unique_names(items: List[Any], where: str) -> None:
    """client-go's conversion refuses a name defined twice; for extensions only when the first
    definition holds a value (a null extension leaves the name free)."""
    def name_of(item: Any) -> str:
        return (item.get("name") if isinstance(item, dict) else None) or ""

    parent, _, section = where.rpartition(".")
    taken: Dict[str, bool] = {}
    for item in items:
        name = name_of(item)
        if taken.get(name):
            count = sum(1 for other in items if name_of(other) == name)
            raise _Refusal(f"{count} {section} named {name!r}" + (f" in {parent}" if parent else "")
                           + " (kubectl refuses a name defined twice)")
        if section != "extensions" or (isinstance(item, dict) and item.get("extension") is not None):
            taken[name] = True


def validate(path: str, data: Any) -> None:
    """Refuse, naming the file, what kubectl's loader refuses; accept everything it accepts."""
    try:
        if not isinstance(data, dict):
            raise _Refusal(f"it holds {_shape(data)}, not a mapping of settings")
        _check_json(data, "")
        _check(data, _CONFIG, "")
        kind, version = data.get("kind") or "", data.get("apiVersion") or ""
        if kind not in ("", "Config") or version not in ("", "v1"):
            raise _Refusal(f"it is kind {kind or '(none)'!r}, apiVersion {version or '(none)'!r}; kubectl reads only "
                           "kind Config, apiVersion v1")
    except _Refusal as refusal:
        raise KubeconfigError(f"kubeconfig {path}: {refusal}", LEFT_UNTOUCHED) from None


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


def _no_default_file() -> KubeconfigError:
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
            if not cache.flock_within(fd, wait):
                raise KubeconfigError(f"the kubeconfig directory {directory} stayed locked by another process for "
                                      f"{wait:g} s", "wait for the other kubectl-caas command to finish, then retry")
        yield
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Login's entry


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
    cluster = merged.get("clusters", body.get("cluster") or "") or {}
    server = (cluster.get("cluster") or {}).get("server")
    if server and server.rstrip("/") != entry.server.rstrip("/"):
        return f"it points at server {server}"
    user = merged.get("users", body.get("user") or "")
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
    kubectl cannot load, a KUBECONFIG with no file to write to, or (without force) a context of
    this name that points elsewhere."""
    merged = load(resolve_paths(explicit_path))
    if not default_file(explicit_path):
        raise _no_default_file()
    if context and not force:
        refuse_conflict(merged, Entry(context=context, cluster="", server=server, user="", user_body={}), same_user)


def _own_copy(kfile: KubeconfigFile, section: str, name: str) -> Dict[str, Any]:
    """The stanza to change, created if missing, copied out of any YAML anchor it shares: an
    alias elsewhere in the file must keep meaning what it meant."""
    inner = SECTIONS[section]
    items = list(kfile.data.get(section) or [])
    index = kfile.find(section, name)
    if index is None:
        item: Dict[str, Any] = {"name": name}
        items.append(item)
    else:
        found = items[index]
        item = dict(found) if isinstance(found, dict) else {"name": name}
        items[index] = item
    body = item.get(inner)
    item[inner] = dict(body) if isinstance(body, dict) else {}
    kfile.data[section] = items
    kfile.changed = True
    return item


def _check_round_trip(kfile: KubeconfigFile, payload: bytes) -> None:
    """What we are about to write must read back as what we meant; a bug here must not cost a file."""
    try:
        back = parse(payload)
    except yaml.YAMLError:
        back = None
    if back != kfile.data:
        raise KubeconfigError(f"kubectl-caas would have written {kfile.path} wrongly, so it was left untouched",
                              "report this: it is a bug in kubectl-caas")


def upsert(entry: Entry, *, explicit_path: Optional[str] = None, make_current: bool = True,
           force: bool = False, same_user: Optional[Callable[[Dict[str, Any]], bool]] = None) -> List[str]:
    """Add or update the entry's cluster, user and context; returns the files written."""
    paths = resolve_paths(explicit_path)
    same_user = same_user or (lambda body: body == entry.user_body)
    default_path_ = default_file(explicit_path)
    with locked(paths):
        merged = load(paths)
        if not force:
            refuse_conflict(merged, entry, same_user)

        def home(section: str, name: str) -> KubeconfigFile:
            owner = merged.owner(section, name)
            if owner is not None:
                return owner
            if not default_path_:
                raise _no_default_file()
            return merged.file(default_path_)

        # As `kubectl config set-cluster NAME --server=URL [--certificate-authority=F --embed-certs]`:
        # --server drops tls-server-name, set-cluster always turns insecure-skip-tls-verify off, and
        # embedded CA data replaces a CA file.
        cluster = _own_copy(home("clusters", entry.cluster), "clusters", entry.cluster)["cluster"]
        cluster["server"] = entry.server
        cluster.pop("tls-server-name", None)
        cluster.pop("insecure-skip-tls-verify", None)
        if entry.certificate_authority_data:
            cluster.pop("certificate-authority", None)
            cluster["certificate-authority-data"] = entry.certificate_authority_data

        user = _own_copy(home("users", entry.user), "users", entry.user)
        # The user stanza is ours: replace it whole, so no stale static token is left behind.
        user["user"] = copy.deepcopy(entry.user_body)

        context = _own_copy(home("contexts", entry.context), "contexts", entry.context)["context"]
        context["cluster"] = entry.cluster
        context["user"] = entry.user
        if entry.namespace:
            context["namespace"] = entry.namespace

        if make_current and merged.current_context != entry.context:
            if not default_path_:
                raise _no_default_file()
            holder = merged.file(default_path_)
            holder.data["current-context"] = entry.context
            holder.changed = True

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


# ---------------------------------------------------------------------------------------------
# Reading exec stanzas


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
    return ["" if a is None else str(a) for a in args] if isinstance(args, list) else []


def exec_command(user_body: Dict[str, Any]) -> Optional[str]:
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    return exec_.get("command") if isinstance(exec_, dict) else None


def contexts_of_plugin(merged: Merged, plugin_command: str) -> List[Tuple[str, Dict[str, Any], List[str]]]:
    """(context name, context body, get-token args) for every context whose user runs this plugin."""
    found = []
    for name in merged.names("contexts"):
        body = (merged.get("contexts", name) or {}).get("context") or {}
        user = merged.get("users", body.get("user") or "") or {}
        command = exec_command(user.get("user") or {})
        if command and os.path.basename(str(command)) == plugin_command:
            args = exec_args(user.get("user") or {}) or []
            found.append((name, body, args))
    return found

"""A login's place in the kubeconfig, written by kubectl's rules, and the exec user stanzas.

What kubectl-caas changes in a kubeconfig and where (client-go tools/clientcmd config.go, checked
against kubectl):

- A stanza that exists is changed in the file that defines it. A new stanza, and a new non-empty
  current-context, go to the default file (kubeconfig_files.default_file). Only clearing
  current-context looks for the file that sets it, and we never clear it.
- The cluster is set as `kubectl config set-cluster NAME --server=URL` sets it: tls-server-name
  and insecure-skip-tls-verify are dropped, and embedded CA data replaces a CA file.
- Every other entry, unknown field and key order is kept; a stanza we change is first copied out
  of any YAML anchor it shares.

The files themselves (which ones, loading and merging, locks, atomic 0600 writes) are
kubeconfig_files.py, and what kubectl refuses to load is kubeconfig_schema.py. The rest of
kubectl-caas imports only this module: the names it needs from those two are importable from
here.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kubectl_caas.errors import UsageError

# The file handling callers use through this module.
from kubectl_caas.kubeconfig_files import (  # noqa: F401
    LEFT_UNTOUCHED,
    SECTIONS,
    KubeconfigError,
    KubeconfigFile,
    Merged,
    default_file,
    default_path,
    load,
    load_file,
    locked,
    no_default_file,
    resolve_paths,
    validate,
    write_changed,
)

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
        raise no_default_file()
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
                raise no_default_file()
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
                raise no_default_file()
            holder = merged.file(default_path_)
            holder.data["current-context"] = entry.context
            holder.changed = True

        return write_changed(merged)


# ---------------------------------------------------------------------------------------------
# Reading exec stanzas


# kubectl-caas's get-token shell front (ready.py) and the variable that names the plugin it runs.
FRONT = "kubectl_caas_front"
FRONT_PLUGIN_ENV = "KUBECTL_CAAS_PLUGIN"
FRONT_READY_ENV = "KUBECTL_CAAS_READY"  # the ready credential's file name in the cache directory
FRONT_MARK = b"#@kubectl-caas-front-end"  # in the front, and in a single-file build that starts with it


def front_can_compare(args: Sequence[str]) -> bool:
    """Can the front compare these exec args with a ready credential's exactly (it joins them with tabs)?"""
    return bool(args) and args[0] == "get-token" and not any(c in a for a in args for c in "\t\n\r\0")


def exec_user_body(command: str, args: Sequence[str], install_hint: Optional[str] = None,
                   env: Optional[List[Dict[str, str]]] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": command,
        "args": list(args),
        "env": env or None,
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
    """The plugin the exec stanza runs: through kubectl-caas's shell front, the one it names."""
    exec_ = user_body.get("exec") if isinstance(user_body, dict) else None
    command = exec_.get("command") if isinstance(exec_, dict) else None
    env = exec_.get("env") if isinstance(exec_, dict) else None
    if not isinstance(command, str) or os.path.basename(command) != FRONT or not isinstance(env, list):
        return command
    for item in env:
        if isinstance(item, dict) and item.get("name") == FRONT_PLUGIN_ENV and isinstance(item.get("value"), str):
            return item["value"]
    return command


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

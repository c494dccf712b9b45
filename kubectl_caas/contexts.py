"""The kubeconfig side of a login, shared by both plugins: the exec user stanza that makes kubectl
run our get-token (and which file it runs), the cluster's name and CA data, the namespace, the
plugin's contexts already in the kubeconfig, and whether one of them is ours to overwrite.
kubeconfig.py does the reading and writing; this module knows what our stanzas look like.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from kubectl_caas import identity, kubeconfig
from kubectl_caas.errors import CaasError, UsageError
from kubectl_caas.plugins import Plugin

# A namespace name is an RFC 1123 label: what kubectl and the API server accept.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


# ---------------------------------------------------------------------------------------------
# The cluster


def require_https_server(server: Optional[str], hint: Optional[str]) -> str:
    if not server:
        raise UsageError("the CaaS API server URL is not set",
                         hint or "pass --server URL, set CAAS_SERVER, or set `server:` in the config file")
    if not re.match(r"^https://[^/\s]+", server):
        raise UsageError(f"the API server URL {server!r} must start with https://")
    return server.rstrip("/")


def cluster_name_for(server: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    host = parts.hostname or server
    if parts.port and parts.port != 443:
        host = f"{host}-{parts.port}"
    return "caas-" + re.sub(r"[^A-Za-z0-9.-]+", "-", host)


def read_ca_data(path: Optional[str]) -> Optional[str]:
    """The CA bundle for the API server, base64-encoded for certificate-authority-data. `path` may
    also be the PEM text itself (a site build carries it so)."""
    if not path:
        return None
    import base64

    if path.lstrip().startswith(PEM_CERTIFICATE):
        return base64.b64encode(path.encode()).decode()
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read the API server CA {path}: {exc.strerror}",
                         "check the --certificate-authority path") from None
    if PEM_CERTIFICATE.encode() not in data:
        raise UsageError(f"{path} is not a PEM certificate bundle", "pass the API server's CA in PEM form")
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------------------
# Namespaces


def check_namespace(namespace: Optional[str]) -> Optional[str]:
    if namespace and not _NAMESPACE.match(namespace):
        raise UsageError(f"{namespace!r} is not a valid Kubernetes namespace",
                         "use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit")
    return namespace


def derived_namespace(name: str, what: str, notice: Callable[[str], None]) -> Optional[str]:
    """`name` in lower case when that is a valid namespace; otherwise None, and say how to pick one."""
    namespace = name.lower()
    if _NAMESPACE.match(namespace):
        return namespace
    notice(f"kubectl-caas: {what} does not make a valid Kubernetes namespace, so the context names none; "
           "pass --namespace NAME (your administrators know which) to set one")
    return None


# ---------------------------------------------------------------------------------------------
# The user stanza


def plugin_command(command: str) -> str:
    """The absolute path kubectl should run for get-token.

    Prefer the script we are running as; but when that is a shell shim (pyenv's add 70-120 ms to
    every kubectl command), use the real console script beside the running interpreter.
    """
    candidates = []
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.basename(argv0).startswith(command):
        candidates.append(os.path.abspath(argv0) if os.sep in argv0 else _which(argv0))
    candidates.append(os.path.join(os.path.dirname(sys.executable), command))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and not _is_shim(path):
            return path
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return command


def _which(command: str) -> Optional[str]:
    import shutil

    return shutil.which(command)


def _head(path: str, size: int = 8192) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _is_shim(path: str) -> bool:
    """A version manager's shell shim (not our own front, which also `exec`s)."""
    head = _head(path)
    first = head.split(b"\n", 1)[0]
    return (first.startswith(b"#!") and b"python" not in first and kubeconfig.FRONT_MARK not in head
            and (b"pyenv" in head[:512] or b"asdf" in head[:512] or b"exec " in head[:512]))


def exec_user(plugin: Plugin, args: List[str]) -> Dict[str, Any]:
    """The kubeconfig user stanza that runs this plugin's get-token with `args`."""
    # The shell front (ready.py) when it ships beside the plugin: cache hits without starting Python.
    command, env = front_stanza(plugin, plugin_command(plugin.command), list(args))
    return kubeconfig.exec_user_body(command, args,
                                     f"{plugin.command} is part of kubectl-caas: pipx install kubectl-caas", env)


def is_front(path: str) -> bool:
    """Does this file start with the front (the installed script, or a single-file build)?"""
    head = _head(path)
    return head.startswith(b"#!/bin/sh\n") and kubeconfig.FRONT_MARK in head


def front_stanza(plugin: Plugin, command: str, args: List[str]) -> Tuple[str, Optional[List[Dict[str, str]]]]:
    """(command, env) for the kubeconfig user: kubectl-caas's get-token shell front (ready.py) with
    the ready credential's file name, when one ships beside `command` (or `command` starts with
    one: a single-file build); else `command` as it is. KUBECTL_CAAS_FAST_PATH=0 at login opts out."""
    if os.environ.get("KUBECTL_CAAS_FAST_PATH", "") == "0" or not os.path.isabs(command) \
            or not kubeconfig.front_can_compare(args):
        return command, None
    try:
        values = exec_values(plugin, args)
        kind = plugin.bearer(values)
    except CaasError:
        return command, None
    from kubectl_caas.credential import ready_path

    env = [{"name": kubeconfig.FRONT_READY_ENV, "value": os.path.basename(ready_path(plugin.entry_path(values),
                                                                                          kind))}]
    if is_front(command):  # a single-file build: the file itself starts with the front
        return command, env
    for front in front_candidates(command):
        if os.path.isfile(front) and os.access(front, os.X_OK) and is_front(front):
            return front, [*env, {"name": kubeconfig.FRONT_PLUGIN_ENV, "value": command}]
    return command, None


def front_candidates(command: str) -> List[str]:
    """Where the front is installed: beside the console script (pip, a venv), beside what it links
    to (pipx exposes only the console scripts, as links into its venv's bin), beside the running
    interpreter (that venv's bin)."""
    places = [os.path.dirname(command), os.path.dirname(os.path.realpath(command)), os.path.dirname(sys.executable)]
    return list(dict.fromkeys(os.path.join(place, kubeconfig.FRONT) for place in places))


# ---------------------------------------------------------------------------------------------
# The plugin's contexts


def exec_values(plugin: Plugin, args: List[str]) -> Dict[str, str]:
    """get-token's values from a kubeconfig user's exec args."""
    return identity.from_args(plugin.options, args, plugin.command)


def plugin_contexts(plugin: Plugin, context: Optional[str], all_: bool, kubeconfig_path: Optional[str]
                    ) -> Tuple[kubeconfig.Merged, List[Tuple[str, Dict[str, Any], List[str]]]]:
    """The contexts a logout or status is about: one by name, the current one, or all of the plugin's."""
    merged = kubeconfig.load(kubeconfig.resolve_paths(kubeconfig_path))
    ours = kubeconfig.contexts_of_plugin(merged, plugin.command)
    if all_:
        return merged, ours
    wanted = context or merged.current_context
    if not wanted:
        raise UsageError("no current context", "pass --context NAME or --all")
    chosen = [c for c in ours if c[0] == wanted]
    if not chosen:
        raise UsageError(f"context {wanted!r} does not use {plugin.command}",
                         f"contexts that do: {', '.join(c[0] for c in ours) or 'none'}")
    return merged, chosen


def same_person(plugin: Plugin, values: Dict[str, Any]) -> Callable[[Dict[str, Any]], bool]:
    """A predicate: is this kubeconfig user stanza ours, for the same user (the table's `person`
    options) as `values`?"""

    def check(body: Dict[str, Any]) -> bool:
        args = kubeconfig.exec_args(body)
        command = kubeconfig.exec_command(body)
        if args is None or not command or os.path.basename(str(command)) != plugin.command:
            return False
        try:
            theirs = exec_values(plugin, args)
        except CaasError:
            return False
        return identity.same_person(plugin.options, values, theirs)
    return check

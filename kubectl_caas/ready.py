"""The ready credential: get-token's answer written ahead, for the shell front (the fast path).

kubectl starts the credential plugin for every command, and a Python start alone costs more than
a Go plugin's whole run. So whoever writes a cache entry (a login, a renewal: store.save, under
the entry's lock) also writes, beside it, the ExecCredential a cache hit would print, with the
moment it stops being fresh (exec_plugin.fresh_token's rule: the renewal margin applied). The
kubeconfig's exec `command` is then a small POSIX sh script (scripts/kubectl_caas_front, also the
head of each single-file build) that prints it while it is fresh and otherwise runs the Python
get-token with the same arguments. Logout removes it with the entry.

The file, ``<entry name without .json>.<kind>.ready`` in the cache directory (0600, written
atomically through cache.py's checked directory), holds four lines, the first fields separated
by tabs:

    kubectl-caas-ready-1 <its own name> <issued at, whole s> <fresh until, whole s>
    <the exec args it answers, joined by tabs: the front compares them with its own>
    <the ExecCredential after `{"apiVersion": "...", `: the front writes that part as asked>
    end

Its name is not secret (user and project names and a hash, like the entry's); login writes it
into the kubeconfig user's exec env (KUBECTL_CAAS_READY), since a shell cannot compute the hash.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from kubectl_caas import cache, hotpath
from kubectl_caas.credential import EXEC_API_VERSIONS, exec_credential, fresh_token, ready_path, renew_margin
from kubectl_caas.kubeconfig import front_can_compare

if TYPE_CHECKING:
    from kubectl_caas.plugins import Plugin

MAGIC = "kubectl-caas-ready-1"

usable_args = front_can_compare


def render(name: str, args: Sequence[str], token: Mapping[str, Any]) -> Optional[bytes]:
    """The ready file for `token` (a fresh cached bearer), or None when it cannot be written safely."""
    if not usable_args(args):
        return None
    expires_at = float(token["expires_at"])
    issued_at = float(token.get("issued_at") or 0)
    if not issued_at:  # fresh_token counts a token without an issue time as issued now: leave it to Python
        return None
    # Whole seconds, rounded towards caution: `date +%s` < until means now < expires_at - margin.
    until = math.floor(expires_at - renew_margin(expires_at - issued_at))
    issued = math.floor(issued_at)
    if until <= issued:
        return None
    # The ExecCredential after its apiVersion, which the front puts back as kubectl asked: the
    # only difference between the versions, and half the bytes for the shell to read.
    credentials = [exec_credential(version, token) for version in EXEC_API_VERSIONS]
    heads = [f'{{"apiVersion": {hotpath.quote(version)}, ' for version in EXEC_API_VERSIONS]
    if not all(c.startswith(h) and c[len(h):] == credentials[0][len(heads[0]):] for c, h in zip(credentials, heads)):
        return None
    lines = [f"{MAGIC}\t{name}\t{issued}\t{until}", "\t".join(args), credentials[0][len(heads[0]):], "end"]
    if any("\n" in line or "\r" in line for line in lines):
        return None
    return ("\n".join(lines) + "\n").encode()


def read_args(path: str) -> Optional[List[str]]:
    """The exec args an existing ready file answers (to keep it in step), or None."""
    data = cache.read_bytes(path)
    if not data:
        return None
    lines = data.decode("utf-8", "replace").split("\n")
    if len(lines) < 2 or not lines[0].startswith(MAGIC + "\t"):
        return None
    args = lines[1].split("\t")
    return args if usable_args(args) else None


def remove(entry_path: str, kinds: Sequence[str]) -> Dict[str, List[str]]:
    """Remove the entry's ready files; returns the args each answered (kind -> args)."""
    answered = {}
    for kind in kinds:
        path = ready_path(entry_path, kind)
        args = read_args(path)
        if args:
            answered[kind] = args
        try:
            cache.delete_entry(path)
        except Exception:  # noqa: BLE001 - a refused directory: nothing of ours to remove there
            pass
    return answered


def write(plugin: Any, entry_path: str, entry: Mapping[str, Any], answered: Mapping[str, Sequence[str]],
          now: Optional[float] = None) -> None:
    """Write a ready file for each kind in `answered` whose token in `entry` is fresh. Best effort:
    without one, the front runs Python, which answers from the entry."""
    import time

    now = time.time() if now is None else now
    for kind, args in answered.items():
        token = fresh_token(dict(entry), kind, now)
        path = ready_path(entry_path, kind)
        payload = render(os.path.basename(path), args, token) if token is not None else None
        if payload is None:
            continue
        try:
            cache.write_cache_file(path, payload)
        except Exception:  # noqa: BLE001 - a full disk, say: the entry is what matters
            try:
                cache.delete_entry(path)
            except Exception:  # noqa: BLE001
                pass


def kind_of(plugin: Plugin, args: Sequence[str]) -> Optional[str]:
    """Which bearer these exec args ask for, or None when they do not parse."""
    from kubectl_caas import identity
    from kubectl_caas.errors import CaasError

    try:
        return plugin.bearer(identity.from_args(plugin.options, list(args), plugin.command))
    except CaasError:
        return None

"""What both CLIs share besides their options (options.py) and the app plumbing (app.py): where a
login writes (LoginTarget), reading secrets from stdin, durations and expiries as people read them,
results on stdout, and the rows of `status`."""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from kubectl_caas import cache, contexts, store
from kubectl_caas.errors import UsageError
from kubectl_caas.plugins import Plugin
from kubectl_caas.runtime import Runtime
from kubectl_caas.settings import Settings
from kubectl_caas.terminal import show


@dataclass(frozen=True)
class LoginTarget:
    """Where and how a login configures kubectl: everything but the identity and its secret."""

    runtime: Runtime
    server: str
    ca_data: Optional[str]
    context: Optional[str]
    namespace: Optional[str]
    kubeconfig_path: Optional[str]
    force: bool
    storage: str

    @classmethod
    def from_settings(cls, settings: Settings, rt: Runtime, context: Optional[str], kubeconfig_path: Optional[str],
                      force: bool) -> "LoginTarget":
        return cls(rt, contexts.require_https_server(settings.get("server"), settings.hint("server")),
                   contexts.read_ca_data(settings.get("certificate_authority")), context,
                   contexts.check_namespace(settings.get("namespace")), kubeconfig_path, force,
                   token_storage(settings.get("token_storage")))


def result(line: str) -> None:
    """One line of a command's result on stdout, escaped like everything else shown."""
    show(line, sys.stdout)


def shell_quote(word: str) -> str:
    """`word` as a POSIX shell reads it back, for commands we suggest."""
    import shlex

    return shlex.quote(word)


def read_secret_stdin(what: str) -> str:
    if sys.stdin is None or sys.stdin.closed:
        raise UsageError(f"--{what}-stdin given but there is no standard input")
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError(f"--{what}-stdin given but standard input was empty")
    return value


def token_storage(value: Optional[str]) -> str:
    value = value or "disk"
    if value not in store.STORAGES:
        raise UsageError(f"--token-storage must be disk or keyring, not {value!r}")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'7d', '12h', '90m', '3600' (seconds)."""
    match = _DURATION.match(text or "")
    if not match:
        raise UsageError(f"cannot read {text!r} as a duration", "use e.g. 7d, 12h, 30m or seconds")
    return float(match.group(1)) * _UNIT[match.group(2)]


def describe_expiry(timestamp: Optional[float], now: Optional[float] = None) -> str:
    if not timestamp:
        return "-"
    now = time.time() if now is None else now
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))
    left = timestamp - now
    if left <= 0:
        return f"expired ({when})"
    if left < 120:
        return f"{when} (in {int(left)} s)"
    if left < 7200:
        return f"{when} (in {int(left // 60)} min)"
    if left < 172800:
        return f"{when} (in {left / 3600:.1f} h)"
    return f"{when} (in {left / 86400:.1f} days)"


def cache_entry_for(plugin: Plugin, args: List[str]) -> Tuple[Dict[str, str], str]:
    """(get-token values, cache path) for a kubeconfig user's exec args."""
    values = contexts.exec_values(plugin, args)
    return values, plugin.entry_path(values)


def status_rows(plugin: Plugin, context: Optional[str], kubeconfig_path: Optional[str], rt: Runtime
                ) -> Iterator[Tuple[str, str, Dict[str, str], Optional[Dict[str, Any]]]]:
    """(marker, context name, get-token values, cache entry or None) for each of the plugin's
    contexts (or the one asked for); `*` marks the current context."""
    merged, rows = contexts.plugin_contexts(plugin, context, context is None, kubeconfig_path)
    if not rows:
        rt.notice(f"No {plugin.command} contexts: run `kubectl {plugin.name} login`")
    for name, _body, args in rows:
        values, path = cache_entry_for(plugin, args)
        marker = "*" if name == merged.current_context else " "
        state, entry, reason = cache.inspect_entry(path)
        if state in (cache.UNREADABLE, cache.UNTRUSTED):
            result(f"{marker} {name}: cache entry unusable ({reason}); `kubectl {plugin.name} login` replaces it")
            continue
        yield marker, name, values, entry

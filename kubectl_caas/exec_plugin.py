"""The get-token hot path.

kubectl starts the credential plugin in a new process for every command, so `get-token` answers
from the cache with the standard library alone. Only when the cached token is missing or about to
expire does it take the entry's lock and import the plugin's backend (keystone or oidc), which
talks to the server.
"""
from __future__ import annotations

import os
import sys

from kubectl_caas import cache, hotpath, identity
# The ExecCredential and the freshness rule live in credential.py, shared with the ready credential.
from kubectl_caas.credential import (  # noqa: F401 - get-token's names, as before
    DEFAULT_EXEC_API_VERSION,
    EXEC_API_VERSIONS,
    LAST_EXPIRY,
    MAX_RENEW_MARGIN,
    cached_token,
    exec_credential,
    fresh_token,
    renew_margin,
)
from kubectl_caas.errors import EXIT_USAGE, CaasError

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

    from kubectl_caas.plugins import Plugin
    from kubectl_caas.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# get-token


def exec_info(environ: Mapping[str, str]) -> Tuple[str, Optional[bool]]:
    """The apiVersion kubectl asked for, and whether it says a person is at a terminal."""
    raw = environ.get("KUBERNETES_EXEC_INFO")
    if not raw:
        return DEFAULT_EXEC_API_VERSION, None
    try:
        info = hotpath.loads(raw)
    except (ValueError, RecursionError):
        return DEFAULT_EXEC_API_VERSION, None
    if not isinstance(info, dict):
        return DEFAULT_EXEC_API_VERSION, None
    version = info.get("apiVersion")
    if version is None:
        version = DEFAULT_EXEC_API_VERSION
    elif version not in EXEC_API_VERSIONS:
        # Answering in another version than asked fails in kubectl anyway, with a vaguer message.
        raise CaasError(f"kubectl asked for an ExecCredential of apiVersion {str(version)[:80]!r}, which "
                        f"kubectl-caas does not speak", "set the kubeconfig user's exec apiVersion to "
                        f"{DEFAULT_EXEC_API_VERSION} (kubectl 1.22 or newer), e.g. by logging in again",
                        EXIT_USAGE)
    spec = info.get("spec")
    interactive = spec.get("interactive") if isinstance(spec, dict) else None
    return version, interactive if isinstance(interactive, bool) else None


GET_TOKEN_HELP = """Usage: {command} get-token [OPTIONS]

Print an ExecCredential for kubectl on stdout. kubectl runs this for you: `login` writes the
options below into your kubeconfig. Answers from the cache while the token is good; otherwise
renews it silently ({renew}) and, when kubectl says a person is at a terminal, asks them.

Options: {options} --debug --force-refresh (renew even a token that is still good)
Environment: KUBERNETES_EXEC_INFO (set by kubectl), {environment}, KUBECTL_CAAS_CACHE_DIR, KUBECTL_CAAS_TIMEOUT

Example: {command} get-token {example}
{exit_codes}
"""


def get_token(plugin: Plugin, argv: List[str], runtime: Runtime) -> int:
    from kubectl_caas.errors import report

    try:
        values, flags = identity.parse_args(plugin.options, argv, plugin.command)
        runtime.debug = bool(flags.get("debug"))
        if flags.get("help"):
            from kubectl_caas.errors import EXIT_CODES_HELP

            sys.stdout.write(GET_TOKEN_HELP.format(
                command=plugin.command, renew=plugin.renew_sources, exit_codes=EXIT_CODES_HELP,
                example=plugin.example, environment=", ".join(plugin.renewal_environment),
                options=" ".join(f"--{o.flag}" for o in identity.exec_options(plugin.options))))
            return 0
        api_version, interactive = exec_info(runtime.environ)
        # --force-refresh: renew even a token that is still good (new group memberships, say).
        force = bool(flags.get("force-refresh"))
        # The exec args as the kubeconfig holds them, for the ready credential (ready.py).
        if force and not values:  # typed by a person: the current context's login
            from kubectl_caas import contexts

            exec_args = _current_context_args(plugin)
            values = contexts.exec_values(plugin, exec_args)
        else:
            exec_args = ["get-token", *(a for a in argv if a != "--force-refresh")]
        kind = plugin.bearer(values)
        path = plugin.entry_path(values)
        token = None if force else fresh_token(cache.read_entry(path), kind, runtime.clock())
        if token is None:
            token = _renew(plugin, values, kind, path, interactive, runtime, force, exec_args)
        elif runtime.environ.get("KUBECTL_CAAS_READY"):
            _restore_ready(plugin, path, kind, exec_args, runtime)
        sys.stdout.write(exec_credential(api_version, token) + "\n")
        return 0
    except CaasError as exc:
        report(plugin.command, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        report(plugin.command, None, "interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - kubectl users must never see a traceback
        from kubectl_caas.errors import report_unexpected

        return report_unexpected(plugin.command, exc, runtime.debug)


def _current_context_args(plugin: Plugin) -> List[str]:
    """get-token's args in the current kubeconfig context, when it is one of the plugin's."""
    from kubectl_caas import contexts

    _, chosen = contexts.plugin_contexts(plugin, None, False, None)
    (_, _, args), = chosen
    return list(args)


def _restore_ready(plugin: Plugin, path: str, kind: str, exec_args: List[str], runtime: Runtime) -> None:
    """The front sent a fresh cache hit here: when its ready credential is missing (removed by
    hand, a full disk at the last renewal) or older than the entry (which something else wrote:
    the front refuses it then), write it again so that the next call is fast."""
    from kubectl_caas.credential import ready_path

    ready_file = ready_path(path, kind)
    if runtime.environ.get("KUBECTL_CAAS_READY") != os.path.basename(ready_file) or not _ready_stale(path, ready_file):
        return
    from kubectl_caas import ready, store

    try:
        with store.locked(path):  # against a renewal or a logout between our read and our write
            if _ready_stale(path, ready_file):
                ready.write(plugin, path, cache.read_entry(path) or {}, {kind: exec_args}, runtime.clock())
    except Exception:  # noqa: BLE001 - only the next call's speed depends on it
        pass


def _ready_stale(entry_path: str, ready_file: str) -> bool:
    """No ready credential, or one the entry was written after (the front's `-nt` test)."""
    try:
        ready_time = os.lstat(ready_file).st_mtime_ns
    except OSError:
        return True
    try:
        return os.stat(entry_path).st_mtime_ns > ready_time
    except OSError:
        return False


def _renew(plugin: Plugin, values: Dict[str, str], kind: str, path: str, interactive: Optional[bool],
           runtime: Runtime, force: bool = False, exec_args: Optional[List[str]] = None) -> Mapping[str, Any]:
    if interactive is None:  # not run by kubectl: a person at a terminal may answer
        interactive = runtime.isatty()
    from kubectl_caas import store

    with store.locked(path):
        # Another process may have renewed the entry while we waited for the lock.
        entry = cache.read_entry(path)
        token = None if force else fresh_token(entry, kind, runtime.clock())
        if token is not None:
            return token
        entry = store.load(plugin, path, entry)
        import importlib

        from kubectl_caas import http

        backend = importlib.import_module(plugin.backend)
        if interactive:
            new_entry = backend.renew(values, entry, runtime, interactive=True)
        else:
            # kubectl is waiting and nobody can answer a prompt: one time budget for the whole renewal.
            with http.Deadline(plugin.service, values.get(plugin.server_option, ""),
                               http.total_timeout(runtime.environ)):
                new_entry = backend.renew(values, entry, runtime, interactive=False)
        token = cached_token(new_entry, kind)
        if token is None:
            raise CaasError(f"the {plugin.name} server returned no usable {kind} token")
        from kubectl_caas.clock import note_offset

        note_offset(plugin, new_entry, entry, runtime)
        # kubectl gets the new token even when it cannot be saved (a full disk, say): the renewal
        # happened, and a refresh token rotated by it must not be thrown away with an error.
        problem = store.save_renewed(plugin, path, new_entry, values.get("token_storage"), runtime, exec_args)
        if problem:
            runtime.notice(f"{plugin.command}: warning: {problem}")
        return token

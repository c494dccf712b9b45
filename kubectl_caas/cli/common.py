"""What both CLIs share: running a typer app with one-line errors, where secrets come from, the
command path written into the kubeconfig, and durations."""
from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional

import typer

try:  # typer >= 0.25 carries its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on older Pythons
    from click import exceptions as click_exc

from kubectl_caas.errors import EXIT_CODES_HELP, EXIT_USAGE, CaasError, UsageError, report
from kubectl_caas.terminal import printable, prompt_secret, show  # noqa: F401 - the CLIs ask and show through common

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text + "\n\n" + EXIT_CODES_HELP, context_settings=CONTEXT_SETTINGS,
                       add_completion=True, no_args_is_help=True, rich_markup_mode=None,
                       pretty_exceptions_enable=False)


def say(message: str) -> None:
    """Everything for humans goes to stderr; stdout is for results. Control characters in what a
    server chose (names, messages) are shown escaped, never obeyed by the terminal."""
    show(message)


def result(line: str) -> None:
    """One line of a command's result on stdout, escaped like everything else shown."""
    show(line, sys.stdout)


def shell_quote(word: str) -> str:
    """`word` as a POSIX shell reads it back, for commands we suggest."""
    import shlex

    return shlex.quote(word)


def fail(plugin: str, exc: CaasError) -> NoReturn:
    report(plugin, exc)
    raise SystemExit(exc.exit_code)


_NO_ARGS_IS_HELP = getattr(click_exc, "NoArgsIsHelpError", ())
_ABORT = tuple({typer.Abort, getattr(click_exc, "Abort", typer.Abort)})
_EXIT = tuple({typer.Exit, getattr(click_exc, "Exit", typer.Exit)})


def run_app(app: typer.Typer, plugin: str, argv: List[str]) -> NoReturn:
    debug = "--debug" in argv
    try:
        result = app(args=argv, prog_name=f"kubectl-{plugin}", standalone_mode=False)
    except CaasError as exc:
        fail(plugin, exc)
    except _NO_ARGS_IS_HELP as exc:
        print(exc.ctx.get_help() if getattr(exc, "ctx", None) else str(exc))
        raise SystemExit(0)
    except click_exc.UsageError as exc:
        hint = f"see `kubectl-{plugin} {exc.ctx.info_name if exc.ctx and exc.ctx.parent else ''} --help`"
        show(f"kubectl-{plugin}: error: {exc.format_message().rstrip('.')}; {' '.join(hint.split())}")
        raise SystemExit(EXIT_USAGE)
    except _ABORT:
        print(f"kubectl-{plugin}: interrupted", file=sys.stderr)
        raise SystemExit(130)
    except _EXIT as exc:
        raise SystemExit(exc.exit_code)
    except click_exc.ClickException as exc:
        show(f"kubectl-{plugin}: error: {exc.format_message()}")
        raise SystemExit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"kubectl-{plugin}: interrupted", file=sys.stderr)
        raise SystemExit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback for users
        from kubectl_caas.exec_plugin import report_unexpected

        raise SystemExit(report_unexpected(plugin, exc, debug))
    raise SystemExit(result if isinstance(result, int) else 0)


def read_secret_stdin(what: str) -> str:
    if sys.stdin is None or sys.stdin.closed:
        raise UsageError(f"--{what}-stdin given but there is no standard input")
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError(f"--{what}-stdin given but standard input was empty")
    return value


def plugin_command(name: str) -> str:
    """The absolute path kubectl should run for get-token.

    Prefer the script we are running as; but when that is a shell shim (pyenv's add 70-120 ms to
    every kubectl command), use the real console script beside the running interpreter.
    """
    candidates = []
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.basename(argv0).startswith(name):
        candidates.append(os.path.abspath(argv0) if os.sep in argv0 else _which(argv0))
    candidates.append(os.path.join(os.path.dirname(sys.executable), name))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and not _is_shim(path):
            return path
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return name


def _which(command: str) -> Optional[str]:
    import shutil

    return shutil.which(command)


def _is_shim(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return first.startswith(b"#!") and b"python" not in first and (b"pyenv" in head or b"asdf" in head
                                                                    or b"exec " in head)


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


def read_ca_data(path: Optional[str]) -> Optional[str]:
    """The CA bundle for the API server, base64-encoded for certificate-authority-data. `path` may
    also be the PEM text itself (a site build carries it so)."""
    if not path:
        return None
    import base64

    if path.lstrip().startswith("-----BEGIN CERTIFICATE-----"):
        return base64.b64encode(path.encode()).decode()
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read the API server CA {path}: {exc.strerror}",
                         "check the --certificate-authority path") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(f"{path} is not a PEM certificate bundle", "pass the API server's CA in PEM form")
    return base64.b64encode(data).decode()


def cluster_name_for(server: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    host = parts.hostname or server
    if parts.port and parts.port != 443:
        host = f"{host}-{parts.port}"
    return "caas-" + re.sub(r"[^A-Za-z0-9.-]+", "-", host)


def require_https_server(server: Optional[str], hint: Optional[str]) -> str:
    if not server:
        raise UsageError("the CaaS API server URL is not set",
                         hint or "pass --server URL, set CAAS_SERVER, or set `server:` in the config file")
    if not re.match(r"^https://[^/\s]+", server):
        raise UsageError(f"the API server URL {server!r} must start with https://")
    return server.rstrip("/")



def enable_debug(enabled: bool) -> None:
    if enabled:
        from kubectl_caas import http

        http.enable_debug()


def add_version_option(app: typer.Typer, plugin: str) -> None:
    def show_version(value: bool) -> None:
        if value:
            from importlib.metadata import version

            from kubectl_caas.settings import baked_site

            # A site build says which site it carries: its defaults decide where logins go.
            site = baked_site()
            built_for = f", site {site['name']} (built {site['built']})" if site else ""
            print(f"kubectl-{plugin} (kubectl-caas) {version('kubectl-caas')}{built_for}")
            raise typer.Exit(0)

    @app.callback()
    def main(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                          help="print the version and exit")) -> None:
        pass


def plugin_contexts(plugin: str, context: Optional[str], all_: bool, kubeconfig_path: Optional[str]):
    """The contexts a logout or status is about: one by name, the current one, or all of the plugin's."""
    from kubectl_caas import kubeconfig

    merged = kubeconfig.load(kubeconfig.resolve_paths(kubeconfig_path))
    ours = kubeconfig.contexts_of_plugin(merged, f"kubectl-{plugin}")
    if all_:
        return merged, ours
    wanted = context or merged.current_context
    if not wanted:
        raise UsageError("no current context", "pass --context NAME or --all")
    chosen = [c for c in ours if c[0] == wanted]
    if not chosen:
        raise UsageError(f"context {wanted!r} does not use kubectl-{plugin}",
                         f"contexts that do: {', '.join(c[0] for c in ours) or 'none'}")
    return merged, chosen


# A namespace name is an RFC 1123 label: what kubectl and the API server accept.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_namespace(namespace: Optional[str]) -> Optional[str]:
    if namespace and not _NAMESPACE.match(namespace):
        raise UsageError(f"{namespace!r} is not a valid Kubernetes namespace",
                         "use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit")
    return namespace


def derived_namespace(name: str, what: str) -> Optional[str]:
    """`name` in lower case when that is a valid namespace; otherwise None, and say how to pick one."""
    namespace = name.lower()
    if _NAMESPACE.match(namespace):
        return namespace
    say(f"kubectl-caas: {what} does not make a valid Kubernetes namespace, so the context names none; "
        "pass --namespace NAME (your administrators know which) to set one")
    return None


def exec_options(plugin: str, args: List[str]) -> Dict[str, str]:
    from kubectl_caas.exec_plugin import exec_options as parse

    return parse(plugin, args)


def cache_entry_for(plugin: str, args: List[str]):
    """(get-token options, cache path, entry or None) for a kubeconfig user's exec args."""
    from kubectl_caas import cache
    from kubectl_caas.exec_plugin import entry_path_for, exec_options

    options = exec_options(plugin, args)
    path = entry_path_for(plugin, options)
    return options, path, cache.read_entry(path)


def entry_for_logout(plugin: str, path: str, name: str) -> Optional[Dict[str, Any]]:
    """The entry a logout works on (its lock held by the caller), or None when there is nothing to
    revoke. An entry that exists but cannot be used (corrupt, oversized, planted) is removed here:
    leaving it would keep whatever secret it holds on disk while saying "logged out"."""
    from kubectl_caas import cache

    state, entry, reason = cache.inspect_entry(path)
    if state == cache.UNREADABLE:
        from kubectl_caas import secret_store

        secret_store.forget(plugin, path)
        say(f"{name}: removed a cache entry that could not be read ({reason}); any token in it could not be "
            "revoked and expires on its own")
        return None
    if state == cache.UNTRUSTED:
        raise CaasError(f"cannot log out of {name}: {reason}")
    if entry is None:
        say(f"{name}: already logged out")
    return entry


def same_exec_identity(plugin: str, keys: Dict[str, Optional[str]]) -> Callable[[Dict[str, Any]], bool]:
    """A predicate: is this kubeconfig user stanza ours, for the same identity? `keys` are get-token
    options as login writes them (auth URL and issuer already normalised)."""
    from kubectl_caas import kubeconfig
    from kubectl_caas.exec_plugin import exec_options

    def check(body: Dict[str, Any]) -> bool:
        args = kubeconfig.exec_args(body)
        command = kubeconfig.exec_command(body)
        if args is None or not command or os.path.basename(str(command)) != f"kubectl-{plugin}":
            return False
        try:
            options = exec_options(plugin, args)
        except CaasError:
            return False
        return all(options.get(k) == v for k, v in keys.items())
    return check


def login_args(args: List[str], storage: str) -> List[str]:
    """get-token's arguments as written into the kubeconfig: the identity's, plus the storage choice."""
    return args + (["--token-storage", storage] if storage != "disk" else [])


def store_login(plugin: str, args: List[str], entry: Dict[str, Any], storage: str) -> Dict[str, Any]:
    """Save a fresh login's cache entry under its lock; returns the entry it replaced (secrets loaded)."""
    from kubectl_caas import cache, secret_store
    from kubectl_caas.exec_plugin import entry_path_for, exec_options

    from kubectl_caas.clock import note_offset

    path = entry_path_for(plugin, exec_options(plugin, args))
    with cache.EntryLock(path):
        previous = secret_store.load(plugin, path, cache.read_entry(path)) or {}
        note_offset(plugin, entry, previous)
        secret_store.save(plugin, path, entry, storage)
    return previous


def exec_user(plugin: str, args: List[str]) -> Dict[str, Any]:
    """The kubeconfig user stanza that runs this plugin's get-token with `args`."""
    from kubectl_caas import kubeconfig

    command = f"kubectl-{plugin}"
    return kubeconfig.exec_user_body(plugin_command(command), args,
                                     f"{command} is part of kubectl-caas: pipx install kubectl-caas")


TOKEN_STORAGE_HELP = ("where long-term secrets are kept: disk (the 0600 token cache) or keyring (the OS keyring; "
                      "falls back to disk when there is none) [env KUBECTL_CAAS_TOKEN_STORAGE]")


def token_storage(flag: Optional[str]) -> str:
    value = flag or os.environ.get("KUBECTL_CAAS_TOKEN_STORAGE") or "disk"
    if value not in ("disk", "keyring"):
        raise UsageError(f"--token-storage must be disk or keyring, not {value!r}")
    return value


def add_completion_command(app: typer.Typer, plugin: str) -> None:
    @app.command("completion")
    def completion(shell: str = typer.Argument(..., help="bash or zsh"),
                   debug: bool = typer.Option(False, "--debug", help="accepted for symmetry; prints nothing more")) -> None:
        """Print the shell completion script for bash or zsh.

        Example: source <(kubectl-PLUGIN completion bash)    # add it to ~/.bashrc

        `kubectl PLUGIN <TAB>` completes through kubectl_complete-PLUGIN, installed alongside.
        """
        if shell not in ("bash", "zsh"):
            raise UsageError(f"no completion for {shell!r}", "use bash or zsh")
        from typer._completion_shared import get_completion_script

        name = f"kubectl-{plugin}"
        print(get_completion_script(prog_name=name, complete_var=f"_{name.replace('-', '_').upper()}_COMPLETE",
                                    shell=shell))

    completion.__doc__ = (completion.__doc__ or "").replace("PLUGIN", plugin)


def add_get_token_command(app: typer.Typer, plugin: str) -> None:
    """`get-token` in the CLI's help; the console script answers it before typer is even imported."""

    @app.command("get-token", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def get_token_command(ctx: typer.Context) -> None:
        """Print an ExecCredential for kubectl (kubectl runs this for you; see `get-token --help`)."""
        from kubectl_caas.exec_plugin import get_token

        raise typer.Exit(get_token(plugin, list(ctx.args)))


def status_rows(plugin: str, context: Optional[str], kubeconfig_path: Optional[str], debug: bool):
    """(marker, context name, get-token options, cache entry or None) for each of the plugin's
    contexts (or the one asked for); `*` marks the current context."""
    enable_debug(debug)
    merged, rows = plugin_contexts(plugin, context, context is None, kubeconfig_path)
    if not rows:
        say(f"No kubectl-{plugin} contexts: run `kubectl {plugin} login`")
    from kubectl_caas import cache

    for name, _body, args in rows:
        options, path, _entry = cache_entry_for(plugin, args)
        marker = "*" if name == merged.current_context else " "
        state, entry, reason = cache.inspect_entry(path)
        if state in (cache.UNREADABLE, cache.UNTRUSTED):
            result(f"{marker} {name}: cache entry unusable ({reason}); `kubectl {plugin} login` replaces it")
            continue
        yield marker, name, options, entry

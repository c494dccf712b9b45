"""Console-script entry points and the get-token hot path.

kubectl starts the credential plugin in a new process for every command, so `get-token` answers
from the cache with the standard library alone. Only when the cached token is missing or about to
expire does it take the entry's lock and import a backend (keystone or oidc), which talks to the
server. Every other command hands over to the typer CLI, imported lazily.
"""
from __future__ import annotations

import json
import os
import sys
import time

from kubectl_caas import cache
from kubectl_caas.errors import EXIT_USAGE, CaasError

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
DEFAULT_EXEC_API_VERSION = EXEC_API_VERSIONS[0]

# Options that get-token accepts, per plugin; all of them non-secret. Login writes them into the
# kubeconfig's exec args.
GET_TOKEN_OPTIONS = {
    "openstack": ("auth-url", "user", "user-id", "user-domain", "user-domain-id", "project", "project-id",
                  "project-domain", "project-domain-id", "cacert", "application-credential-id",
                  "os-cloud", "token-storage"),
    "iam": ("issuer", "client-id", "scope", "audience", "token", "cacert", "token-storage"),
}
FLAGS = ("debug",)

# Which option values identify a cache entry (never a secret).
CACHE_KEY_FIELDS = {
    "openstack": (("auth_url", "auth-url"), ("user", "user"), ("user_id", "user-id"),
                  ("user_domain", "user-domain"), ("user_domain_id", "user-domain-id"),
                  ("project", "project"), ("project_id", "project-id"),
                  ("project_domain", "project-domain"), ("project_domain_id", "project-domain-id"),
                  ("application_credential_id", "application-credential-id")),
    "iam": (("issuer", "issuer"), ("client_id", "client-id"), ("scope", "scope"), ("audience", "audience")),
}

MAX_RENEW_MARGIN = 60.0
LAST_EXPIRY = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment an RFC 3339 timestamp can say


def renew_margin(lifetime: float) -> float:
    """Renew this long before expiry: at most 60 s and at most a tenth of the token's lifetime."""
    return max(0.0, min(MAX_RENEW_MARGIN, lifetime / 10.0))


def openstack_main() -> None:
    _main("openstack")


def iam_main() -> None:
    _main("iam")


def _main(plugin: str) -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "get-token":
        sys.exit(get_token(plugin, argv[1:]))
    # Anything else is for people, not for kubectl's hot path: load the full CLI.
    if plugin == "openstack":
        from kubectl_caas.cli.openstack import run
    else:
        from kubectl_caas.cli.iam import run
    run(argv)


# ---------------------------------------------------------------------------------------------
# get-token


def parse_get_token_args(plugin: str, argv: List[str]) -> Tuple[Dict[str, str], Dict[str, bool]]:
    """Parse `--name value`, `--name=value` and the flags in FLAGS; anything else is a usage error."""
    allowed = GET_TOKEN_OPTIONS[plugin]
    options: Dict[str, str] = {}
    flags: Dict[str, bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise CaasError(f"get-token: unexpected argument {arg!r}", "see `kubectl-"
                            f"{plugin} get-token --help`", EXIT_USAGE)
        name, has_value, value = arg[2:].partition("=")
        if name in FLAGS and not has_value:
            flags[name] = True
        elif name == "help" or name == "h":
            flags["help"] = True
        elif name in allowed:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise CaasError(f"get-token: option --{name} needs a value", None, EXIT_USAGE)
                value = argv[i]
            options[name] = value
        else:
            raise CaasError(f"get-token: unknown option --{name}",
                            f"see `kubectl-{plugin} get-token --help`", EXIT_USAGE)
        i += 1
    return options, flags


def exec_info() -> Tuple[str, Optional[bool]]:
    """The apiVersion kubectl asked for, and whether it says a person is at a terminal."""
    raw = os.environ.get("KUBERNETES_EXEC_INFO")
    if not raw:
        return DEFAULT_EXEC_API_VERSION, None
    try:
        info = json.loads(raw)
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


def bearer_kind(plugin: str, options: Mapping[str, str]) -> str:
    if plugin == "openstack":
        return "keystone"
    kind = options.get("token", "id")
    if kind not in ("id", "access"):
        raise CaasError(f"get-token: --token must be 'id' or 'access', not {kind!r}", None, EXIT_USAGE)
    return kind


def cache_fields(plugin: str, options: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """The identity an entry belongs to, from the options as login wrote them (already normalised)."""
    return {field: options.get(option) for field, option in CACHE_KEY_FIELDS[plugin]}


def exec_options(plugin: str, args: List[str]) -> Dict[str, str]:
    """get-token's options from a kubeconfig user's exec args (with or without `get-token` first)."""
    options, _ = parse_get_token_args(plugin, list(args[1:] if args[:1] == ["get-token"] else args))
    return options


def entry_path_for(plugin: str, options: Mapping[str, str]) -> str:
    """The cache entry these get-token options name."""
    return cache.entry_path(plugin, cache_fields(plugin, options))


def cached_token(entry: Optional[Mapping[str, Any]], kind: str) -> Optional[Mapping[str, Any]]:
    """The entry's bearer of this kind, or None when the entry does not hold a well-formed one."""
    tokens = entry.get("tokens") if isinstance(entry, dict) else None
    token = tokens.get(kind) if isinstance(tokens, dict) else None
    if not isinstance(token, dict) or not isinstance(token.get("value"), str) or not token["value"]:
        return None
    try:
        expires_at = float(token["expires_at"])
        issued_at = float(token.get("issued_at") or 0)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    # NaN and infinity fail these comparisons too; beyond year 9999 no date can be formatted.
    if not (0 < expires_at < LAST_EXPIRY and 0 <= issued_at < LAST_EXPIRY):
        return None
    return token


def fresh_token(entry: Optional[Mapping[str, Any]], kind: str, now: float) -> Optional[Mapping[str, Any]]:
    """The cached bearer of this kind when it is still good beyond the renewal margin."""
    token = cached_token(entry, kind)
    if token is None:
        return None
    expires_at = float(token["expires_at"])
    issued_at = float(token.get("issued_at") or now)
    if now < expires_at - renew_margin(expires_at - issued_at):
        return token
    return None


def exec_credential(api_version: str, token: Mapping[str, Any]) -> str:
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(token["expires_at"])))
    return json.dumps({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": token["value"], "expirationTimestamp": expiry},
    })


GET_TOKEN_HELP = """Usage: kubectl-{plugin} get-token [OPTIONS]

Print an ExecCredential for kubectl on stdout. kubectl runs this for you: `login` writes the
options below into your kubeconfig. Answers from the cache while the token is good; otherwise
renews it silently ({renew}) and, when kubectl says a person is at a terminal, asks them.

Options: {options} --debug
Environment: KUBERNETES_EXEC_INFO (set by kubectl), {environment}

Example: kubectl-{plugin} get-token {example}
{exit_codes}
"""
GET_TOKEN_EXAMPLE = {
    "openstack": "--auth-url https://keystone.example.org:5000/v3 --user alice --project CMS",
    "iam": "--issuer https://iam.cloud.infn.it --client-id my-client",
}
GET_TOKEN_ENVIRONMENT = {
    "openstack": "OS_APPLICATION_CREDENTIAL_ID, OS_APPLICATION_CREDENTIAL_SECRET, OS_PASSWORD, OS_PASSCODE, "
                 "KUBECTL_CAAS_CACHE_DIR, KUBECTL_CAAS_TIMEOUT",
    "iam": "IAM_CLIENT_SECRET, KUBECTL_CAAS_CACHE_DIR, KUBECTL_CAAS_TIMEOUT",
}
RENEW_SOURCES = {
    "openstack": "remembered application credential, OS_APPLICATION_CREDENTIAL_ID/_SECRET, the clouds.yaml "
                 "entry used at login, OS_PASSWORD",
    "iam": "refresh token",
}


def get_token(plugin: str, argv: List[str]) -> int:
    debug = "--debug" in argv
    try:
        options, flags = parse_get_token_args(plugin, argv)
        if flags.get("help"):
            from kubectl_caas.errors import EXIT_CODES_HELP

            sys.stdout.write(GET_TOKEN_HELP.format(
                plugin=plugin, renew=RENEW_SOURCES[plugin], exit_codes=EXIT_CODES_HELP,
                example=GET_TOKEN_EXAMPLE[plugin], environment=GET_TOKEN_ENVIRONMENT[plugin],
                options=" ".join(f"--{name}" for name in GET_TOKEN_OPTIONS[plugin])))
            return 0
        api_version, interactive = exec_info()
        kind = bearer_kind(plugin, options)
        path = entry_path_for(plugin, options)
        token = fresh_token(cache.read_entry(path), kind, time.time())
        if token is None:
            token = _renew(plugin, options, kind, path, interactive, debug)
        sys.stdout.write(exec_credential(api_version, token) + "\n")
        return 0
    except CaasError as exc:
        from kubectl_caas.errors import report

        report(plugin, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"kubectl-{plugin}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - kubectl users must never see a traceback
        return report_unexpected(plugin, exc, debug)


def report_unexpected(plugin: str, exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    from kubectl_caas.terminal import show

    show(f"kubectl-{plugin}: unexpected error: {type(exc).__name__}: {exc} "
         "(rerun with --debug for details and report it)")
    return 1


def _renew(plugin: str, options: Dict[str, str], kind: str, path: str, interactive: Optional[bool],
           debug: bool) -> Mapping[str, Any]:
    if interactive is None:  # not run by kubectl: a person at a terminal may answer
        interactive = sys.stdin.isatty()
    with cache.EntryLock(path):
        # Another process may have renewed the entry while we waited for the lock.
        entry = cache.read_entry(path)
        token = fresh_token(entry, kind, time.time())
        if token is not None:
            return token
        from kubectl_caas import secret_store

        entry = secret_store.load(plugin, path, entry)
        from kubectl_caas import http

        if debug:
            http.enable_debug()
        if plugin == "openstack":
            from kubectl_caas import keystone as backend
            server = ("Keystone", options.get("auth-url", ""))
        else:
            from kubectl_caas import oidc as backend  # type: ignore[no-redef]
            server = ("the OIDC provider", options.get("issuer", ""))
        if interactive:
            new_entry = backend.renew(options, entry, interactive=True)
        else:
            # kubectl is waiting and nobody can answer a prompt: one time budget for the whole renewal.
            with http.Deadline(*server):
                new_entry = backend.renew(options, entry, interactive=False)
        token = cached_token(new_entry, kind)
        if token is None:
            raise CaasError(f"the {plugin} server returned no usable {kind} token")
        from kubectl_caas.clock import note_offset

        note_offset(plugin, new_entry, entry)
        # kubectl gets the new token even when it cannot be saved (a full disk, say): the renewal
        # happened, and a refresh token rotated by it must not be thrown away with an error.
        problem = secret_store.save_renewed(plugin, path, new_entry, options.get("token-storage"))
        if problem:
            from kubectl_caas.terminal import show

            show(f"kubectl-{plugin}: warning: {problem}")
        return token

"""Who a plugin logs in as, and where, declared once per option.

Each plugin has a table of Options (see plugins.py). Everything that talks about an identity reads
that table: get-token's argument parsing, the exec args a login writes into the kubeconfig, the
cache key, the "same user" check before a context is overwritten, the CLIs' environment fallbacks
and the `[env ...]` part of their help. Adding an option is one line in a table.

Standard library only and cheap to import: get-token parses its arguments here on every kubectl
command. The typed identities (frozen dataclasses) are made by `identity_type`, which imports
dataclasses only when a login or a renewal needs them.
"""
from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs ~3 ms on every kubectl command
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# get-token's own flags, besides the identity's options.
GET_TOKEN_FLAGS = ("debug", "force-refresh")


class Option:
    """One setting of an identity.

    flag: the command-line name (`--auth-url`); field: the Python name (`auth_url`), also the
    cache-key name. env: variables a login falls back to, in order. key: part of the cache key.
    person: names the user and where (not the project), for "is this context ours?". secret: a
    value kept nowhere but the cache (never an exec arg, a key or a log line). login_only: read by
    a login but not written into the kubeconfig (secrets, and selectors such as an application
    credential's name, which the login turns into its id). renewal: get-token, renewing silently,
    also reads it from the environment. short: a one-letter flag; hidden: left out of --help (a
    password on the command line, for the seed page's syntax). pair: the field of the other
    spelling of the same thing (a name and an id): a flag for either names it outright.
    """

    __slots__ = ("flag", "field", "help", "env", "key", "person", "secret", "login_only", "renewal", "short",
                 "hidden", "pair")

    def __init__(self, flag: str, help: str, env: Sequence[str] = (), key: bool = False, person: bool = False,
                 secret: bool = False, login_only: bool = False, renewal: bool = False, short: Optional[str] = None,
                 hidden: bool = False, pair: Optional[str] = None):
        self.flag = flag
        self.field = flag.replace("-", "_")
        self.help = help
        self.env = tuple(env)
        self.key = key
        self.person = person
        self.secret = secret
        self.login_only = login_only or secret
        self.renewal = renewal
        self.short = short
        self.hidden = hidden
        self.pair = pair

    def __repr__(self) -> str:
        return f"Option({self.flag!r})"

    def help_text(self) -> str:
        """The help with its environment variables, as every command shows it."""
        return f"{self.help} [env {', '.join(self.env)}]" if self.env else self.help

    def from_environment(self, environ: Mapping[str, str]) -> Optional[str]:
        return next((environ[name] for name in self.env if environ.get(name)), None)


def exec_options(options: Sequence[Option]) -> Tuple[Option, ...]:
    """The options get-token takes (and a login writes into the kubeconfig)."""
    return tuple(o for o in options if not o.login_only)


def parse_args(options: Sequence[Option], argv: Sequence[str], command: str) -> Tuple[Dict[str, str], Dict[str, bool]]:
    """get-token's `--name value` / `--name=value` and its flags into ({field: value}, {flag: True}).

    Anything else is a usage error (CaasError, imported only then).
    """
    by_flag = {o.flag: o for o in exec_options(options)}
    values: Dict[str, str] = {}
    flags: Dict[str, bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise _usage(f"get-token: unexpected argument {arg!r}", f"see `{command} get-token --help`")
        name, has_value, value = arg[2:].partition("=")
        if name in GET_TOKEN_FLAGS and not has_value:
            flags[name] = True
        elif name in ("help", "h"):
            flags["help"] = True
        elif name in by_flag:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise _usage(f"get-token: option --{name} needs a value")
                value = argv[i]
            values[by_flag[name].field] = value
        else:
            raise _usage(f"get-token: unknown option --{name}", f"see `{command} get-token --help`")
        i += 1
    return values, flags


def _usage(message: str, hint: Optional[str] = None):
    from kubectl_caas.errors import UsageError

    return UsageError(message, hint)


def to_args(options: Sequence[Option], values: Mapping[str, Any]) -> List[str]:
    """The exec args for these values: `get-token --flag value ...` in table order, empty ones left out."""
    args = ["get-token"]
    for option in exec_options(options):
        value = values.get(option.field)
        if value not in (None, ""):
            args += [f"--{option.flag}", str(value)]
    return args


def from_args(options: Sequence[Option], args: Sequence[str], command: str) -> Dict[str, str]:
    """Values from a kubeconfig user's exec args (with or without `get-token` first)."""
    values, _flags = parse_args(options, list(args[1:] if args[:1] == ["get-token"] else args), command)
    return values


def cache_fields(options: Sequence[Option], values: Mapping[str, Any]) -> Dict[str, Optional[str]]:
    """What identifies a cache entry, in table order (the order names its file readably)."""
    return {o.field: values.get(o.field) for o in options if o.key}


def same_person(options: Sequence[Option], ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    """Do two sets of values name the same user (at the same place)?"""
    return all(theirs.get(o.field) == ours.get(o.field) for o in options if o.person and ours.get(o.field))


def environment_values(options: Iterable[Option], environ: Mapping[str, str]) -> Dict[str, Optional[str]]:
    return {o.field: o.from_environment(environ) for o in options}


_types: Dict[Tuple[str, int], Any] = {}


def identity_type(name: str, options: Sequence[Option], base: type) -> Any:
    """A frozen dataclass named `name` with one Optional[str] field per non-secret option, on top of
    `base` (whose methods give the fields their meaning). Made once per table."""
    cache_key = (name, id(options))
    if cache_key not in _types:
        import dataclasses

        fields = [(o.field, "Optional[str]", dataclasses.field(default=None)) for o in exec_options(options)]
        _types[cache_key] = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True,
                                                       namespace={"OPTIONS": tuple(options)})
    return _types[cache_key]

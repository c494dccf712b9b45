"""Command-line options, declared once.

The identity's options come from the plugin's table (plugins.py): `with_identity_options` adds one
typer option per table row to a command, with its `[env ...]` help, and hands the command their
values as one dict keyed by field. The options every command shares are declared below.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Sequence

import typer

from kubectl_caas.identity import Option
from kubectl_caas.plugins import Plugin

Kubeconfig = typer.Option(None, "--kubeconfig", help="kubeconfig file to use [default: KUBECONFIG, ~/.kube/config]")
Debug = typer.Option(False, "--debug", help="print each HTTP request and answer to stderr, secrets redacted")
Server = typer.Option(None, "--server", help="Kubernetes API server URL [env CAAS_SERVER]")
CertificateAuthority = typer.Option(None, "--certificate-authority",
                                    help="CA bundle of the API server [env CAAS_CERTIFICATE_AUTHORITY]")
Force = typer.Option(False, "--force", "-f", help="overwrite a context of the same name that points elsewhere")
StatusContext = typer.Option(None, "--context", help="only this context")
LogoutContext = typer.Option(None, "--context", help="log out of this context [default: current]")


def profile(plugin: Plugin) -> Any:
    return typer.Option(None, "--profile", help=f"site profile with defaults [env KUBECTL_CAAS_PROFILE; "
                                                f"default: {plugin.default_profile}]")


def logout_all(plugin: Plugin) -> Any:
    return typer.Option(False, "--all", help=f"log out of every {plugin.command} context")


def _flag_of(option: Option) -> Optional[Any]:
    """The typer option for a table row; None for a secret that may never be typed on a command line."""
    if option.secret and not option.hidden:
        return None
    names = [f"--{option.flag}"] + ([option.short] if option.short else [])
    return typer.Option(None, *names, help=option.help_text(), hidden=option.hidden)


def with_identity_options(plugin: Plugin, only: Optional[Sequence[str]] = None) -> Callable[[Callable], Callable]:
    """Give a command one option per row of the plugin's table (or the rows `only` names), after its
    own parameters; it receives their values as `identity_flags` ({field: value or None})."""
    rows = [o for o in plugin.options if (only is None or o.field in only) and _flag_of(o) is not None]

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "identity_flags"]
        added = [inspect.Parameter(o.field, inspect.Parameter.KEYWORD_ONLY, default=_flag_of(o),
                                   annotation=Optional[str]) for o in rows]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            flags = {o.field: kwargs.pop(o.field, None) for o in rows}
            return command(identity_flags=flags, **kwargs)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added)
        return wrapper
    return decorate

"""Running a plugin's typer app: the commands every plugin has (--version, completion, get-token),
the run's Runtime handed to each command through click's context, and one line for every way a
command can end badly (errors.report), never a traceback."""
from __future__ import annotations

from typing import List, NoReturn

import typer

try:  # typer >= 0.25 carries its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on older Pythons
    from click import exceptions as click_exc

from kubectl_caas.errors import EXIT_CODES_HELP, EXIT_USAGE, CaasError, report, report_unexpected
from kubectl_caas.plugins import Plugin
from kubectl_caas.runtime import Runtime

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_NO_ARGS_IS_HELP = getattr(click_exc, "NoArgsIsHelpError", ())
_ABORT = tuple({typer.Abort, getattr(click_exc, "Abort", typer.Abort)})
_EXIT = tuple({typer.Exit, getattr(click_exc, "Exit", typer.Exit)})


def new_app(plugin: Plugin, help_text: str) -> typer.Typer:
    """The plugin's app with --version, `completion` and `get-token` already in it."""
    app = typer.Typer(help=help_text + "\n\n" + EXIT_CODES_HELP, context_settings=CONTEXT_SETTINGS,
                      add_completion=True, no_args_is_help=True, rich_markup_mode=None,
                      pretty_exceptions_enable=False)
    _add_version_option(app, plugin)
    _add_completion_command(app, plugin)
    _add_get_token_command(app, plugin)
    return app


def runtime(ctx: typer.Context) -> Runtime:
    """The Runtime the console script made for this run (click keeps it as the context's obj)."""
    found = ctx.find_object(Runtime)
    return found if found is not None else Runtime()


def run_app(app: typer.Typer, plugin: Plugin, argv: List[str], rt: Runtime) -> NoReturn:
    try:
        result = app(args=argv, prog_name=plugin.command, standalone_mode=False, obj=rt)
    except CaasError as exc:
        report(plugin.command, exc)
        raise SystemExit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:
        print(exc.ctx.get_help() if getattr(exc, "ctx", None) else str(exc))
        raise SystemExit(0)
    except click_exc.UsageError as exc:
        hint = f"see `{plugin.command} {exc.ctx.info_name if exc.ctx and exc.ctx.parent else ''} --help`"
        report(plugin.command, CaasError(exc.format_message().rstrip("."), " ".join(hint.split())))
        raise SystemExit(EXIT_USAGE)
    except (*_ABORT, KeyboardInterrupt):
        report(plugin.command, None, "interrupted")
        raise SystemExit(130)
    except _EXIT as exc:
        raise SystemExit(exc.exit_code)
    except click_exc.ClickException as exc:
        report(plugin.command, CaasError(exc.format_message()))
        raise SystemExit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - never a traceback for users
        raise SystemExit(report_unexpected(plugin.command, exc, rt.debug))
    raise SystemExit(result if isinstance(result, int) else 0)


def _add_version_option(app: typer.Typer, plugin: Plugin) -> None:
    def show_version(value: bool) -> None:
        if value:
            from importlib.metadata import version

            from kubectl_caas.settings import baked_site

            # A site build says which site it carries: its defaults decide where logins go.
            site = baked_site()
            built_for = f", site {site['name']} (built {site['built']})" if site else ""
            print(f"{plugin.command} (kubectl-caas) {version('kubectl-caas')}{built_for}")
            raise typer.Exit(0)

    @app.callback()
    def main(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                          help="print the version and exit")) -> None:
        pass


def _add_completion_command(app: typer.Typer, plugin: Plugin) -> None:
    @app.command("completion")
    def completion(shell: str = typer.Argument(..., help="bash or zsh"),
                   debug: bool = typer.Option(False, "--debug", help="accepted for symmetry; prints nothing more")) -> None:
        """Print the shell completion script for bash or zsh.

        Example: source <(COMMAND completion bash)    # add it to ~/.bashrc

        `kubectl PLUGIN <TAB>` completes through kubectl_complete-PLUGIN, installed alongside.
        """
        from kubectl_caas.errors import UsageError

        if shell not in ("bash", "zsh"):
            raise UsageError(f"no completion for {shell!r}", "use bash or zsh")
        from typer._completion_shared import get_completion_script

        name = plugin.command
        print(get_completion_script(prog_name=name, complete_var=f"_{name.replace('-', '_').upper()}_COMPLETE",
                                    shell=shell))

    completion.__doc__ = (completion.__doc__ or "").replace("COMMAND", plugin.command).replace("PLUGIN", plugin.name)


def _add_get_token_command(app: typer.Typer, plugin: Plugin) -> None:
    """`get-token` in the CLI's help; the console script answers it before typer is even imported."""

    @app.command("get-token", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def get_token_command(ctx: typer.Context) -> None:
        """Print an ExecCredential for kubectl (kubectl runs this for you; see `get-token --help`)."""
        from kubectl_caas.exec_plugin import get_token

        raise typer.Exit(get_token(plugin, list(ctx.args), runtime(ctx)))

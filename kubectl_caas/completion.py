"""Shell completion for `kubectl openstack <TAB>` and `kubectl iam <TAB>`.

kubectl (1.26+) completes a plugin's arguments by running `kubectl_complete-<plugin>` from PATH
with the words typed so far, the last one being the word to complete, and reads cobra's format:
one candidate per line (`value<TAB>description`), then `:<directive>`. Direct use of the plugins
(`kubectl-openstack <TAB>`) is covered by typer's own `--install-completion`.
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    from kubectl_caas.plugins import Plugin

NO_FILE_COMPLETION = 4  # cobra's ShellCompDirectiveNoFileComp
DEFAULT = 0  # let the shell complete file names (for options that take paths)
PATH_OPTIONS = {"--cacert", "--certificate-authority", "--kubeconfig"}


def candidates(plugin: Plugin, words: List[str]) -> Tuple[List[str], int]:
    import typer.main

    group = typer.main.get_command(importlib.import_module(plugin.cli).app)
    current = words[-1] if words else ""
    typed = words[:-1]
    if typed and typed[-1] in PATH_OPTIONS:
        return [], DEFAULT
    command_name = next((w for w in typed if not w.startswith("-")), None)
    command = group.commands.get(command_name) if command_name else None  # type: ignore[attr-defined]
    if command is None:
        found = [f"{name}\t{(cmd.get_short_help_str(60) or '')}" for name, cmd in group.commands.items()
                 if name.startswith(current) and not getattr(cmd, "hidden", False)]
        return found, NO_FILE_COMPLETION
    found = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        for option in getattr(param, "opts", []):
            if option.startswith("--") and option.startswith(current) and option not in typed:
                found.append(f"{option}\t{(getattr(param, 'help', '') or '').split('[')[0].strip()[:60]}")
    return found, NO_FILE_COMPLETION


def main(plugin: Plugin) -> None:
    try:
        found, directive = candidates(plugin, sys.argv[1:] or [""])
    except Exception:  # noqa: BLE001 - a completion must never print a traceback into the shell
        found, directive = [], DEFAULT
    for line in found:
        print(line)
    print(f":{directive}")

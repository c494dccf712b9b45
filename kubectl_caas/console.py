"""The console scripts: `kubectl-openstack`, `kubectl-iam` and kubectl's `kubectl_complete-*`.

`get-token` is answered by exec_plugin without loading the CLI (kubectl runs it for every
command); anything else goes to the plugin's typer CLI, imported only then. Each run gets one
Runtime (runtime.py) with its side effects.
"""
from __future__ import annotations

import sys

from kubectl_caas.plugins import PLUGINS


def _main(name: str) -> None:
    plugin = PLUGINS[name]
    argv = sys.argv[1:]
    from kubectl_caas.runtime import Runtime

    runtime = Runtime(debug="--debug" in argv)
    if argv and argv[0] == "get-token":
        from kubectl_caas.exec_plugin import get_token

        sys.exit(get_token(plugin, argv[1:], runtime))
    import importlib

    importlib.import_module(plugin.cli).run(argv, runtime)


def openstack_main() -> None:
    _main("openstack")


def iam_main() -> None:
    _main("iam")


def openstack_complete() -> None:
    from kubectl_caas.completion import main

    main(PLUGINS["openstack"])


def iam_complete() -> None:
    from kubectl_caas.completion import main

    main(PLUGINS["iam"])

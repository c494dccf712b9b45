"""kubectl conventions: plugin discovery, `kubectl openstack|iam ...`, --version, completion, --help."""
from __future__ import annotations

import re

import pytest

from tests.integration.harness import Workspace

PLUGINS = ("openstack", "iam")
COMMANDS = {"openstack": ("login", "get-token", "status", "projects", "logout", "completion"),
            "iam": ("login", "get-token", "status", "logout", "completion")}


def test_kubectl_plugin_list_finds_both_plugins(workspace: Workspace):
    result = workspace.kubectl("plugin", "list")
    assert result.returncode == 0, result.stderr
    found = {line.rsplit("/", 1)[-1] for line in result.stdout.splitlines() if "/" in line}
    assert {"kubectl-openstack", "kubectl-iam"} <= found
    assert "warning" not in result.stderr.lower()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugins_run_through_kubectl_and_know_their_version(workspace: Workspace, plugin):
    result = workspace.kubectl(plugin, "--version", cache_dir=False)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"kubectl-{plugin} \(kubectl-caas\) \d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_kubectl_completes_plugin_commands_and_options(workspace: Workspace, plugin):
    commands = workspace.kubectl("__complete", plugin, "lo", cache_dir=False)
    assert commands.returncode == 0, commands.stderr
    assert [line.split("\t")[0] for line in commands.stdout.splitlines()] == ["login", "logout", ":4"]
    options = workspace.kubectl("__complete", plugin, "login", "--kube", cache_dir=False)
    assert [line.split("\t")[0] for line in options.stdout.splitlines()] == ["--kubeconfig", ":4"]


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F"), ("zsh", "#compdef")])
def test_completion_scripts_for_bash_and_zsh(workspace: Workspace, plugin, shell, marker):
    result = workspace.run(f"kubectl-{plugin}", "completion", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout and f"kubectl-{plugin}" in result.stdout


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_command_has_help_with_an_example_and_the_environment_it_reads(workspace: Workspace, plugin):
    top = workspace.run(f"kubectl-{plugin}", "--help")
    assert top.returncode == 0 and "Exit codes:" in top.stdout
    for command in COMMANDS[plugin]:
        result = workspace.run(f"kubectl-{plugin}", command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Example" in result.stdout, command
    login = workspace.run(f"kubectl-{plugin}", "login", "--help").stdout
    expected = ("OS_AUTH_URL", "OS_USERNAME", "OS_PROJECT_NAME", "OS_CACERT", "OS_CLOUD", "CAAS_SERVER") \
        if plugin == "openstack" else ("IAM_ISSUER", "IAM_CLIENT_ID", "IAM_CLIENT_SECRET", "CAAS_SERVER")
    flat = " ".join(login.split())
    for variable in expected:
        assert variable in flat, variable

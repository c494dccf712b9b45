"""Small CLI helpers: the command written into the kubeconfig, durations, seed command lines."""
from __future__ import annotations

import sys

import pytest

from kubectl_caas import contexts
from kubectl_caas.cli import common
from kubectl_caas.cli.openstack import translate_seed_args
from kubectl_caas.errors import UsageError


def make_script(path, first_line: str, body: str = "") -> str:
    path.write_text(first_line + "\n" + body)
    path.chmod(0o755)
    return str(path)


def test_kubeconfig_command_skips_a_pyenv_shim_for_the_real_console_script(tmp_path, monkeypatch):
    shims, venv_bin = tmp_path / "shims", tmp_path / "venv" / "bin"
    shims.mkdir()
    venv_bin.mkdir(parents=True)
    shim = make_script(shims / "kubectl-openstack", "#!/usr/bin/env bash",
                       'set -e\nexport PYENV_ROOT="/root/.pyenv"\nexec "/root/.pyenv/libexec/pyenv" exec "$program" "$@"\n')
    real = make_script(venv_bin / "kubectl-openstack", f"#!{venv_bin}/python")
    monkeypatch.setattr(sys, "argv", [shim, "login"])
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert contexts.plugin_command("kubectl-openstack") == real


def test_kubeconfig_command_is_the_running_script_when_it_is_python(tmp_path, monkeypatch):
    script = make_script(tmp_path / "kubectl-openstack", "#!/usr/bin/env python3")
    monkeypatch.setattr(sys, "argv", [script, "login"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    assert contexts.plugin_command("kubectl-openstack") == script


def test_kubeconfig_command_is_a_single_file_build_even_beside_another_install(tmp_path, monkeypatch):
    # A single file starts with the sh front (which `exec`s, like a shim, but is ours): it stays
    # the command even when the interpreter's directory holds a pip-installed copy.
    from pathlib import Path

    # (its opening comment says `exec ` here, as a shim's body would: the front's mark decides)
    front = (Path(__file__).resolve().parents[2] / "scripts" / "kubectl_caas_front").read_text()
    single = make_script(tmp_path / "kubectl-openstack", "#!/bin/sh",
                         "# then exec python3 on a miss\n" + front.split("\n", 1)[1] + "PK\x03\x04")
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    make_script(venv_bin / "kubectl-openstack", f"#!{venv_bin}/python")
    monkeypatch.setattr(sys, "argv", [single, "login"])
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert contexts.plugin_command("kubectl-openstack") == single


@pytest.mark.parametrize("text, seconds", [("7d", 604800), ("12h", 43200), ("90m", 5400), ("3600", 3600),
                                           ("1w", 604800)])
def test_durations(text, seconds):
    assert common.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "7 days"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError):
        common.parse_duration(text)


@pytest.mark.parametrize("argv, expected", [
    (["-user=U", "-password=P", "-project=CMS"], ["login", "--user=U", "--password=P", "--project=CMS"]),
    (["-user", "U", "-password", "P", "-project", "CMS", "-force"],
     ["login", "--user", "U", "--password", "P", "--project", "CMS", "--force"]),
    (["--user=U", "--project=CMS"], ["login", "--user=U", "--project=CMS"]),
    (["login", "--user", "U"], ["login", "--user", "U"]),
    (["--help"], ["--help"]),
    (["-help"], ["--help"]),
    (["status"], ["status"]),
])
def test_seed_command_lines_become_a_login(argv, expected):
    assert translate_seed_args(argv) == expected

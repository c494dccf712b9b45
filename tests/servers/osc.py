"""python-openstackclient, the `openstack` command, as the oracle for how OpenStack's own tools read
clouds.yaml, secure.yaml and OS_* variables.

It lives in its own virtualenv so that openstacksdk and its many pins never meet the project's
environment (the project must work without them). Built once; parallel test workers and the
Makefile share it through a file lock.

Command line (used by the Makefile)::

    python tests/servers/osc.py ensure-venv [DIR]   # default DIR: .cache/osc-venv
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO_ROOT))

from tests.servers.keystone import _base_python, _file_lock, _venv_python  # noqa: E402

# Pinned so that "what the openstack command does" cannot change under the tests between runs.
OSC_VERSION = "10.5.0"
REQUIREMENTS = (f"python-openstackclient=={OSC_VERSION}", "openstacksdk==4.22.0", "keystoneauth1==5.18.1")
DEFAULT_VENV = REPO_ROOT / ".cache" / "osc-venv"
MARKER = "kubectl-caas-osc-requirements"


def ensure_osc_venv(path: str | Path = DEFAULT_VENV) -> Path:
    """A virtualenv with REQUIREMENTS at ``path`` unless it is already there; returns its `openstack`.

    The marker, written last, lists the requirements: an interrupted or outdated build is redone.
    """
    venv = Path(path).absolute()
    marker = venv / MARKER
    wanted = "\n".join(REQUIREMENTS) + "\n"
    with _file_lock(venv.with_name(venv.name + ".lock")):
        if marker.is_file() and marker.read_text() == wanted:
            return venv / "bin" / "openstack"
        if venv.exists():
            shutil.rmtree(venv)
        steps = [
            [_base_python(), "-m", "venv", str(venv)],
            [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
        ]
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"building the openstackclient venv failed: {' '.join(command)}\n"
                                   f"{done.stdout}\n{done.stderr}")
        marker.write_text(wanted)
    return venv / "bin" / "openstack"


def openstack_from_env() -> Path:
    """The `openstack` command: from $OSC_VENV if set (an existing venv), else the default venv, built if missing."""
    configured = os.environ.get("OSC_VENV")
    if configured:
        command = Path(configured) / "bin" / "openstack"
        if not command.exists():
            raise RuntimeError(f"OSC_VENV={configured} has no bin/openstack")
        return command
    return ensure_osc_venv(DEFAULT_VENV)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-venv", help="build the openstackclient virtualenv if missing")
    ensure.add_argument("directory", nargs="?", default=str(DEFAULT_VENV))
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    if not directory.is_absolute():
        directory = REPO_ROOT / directory
    print(ensure_osc_venv(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main())

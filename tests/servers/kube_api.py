"""KubeAPIStandIn: a test stand-in for a Kubernetes API server. It is NOT kube-apiserver.

No kube-apiserver can be installed on the test machines, so this small HTTPS server answers the
handful of requests that real kubectl makes for ``kubectl get pods [-n NS]``, ``kubectl version``
and ``kubectl auth whoami``, and authenticates bearer tokens the way CloudVeneto's CaaS does:

* Keystone, like k8s-keystone-auth: every request validates the token with
  ``GET {keystone_url}/auth/tokens`` (``X-Auth-Token`` and ``X-Subject-Token`` both set to the
  user's token, TLS verified against ``keystone_ca``). Nothing is cached, so a test can count
  validations. The token must be project-scoped. The user is ``token.user.name``, the groups are
  ``[project id]``, and the user may only touch the namespace ``project name .lower()``.
* OIDC / JWT, like kube-apiserver's JWT authenticator: ``iss`` must equal ``issuer_url`` exactly
  (a trailing slash counts), ``aud`` must contain ``audience``, ``exp`` must be in the future
  (``nbf``/``iat`` must not be in the future), the signature must verify against the JWKS named by
  the issuer's discovery document. The JWKS is fetched at the first token and again whenever a
  token names an unknown ``kid``.

A token that looks like a JWT whose ``iss`` is a configured issuer is judged by that issuer only;
any other token goes to Keystone when configured (kube-apiserver would also offer a failed JWT to
the webhook; the answer is the same 401, only Keystone's request count differs). Requests without
a valid token get 401 everywhere, ``/version`` included (as with ``--anonymous-auth=false``).
Discovery (``/version``, ``/api``, ``/apis``, ``/api/v1``, ...) and SelfSubjectReview are open to
every authenticated user; anything else is authorised by namespace.

Public API
----------
``KubeAPIStandIn(cert, key, *, ca_cert=None, keystone_url=None, keystone_ca=None, oidc=None,
host="127.0.0.1", port=0, server_version="v1.37.0-standin")``

* ``cert`` / ``key``: PEM files of the server certificate (SAN IP:127.0.0.1) and its key.
* ``ca_cert``: the CA that signed ``cert``; only kept as ``.ca_cert`` for building kubeconfigs.
* ``keystone_url``: Keystone's v3 endpoint, e.g. ``https://127.0.0.1:5000/v3``.
* ``oidc``: a list of :class:`OIDCIssuerConfig`.
* ``port=0`` picks a free port.

Use it as a context manager or call ``start()`` / ``stop()``. Attributes: ``.url``
(``https://127.0.0.1:<port>``), ``.host``, ``.port``, ``.ca_cert``, ``.requests`` (a snapshot list,
see below), ``.clear_requests()``, ``.keystone_validations`` (number of token validations sent to
Keystone), ``.jwks_fetches`` (per issuer URL).

Each request is recorded as a dict::

    {"method": "GET", "path": "/api/v1/namespaces/cms/pods", "query": "limit=500",
     "accept": "<Accept header>", "namespace": "cms" | None, "resource": "pods" | None,
     "verb": "list" | "get" | "create" | ... | None (non-resource paths),
     "user": "alice" | None, "groups": [...], "authenticator": "keystone" | "oidc" | None,
     "issuer": "<issuer url>" | None, "project": "<keystone project name>" | None,
     "status": 200, "error": "<why authentication or authorisation failed>" | None}

Command line (benchmarks, demos)::

    python -m tests.servers.kube_api --cert C --key K [--port N] [--ca-cert CA]
        [--keystone-url URL --keystone-ca CA]
        [--oidc-issuer URL --oidc-audience AUD [--oidc-ca CA] [--oidc-username-claim sub]
         [--oidc-username-prefix P] [--oidc-groups-claim groups] [--oidc-namespace NS ...]]
        [--oidc-json '{"issuer_url": ..., "audience": ...}' ...] [--verbose]

It prints the URL on stdout once listening and serves until SIGINT/SIGTERM; ``--verbose`` writes
each request record to stderr as a JSON line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests as requests_lib
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

# The signature algorithms kube-apiserver's JWT authenticator accepts.
DEFAULT_JWT_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
)
UPSTREAM_TIMEOUT = 10.0  # seconds for calls to Keystone and to the issuer


def _upstream_get(url: str, verify: str | bool, headers: dict[str, str] | None = None) -> Any:
    with requests_lib.Session() as session:
        # Ignore proxies and REQUESTS_CA_BUNDLE from the environment: upstreams are local and the
        # CA given to the stand-in is the one that must be used.
        session.trust_env = False
        return session.get(url, headers=headers, verify=verify, timeout=UPSTREAM_TIMEOUT)


@dataclass(frozen=True)
class OIDCIssuerConfig:
    """One trusted JWT issuer, mirroring kube-apiserver's ``jwt`` authenticator settings.

    ``allowed_namespaces=None`` lets the issuer's users into every namespace and cluster-scoped
    resources; a sequence limits them to those namespaces. ``discovery_url`` overrides
    ``<issuer without trailing slash>/.well-known/openid-configuration`` (the document found there
    must still name ``issuer_url`` as its issuer, as kube-apiserver requires).
    """

    issuer_url: str
    audience: str
    ca_file: Path | None = None
    username_claim: str = "sub"
    username_prefix: str = ""
    groups_claim: str | None = "groups"
    groups_prefix: str = ""
    allowed_namespaces: Sequence[str] | None = None
    discovery_url: str | None = None
    algorithms: Sequence[str] = DEFAULT_JWT_ALGORITHMS
    leeway_seconds: int = 0


@dataclass
class _Identity:
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]
    authenticator: str
    issuer: str | None = None
    project: str | None = None
    # None = every namespace and cluster-scoped resources; otherwise only these namespaces.
    namespaces: frozenset[str] | None = None


class _AuthError(Exception):
    """Authentication failed; the message is recorded (never sent to the client, like kube)."""


@dataclass
class _ResourceRequest:
    group: str
    version: str
    namespace: str | None
    resource: str | None  # None for discovery paths such as /api/v1
    name: str | None
    subresource: str | None


def _parse_resource_path(path: str) -> _ResourceRequest | None:
    """Split an API path like kube-apiserver's RequestInfoFactory; None for non-API paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return _ResourceRequest(group, version, None, None, None, None)
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, resource, tail = rest[1], rest[2], rest[3:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        # the Namespace object itself counts as being in its own namespace, as in kube
        return _ResourceRequest(group, version, rest[1], "namespaces", rest[1], None)
    else:
        ns, resource, tail = None, rest[0], rest[1:]
    name = tail[0] if tail else None
    sub = tail[1] if len(tail) > 1 else None
    return _ResourceRequest(group, version, ns, resource, name, sub)


def _verb(method: str, res: _ResourceRequest, query: str) -> str:
    if method == "GET":
        if res.name is None:
            return "watch" if "watch=true" in query or "watch=1" in query else "list"
        return "get"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if res.name else "deletecollection",
    }.get(method, method.lower())


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _peek_jwt(token: str) -> tuple[dict, dict] | None:
    """Header and claims of a compact JWS without verifying it; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (ValueError, binascii.Error, UnicodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


class _OIDCVerifier:
    """Verifies JWTs of one issuer; holds that issuer's JWKS, refreshed on an unknown kid."""

    def __init__(self, config: OIDCIssuerConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self.fetches = 0

    def _verify_arg(self) -> Any:
        return str(self.config.ca_file) if self.config.ca_file else True

    def _fetch_keys(self) -> KeySet:
        cfg = self.config
        discovery = cfg.discovery_url or cfg.issuer_url.rstrip("/") + "/.well-known/openid-configuration"
        resp = _upstream_get(discovery, self._verify_arg())
        resp.raise_for_status()
        doc = resp.json()
        # kube-apiserver builds its verifier with go-oidc's NewProvider(issuer.url), which refuses a
        # discovery document naming another issuer; a discoveryURL only changes where the document
        # is fetched from (a rewriting round-tripper), not that check.
        if doc.get("issuer") != cfg.issuer_url:
            raise _AuthError(f"discovery document names issuer {doc.get('issuer')!r}")
        resp = _upstream_get(doc["jwks_uri"], self._verify_arg())
        resp.raise_for_status()
        keys = KeySet.import_key_set(resp.json())
        self.fetches += 1
        return keys

    def _candidate_keys(self, kid: str | None) -> list:
        with self._lock:
            if self._keys is None or (kid is not None and not any(k.kid == kid for k in self._keys)):
                try:
                    self._keys = self._fetch_keys()
                except (requests_lib.RequestException, ValueError, KeyError, JoseError) as exc:
                    raise _AuthError(f"cannot fetch JWKS of {self.config.issuer_url}: {exc}") from exc
            keys = list(self._keys)
        if kid is None:
            return keys
        return [k for k in keys if k.kid == kid]

    def verify(self, token: str, header: dict) -> _Identity:
        cfg = self.config
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise _AuthError(f"JWT algorithm {alg!r} not accepted")
        keys = self._candidate_keys(header.get("kid"))
        if not keys:
            raise _AuthError(f"no key with kid {header.get('kid')!r} in the issuer's JWKS")
        decoded = None
        for key in keys:
            try:
                decoded = jwt.decode(token, key, algorithms=[alg])
                break
            except JoseError:
                continue
        if decoded is None:
            raise _AuthError("JWT signature does not verify")
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=cfg.leeway_seconds,
            iss={"essential": True, "value": cfg.issuer_url},
            aud={"essential": True, "value": cfg.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise _AuthError(f"JWT claims rejected: {exc}") from exc

        raw_user = claims.get(cfg.username_claim)
        if not isinstance(raw_user, str) or not raw_user:
            raise _AuthError(f"JWT has no string claim {cfg.username_claim!r}")
        # kube-apiserver insists on a verified address when the username is the email.
        if cfg.username_claim == "email" and claims.get("email_verified", True) is not True:
            raise _AuthError("email_verified is not true")
        groups: list[str] = []
        if cfg.groups_claim:
            raw_groups = claims.get(cfg.groups_claim, [])
            if isinstance(raw_groups, str):
                raw_groups = [raw_groups]
            if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
                raise _AuthError(f"JWT claim {cfg.groups_claim!r} is not a string list")
            groups = [cfg.groups_prefix + g for g in raw_groups]
        return _Identity(
            username=cfg.username_prefix + raw_user,
            uid="",
            groups=groups,
            extra={},
            authenticator="oidc",
            issuer=cfg.issuer_url,
            namespaces=None if cfg.allowed_namespaces is None else frozenset(cfg.allowed_namespaces),
        )


class KubeAPIStandIn:
    """Test stand-in for kube-apiserver; see the module docstring."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        ca_cert: Path | None = None,
        keystone_url: str | None = None,
        keystone_ca: Path | None = None,
        oidc: Sequence[OIDCIssuerConfig] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_version: str = "v1.37.0-standin",
    ) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.ca_cert = Path(ca_cert) if ca_cert else None
        self.keystone_url = keystone_url.rstrip("/") if keystone_url else None
        self.keystone_ca = Path(keystone_ca) if keystone_ca else None
        self._verifiers = {c.issuer_url: _OIDCVerifier(c) for c in (oidc or [])}
        self.host = host
        self._requested_port = port
        self.server_version = server_version
        self.port: int | None = None
        self._records: list[dict] = []
        self._lock = threading.Lock()
        self._keystone_validations = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.on_request: Any | None = None  # callable(record) for --verbose

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("KubeAPIStandIn is not started")
        return f"https://{self.host}:{self.port}"

    def start(self) -> KubeAPIStandIn:
        if self._server is not None:
            return self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.set_alpn_protocols(["http/1.1"])  # no HTTP/2 here; tell Go's client so up front

        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        server = _TLSServer((self.host, self._requested_port), Handler)
        # Handshake in the per-connection thread, not in the accept loop, so one slow client
        # cannot stall the others.
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="kube-api-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KubeAPIStandIn:  # noqa: PYI034 - typing.Self needs 3.11
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observations for tests ------------------------------------------------------------

    @property
    def requests(self) -> list[dict]:
        """A snapshot (copy) of the request records so far, oldest first."""
        with self._lock:
            return [dict(r) for r in self._records]

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def keystone_validations(self) -> int:
        with self._lock:
            return self._keystone_validations

    @property
    def jwks_fetches(self) -> dict[str, int]:
        return {issuer: v.fetches for issuer, v in self._verifiers.items()}

    def _record(self, record: dict) -> None:
        with self._lock:
            self._records.append(record)
        if self.on_request is not None:
            self.on_request(record)

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, token: str) -> _Identity:
        peeked = _peek_jwt(token)
        if peeked is not None:
            header, claims = peeked
            verifier = self._verifiers.get(claims.get("iss")) if isinstance(claims.get("iss"), str) else None
            if verifier is not None:
                return verifier.verify(token, header)
        if self.keystone_url is not None:
            return self._keystone_authenticate(token)
        if peeked is not None:
            raise _AuthError(f"JWT from an unknown issuer {peeked[1].get('iss')!r}")
        raise _AuthError("no authenticator accepts this token")

    def _keystone_authenticate(self, token: str) -> _Identity:
        with self._lock:
            self._keystone_validations += 1
        try:
            resp = _upstream_get(
                f"{self.keystone_url}/auth/tokens",
                str(self.keystone_ca) if self.keystone_ca else True,
                headers={"X-Auth-Token": token, "X-Subject-Token": token, "Accept": "application/json"},
            )
        except requests_lib.RequestException as exc:
            raise _AuthError(f"Keystone unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise _AuthError(f"Keystone answered {resp.status_code}")
        try:
            body = resp.json()["token"]
            user = body["user"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _AuthError(f"Keystone answer unreadable: {exc}") from exc
        project = body.get("project")
        if not project:
            raise _AuthError("Keystone token is not project-scoped")
        roles = [r.get("name", "") for r in body.get("roles", [])]
        extra = {
            "alpha.kubernetes.io/identity/roles": roles,
            "alpha.kubernetes.io/identity/project/id": [project.get("id", "")],
            "alpha.kubernetes.io/identity/project/name": [project.get("name", "")],
            "alpha.kubernetes.io/identity/user/domain/id": [user.get("domain", {}).get("id", "")],
            "alpha.kubernetes.io/identity/user/domain/name": [user.get("domain", {}).get("name", "")],
        }
        return _Identity(
            username=user["name"],
            uid=user.get("id", ""),
            groups=[project["id"]],
            extra=extra,
            authenticator="keystone",
            project=project["name"],
            namespaces=frozenset({project["name"].lower()}),
        )

    # -- API responses ---------------------------------------------------------------------

    def version_info(self) -> dict:
        core = self.server_version.lstrip("v").split("-")[0].split("+")[0].split(".")
        return {
            "major": core[0],
            "minor": core[1] if len(core) > 1 else "0",
            "gitVersion": self.server_version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none (Python stand-in)",
            "compiler": "none",
            "platform": "linux/amd64",
        }


_AUTHN_GROUP = "authentication.k8s.io"

_CORE_RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "list"],
            "shortNames": ["po"],
            "categories": ["all"],
        }
    ],
}

_AUTHN_RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": f"{_AUTHN_GROUP}/v1",
    "resources": [
        {
            "name": "selfsubjectreviews",
            "singularName": "selfsubjectreview",
            "namespaced": False,
            "kind": "SelfSubjectReview",
            "verbs": ["create"],
        },
    ],
}

_API_GROUPS = {
    "kind": "APIGroupList",
    "apiVersion": "v1",
    "groups": [
        {
            "name": _AUTHN_GROUP,
            "versions": [{"groupVersion": f"{_AUTHN_GROUP}/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": f"{_AUTHN_GROUP}/v1", "version": "v1"},
        }
    ],
}

# Columns kube-apiserver's table printer uses for pods; kubectl only needs the shape.
_POD_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name of the pod", "priority": 0},
    {"name": "Ready", "type": "string", "format": "", "description": "Ready containers", "priority": 0},
    {"name": "Status", "type": "string", "format": "", "description": "Pod phase or reason", "priority": 0},
    {"name": "Restarts", "type": "string", "format": "", "description": "Container restarts", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0},
]


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients closing mid-handshake or mid-keep-alive are normal here; keep test output clean.
        log.debug("connection from %s ended with an error", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-api-standin"
    sys_version = ""
    timeout = 30  # idle keep-alive connections close after this
    standin: KubeAPIStandIn

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        standin = self.standin
        split = urlsplit(self.path)
        path, query = split.path or "/", split.query
        body = self._read_body()
        res = _parse_resource_path(path)
        record: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "query": query,
            "accept": self.headers.get("Accept"),
            "namespace": res.namespace if res else None,
            "resource": res.resource if res else None,
            "verb": _verb(self.command, res, query) if res and res.resource else None,
            "user": None,
            "groups": [],
            "authenticator": None,
            "issuer": None,
            "project": None,
            "status": 500,
            "error": None,
        }
        try:
            code, answer = self._route(record, path, query, res, body)
        except Exception as exc:  # a bug here should show up as a 500 in the test, not a hang
            log.exception("stand-in failed on %s %s", self.command, path)
            code, answer = 500, _status(500, "InternalError", f"stand-in error: {exc}")
            record["error"] = repr(exc)
        record["status"] = code
        standin._record(record)
        self._send_json(code, answer)

    def _route(
        self, record: dict, path: str, query: str, res: _ResourceRequest | None, body: bytes
    ) -> tuple[int, dict]:
        standin = self.standin
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            record["error"] = "no bearer token"
            return 401, _status(401, "Unauthorized", "Unauthorized")
        try:
            ident = standin.authenticate(token)
        except _AuthError as exc:
            record["error"] = str(exc)
            return 401, _status(401, "Unauthorized", "Unauthorized")
        record.update(
            user=ident.username,
            groups=list(ident.groups),
            authenticator=ident.authenticator,
            issuer=ident.issuer,
            project=ident.project,
        )
        method = self.command

        # Non-resource and discovery paths: open to every authenticated user.
        if method == "GET":
            if path == "/version":
                return 200, standin.version_info()
            if path == "/api":
                return 200, {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{standin.host}:{standin.port}"}
                    ],
                }
            if path == "/apis":
                return 200, _API_GROUPS
            if path == "/api/v1":
                return 200, _CORE_RESOURCES
            if path == f"/apis/{_AUTHN_GROUP}":
                return 200, {"kind": "APIGroup", "apiVersion": "v1", **_API_GROUPS["groups"][0]}
            if path == f"/apis/{_AUTHN_GROUP}/v1":
                return 200, _AUTHN_RESOURCES
        if res is None or res.resource is None:
            return 404, _status(404, "NotFound", "the server could not find the requested resource", {})

        if (res.group, res.version, res.resource) == (_AUTHN_GROUP, "v1", "selfsubjectreviews"):
            if method != "POST":
                return 405, _status(405, "MethodNotAllowed", "the server does not allow this method")
            return 201, self._self_subject_review(ident, body)

        # Resource requests: authorise by namespace first (kube authorises before it routes).
        verb = record["verb"]
        if ident.namespaces is not None and res.namespace not in ident.namespaces:
            group = res.group
            where = f' in the namespace "{res.namespace}"' if res.namespace else " at the cluster scope"
            record["error"] = f"namespace {res.namespace!r} not allowed"
            return 403, _status(
                403,
                "Forbidden",
                f'{res.resource} is forbidden: User "{ident.username}" cannot {verb} resource '
                f'"{res.resource}" in API group "{group}"{where}',
                {"kind": res.resource, **({"name": res.name} if res.name else {})},
            )

        if (res.group, res.version, res.resource) == ("", "v1", "pods") and res.namespace:
            if verb == "list":
                return 200, self._pod_list()
            if verb == "get" and res.subresource is None:
                return 404, _status(
                    404, "NotFound", f'pods "{res.name}" not found', {"name": res.name, "kind": "pods"}
                )
            return 405, _status(405, "MethodNotAllowed", "the stand-in serves pods read-only")
        return 404, _status(404, "NotFound", "the server could not find the requested resource", {})

    def _pod_list(self) -> dict:
        # kubectl asks for a server-side Table (Accept: ...;as=Table;g=meta.k8s.io;v=v1);
        # other clients (e.g. the Python client) want a plain PodList.
        if "as=Table" in (self.headers.get("Accept") or ""):
            return {
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "1"},
                "columnDefinitions": _POD_COLUMNS,
                "rows": [],
            }
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}

    def _self_subject_review(self, ident: _Identity, body: bytes) -> dict:
        user_info: dict[str, Any] = {
            "username": ident.username,
            # kube-apiserver adds system:authenticated to every authenticated user
            "groups": list(ident.groups) + ["system:authenticated"],
        }
        if ident.uid:
            user_info["uid"] = ident.uid
        if ident.extra:
            user_info["extra"] = ident.extra
        return {
            "kind": "SelfSubjectReview",
            "apiVersion": f"{_AUTHN_GROUP}/v1",
            "metadata": {"creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "status": {"userInfo": user_info},
        }


# -- command line ------------------------------------------------------------------------------


def _oidc_from_json(text: str) -> OIDCIssuerConfig:
    data = json.loads(text)
    names = {f.name for f in dataclasses.fields(OIDCIssuerConfig)}
    unknown = set(data) - names
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown OIDC settings: {sorted(unknown)}")
    if data.get("ca_file"):
        data["ca_file"] = Path(data["ca_file"])
    return OIDCIssuerConfig(**data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.kube_api",
        description="Test stand-in for a Kubernetes API server (not kube-apiserver).",
    )
    parser.add_argument("--cert", type=Path, required=True, help="server certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="server key (PEM)")
    parser.add_argument("--ca-cert", type=Path, help="CA that signed --cert (informational)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--keystone-url", help="Keystone v3 endpoint, e.g. https://127.0.0.1:5000/v3")
    parser.add_argument("--keystone-ca", type=Path)
    parser.add_argument("--oidc-issuer")
    parser.add_argument("--oidc-audience")
    parser.add_argument("--oidc-ca", type=Path)
    parser.add_argument("--oidc-username-claim", default="sub")
    parser.add_argument("--oidc-username-prefix", default="")
    parser.add_argument("--oidc-groups-claim", default="groups")
    parser.add_argument("--oidc-namespace", action="append", help="allowed namespace (repeat); default all")
    parser.add_argument(
        "--oidc-json",
        action="append",
        type=_oidc_from_json,
        default=[],
        help="one more issuer as a JSON object of OIDCIssuerConfig fields (repeat)",
    )
    parser.add_argument("--server-version", default="v1.37.0-standin")
    parser.add_argument("--verbose", action="store_true", help="each request record to stderr as JSON")
    args = parser.parse_args(argv)

    issuers = list(args.oidc_json)
    if args.oidc_issuer:
        if not args.oidc_audience:
            parser.error("--oidc-issuer needs --oidc-audience")
        issuers.append(
            OIDCIssuerConfig(
                issuer_url=args.oidc_issuer,
                audience=args.oidc_audience,
                ca_file=args.oidc_ca,
                username_claim=args.oidc_username_claim,
                username_prefix=args.oidc_username_prefix,
                groups_claim=args.oidc_groups_claim or None,
                allowed_namespaces=args.oidc_namespace,
            )
        )
    standin = KubeAPIStandIn(
        args.cert,
        args.key,
        ca_cert=args.ca_cert,
        keystone_url=args.keystone_url,
        keystone_ca=args.keystone_ca,
        oidc=issuers,
        host=args.host,
        port=args.port,
        server_version=args.server_version,
    )
    if args.verbose:
        standin.on_request = lambda rec: print(json.dumps(rec), file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with standin:
        print(standin.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

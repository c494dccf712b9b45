"""Run the real test OpenID provider (``tests/servers/oidc/provider.mjs``, oidc-provider 9 on Node).

    from tests.servers.tls import make_pki
    from tests.servers.oidc_provider import OIDCProvider

    with OIDCProvider(make_pki(tmpdir), id_token_ttl=20) as op:
        op.issuer            # "https://127.0.0.1:<port>/" (exactly what it serves and signs)
        op.client_id         # public client for the device flow ("kubectl-caas-test")
        op.confidential_client_id, op.confidential_client_secret   # the same, confidential
        op.token_requests("refresh_token")   # parsed request-log lines of POST /token
        op.introspect(token)                 # RFC 7662 answer, via a confidential client
        op.suspend("alice")                  # her refresh now gets 401 unauthorized

By default it behaves like INDIGO IAM (``iam_like=True``: IAM's paths, issuer with a trailing
slash, IAM's device endpoint, errors, tokens and registration; see provider.mjs's header);
``iam_like=False`` gives plain oidc-provider behaviour for tests of other issuers.

The provider listens on 127.0.0.1, on a port the kernel picks, and prints ``READY <issuer>``
once it serves; the issuer carries the real port, so there is no port race.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

__all__ = ["OIDC_DIR", "OIDCProvider", "OIDCProviderError", "ensure_node_modules", "DEVICE_CODE_GRANT"]

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

_NPM_CI_TIMEOUT = 300.0
_HTTP_TIMEOUT = 10.0


class OIDCProviderError(RuntimeError):
    pass


class _StartHung(OIDCProviderError):
    """The provider process lives but never said READY."""


def _node() -> str:
    node = os.environ.get("NODE") or shutil.which("node") or "/usr/bin/node"
    if not Path(node).exists() and shutil.which(node) is None:
        raise OIDCProviderError(f"node not found ({node}); Node.js 20+ is needed for the test OpenID provider")
    return node


def ensure_node_modules() -> None:
    """Run ``npm ci`` in tests/servers/oidc when node_modules is missing or older than the lock.

    A lock file in the temp directory keeps concurrent test processes from running two installs
    into the same folder.
    """
    lock = OIDC_DIR / "package-lock.json"
    marker = OIDC_DIR / "node_modules" / ".package-lock.json"  # npm writes it on every install

    def fresh() -> bool:
        return (
            marker.exists()
            and (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists()
            and marker.stat().st_mtime >= lock.stat().st_mtime
        )

    if fresh():
        return
    digest = hashlib.sha256(str(OIDC_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"kubectl-caas-npm-ci-{digest}.lock"
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if fresh():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise OIDCProviderError("npm not found: cannot install the test OpenID provider")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=OIDC_DIR,
            capture_output=True,
            text=True,
            timeout=_NPM_CI_TIMEOUT,
        )
        if proc.returncode != 0:
            raise OIDCProviderError(f"npm ci failed in {OIDC_DIR}:\n{proc.stdout}\n{proc.stderr}")


class OIDCProvider:
    """The test OpenID provider as a subprocess; a context manager, or call start()/stop().

    ``pki`` is an object with ``.ca_cert``, ``.server_cert`` and ``.server_key`` paths (see
    tests/servers/tls.py); ``cert``/``key``/``ca_cert`` override it one by one.

    ``iam_like`` (default True): behave like INDIGO IAM; False: plain oidc-provider ("generic").

    Lifetimes are in seconds. ``rotate_refresh_tokens``: ``"auto"`` (IAM-like: per client, the
    preconfigured clients rotate and dynamically registered ones keep their refresh token; a
    rotated one dies at once; generic: oidc-provider's rule, a public client gets a new refresh
    token at every refresh and reusing the old one revokes the grant), ``"always"`` or
    ``"never"`` (the same refresh token keeps working).
    ``trailing_slash``: the issuer ends with "/" (default: True when IAM-like, else False).
    ``device_interval``: add ``interval`` to the device response (IAM and oidc-provider send none).
    ``accounts`` maps a login name to claims that replace the defaults (``groups`` etc.).
    IAM-like only: ``organisation_name`` (the ``organisation_name`` claim), ``default_profile``
    (``"iam"`` or ``"wlcg"``: the token profile of clients that name none),
    ``access_token_iss_without_slash`` (access tokens' ``iss`` lacks the issuer's trailing slash,
    as with IAM issue #1118), ``id_token_aud_array`` (ID tokens' ``aud`` as ``[client_id]``
    instead of the string IAM sends).

    Clients (IAM-like): ``client_id`` (public, native: device_code, refresh_token and
    authorization_code with the loopback redirect http://127.0.0.1/callback on any port; scopes
    ``CLIENT_SCOPE``), ``confidential_client_id``/``confidential_client_secret`` (device_code and
    refresh_token with client_secret_basic), ``no_device_client_id`` (authorization_code + refresh_token only),
    ``no_offline_client_id`` (scopes without offline_access), ``wlcg_client_id`` (registered with
    the ``wlcg`` scope: the WLCG token profile), ``service_client_id``/``service_client_secret``
    (client_credentials only: a service account); generic: ``client_id`` alone. Both:
    ``rs_client_id``/``rs_client_secret``, a confidential client for introspection.
    """

    CLIENT_SCOPE = "openid profile email offline_access wlcg.groups"

    def __init__(
        self,
        pki: Any = None,
        *,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        iam_like: bool = True,
        client_id: str = "kubectl-caas-test",
        id_token_ttl: int = 600,
        access_token_ttl: int = 3600,
        device_code_ttl: int = 600,
        refresh_token_ttl: int = 30 * 24 * 3600,
        rotate_refresh_tokens: str = "auto",
        trailing_slash: bool | None = None,
        device_interval: int | None = None,
        accounts: dict[str, dict[str, Any]] | None = None,
        organisation_name: str = "indigo-dc",
        default_profile: str = "iam",
        access_token_iss_without_slash: bool = False,
        id_token_aud_array: bool = False,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.cert = str(cert or (pki.server_cert if pki is not None else ""))
        self.key = str(key or (pki.server_key if pki is not None else ""))
        self.ca_cert = str(ca_cert or (pki.ca_cert if pki is not None else ""))
        if not (self.cert and self.key and self.ca_cert):
            raise ValueError("OIDCProvider needs a pki, or cert, key and ca_cert")
        if rotate_refresh_tokens not in ("auto", "always", "never"):
            raise ValueError("rotate_refresh_tokens must be 'auto', 'always' or 'never'")
        if default_profile not in ("iam", "wlcg"):
            raise ValueError("default_profile must be 'iam' or 'wlcg'")
        generic_only = {"organisation_name": organisation_name != "indigo-dc", "default_profile": default_profile != "iam",
                        "access_token_iss_without_slash": access_token_iss_without_slash,
                        "id_token_aud_array": id_token_aud_array}
        if not iam_like and any(generic_only.values()):
            raise ValueError(f"IAM-like options given with iam_like=False: {[k for k, v in generic_only.items() if v]}")
        self.iam_like = iam_like
        self.client_id = client_id
        self.rs_client_id = f"{client_id}-rs"
        self.rs_client_secret = f"{client_id}-rs-secret"
        # The other preconfigured clients exist only when IAM-like (provider.mjs names them so).
        self.confidential_client_id = f"{client_id}-confidential" if iam_like else None
        self.confidential_client_secret = f"{client_id}-confidential-secret" if iam_like else None
        self.no_device_client_id = f"{client_id}-nodevice" if iam_like else None
        self.service_client_id = f"{client_id}-service" if iam_like else None
        self.service_client_secret = f"{client_id}-service-secret" if iam_like else None
        self.no_offline_client_id = f"{client_id}-nooffline" if iam_like else None
        self.wlcg_client_id = f"{client_id}-wlcg" if iam_like else None
        self.id_token_ttl = int(id_token_ttl)
        self.access_token_ttl = int(access_token_ttl)
        self.device_code_ttl = int(device_code_ttl)
        self.refresh_token_ttl = int(refresh_token_ttl)
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.trailing_slash = iam_like if trailing_slash is None else bool(trailing_slash)
        self.device_interval = device_interval
        self.accounts = accounts or {}
        self.organisation_name = organisation_name
        self.default_profile = default_profile
        self.access_token_iss_without_slash = access_token_iss_without_slash
        self.id_token_aud_array = id_token_aud_array
        self.port = port
        self.startup_timeout = startup_timeout
        self._control_token = secrets.token_hex(16)
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir: Path | None = None
        self.issuer: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._discovery: dict[str, Any] | None = None

    # -- files ---------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """JSON lines, one per HTTP request: time, method, path, status, ms, route, and for
        POST /token grant_type; error when the answer carried an OAuth error code."""
        assert self.workdir is not None, "not started"
        return self.workdir / "requests.jsonl"

    @property
    def output_path(self) -> Path:
        """The provider's stdout and stderr (its warnings), for diagnosing a failed start."""
        assert self.workdir is not None, "not started"
        return self.workdir / "provider.out"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> OIDCProvider:
        """Start the provider and wait for its READY line. A start that hangs (seen about once in
        a thousand, under load and not: the process lives but never prints READY) is stopped and
        tried once more; one that exits is reported at once."""
        try:
            return self._start_once()
        except _StartHung as hung:
            first = str(hung)
        try:
            return self._start_once()
        except _StartHung as hung:
            raise OIDCProviderError(f"{hung}\n(the first try hung too: {first})") from None

    def _start_once(self) -> OIDCProvider:
        if self._proc is not None:
            raise OIDCProviderError("already started")
        ensure_node_modules()
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="oidc-provider-"))
        else:
            self.workdir = Path(self._workdir_arg)  # type: ignore[arg-type]
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        args = [
            _node(),
            # A hung start is diagnosed from a report node writes on SIGUSR2 (see _hang_report).
            "--report-on-signal",
            "--report-signal=SIGUSR2",
            f"--report-directory={self.workdir}",
            str(OIDC_DIR / "provider.mjs"),
            "--mode",
            "iam" if self.iam_like else "generic",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--cert",
            self.cert,
            "--key",
            self.key,
            "--log",
            str(self.log_path),
            "--client-id",
            self.client_id,
            "--rs-client-id",
            self.rs_client_id,
            "--rs-client-secret",
            self.rs_client_secret,
            "--id-token-ttl",
            str(self.id_token_ttl),
            "--access-token-ttl",
            str(self.access_token_ttl),
            "--device-code-ttl",
            str(self.device_code_ttl),
            "--refresh-token-ttl",
            str(self.refresh_token_ttl),
            "--rotate-refresh-tokens",
            self.rotate_refresh_tokens,
            "--trailing-slash",
            "true" if self.trailing_slash else "false",
        ]
        if self.iam_like:
            args += [
                "--organisation-name",
                self.organisation_name,
                "--default-profile",
                self.default_profile,
                "--access-token-iss",
                "no-slash" if self.access_token_iss_without_slash else "issuer",
                "--id-token-aud",
                "array" if self.id_token_aud_array else "string",
                "--control-token",
                self._control_token,
            ]
        if self.device_interval is not None:
            args += ["--device-interval", str(int(self.device_interval))]
        if self.accounts:
            accounts_file = self.workdir / "accounts.json"
            accounts_file.write_text(json.dumps(self.accounts))
            args += ["--accounts", str(accounts_file)]
        # Environment settings of provider.mjs must not leak in from the caller's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_")}
        out = open(self.output_path, "w")  # noqa: SIM115 - kept open by the reader thread
        self._proc = subprocess.Popen(
            args,
            cwd=OIDC_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env=env,
        )
        self._ready.clear()
        self._reader = threading.Thread(
            target=self._read_stdout, args=(self._proc, out), daemon=True, name="oidc-provider-stdout"
        )
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready.wait(timeout=0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(timeout=2)
                reason = (
                    f"exited with {self._proc.returncode}"
                    if self._proc.poll() is not None
                    else f"not ready after {self.startup_timeout} s"
                )
                tail = self._tail()
                exited = self._proc.poll() is not None
                if not exited:
                    tail += self._hang_report()
                self.stop()
                raise (OIDCProviderError if exited else _StartHung)(f"test OpenID provider {reason}:\n{tail}")
        return self

    def _read_stdout(self, proc: subprocess.Popen[str], out: Any) -> None:
        # Copies stdout to the output file and notices the READY line; keeps draining the pipe
        # so the provider never blocks on a full pipe.
        assert proc.stdout is not None
        with out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if not self._ready.is_set() and line.startswith("READY "):
                    self.issuer = line.split(" ", 1)[1].strip()
                    self._ready.set()

    def _hang_report(self) -> str:
        """What a provider that lives but never said READY is doing: each thread's kernel state
        and wait channel, and node's own diagnostic report (JavaScript and native stacks, libuv
        handles), asked for with SIGUSR2."""
        assert self._proc is not None and self.workdir is not None
        pid = self._proc.pid
        lines = ["", "-- hung start, threads (name state wchan):"]
        for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
            with contextlib.suppress(OSError, IndexError):
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                lines.append(f"  {(task / 'comm').read_text().strip()} {state} {(task / 'wchan').read_text()}")
        with contextlib.suppress(OSError):
            self._proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        reports: list[Path] = []
        while not reports and time.monotonic() < deadline:
            time.sleep(0.1)
            reports = [r for r in self.workdir.glob("report.*.json") if r.stat().st_size]
        if not reports:
            return "\n".join([*lines, "-- node wrote no diagnostic report within 5 s"])
        time.sleep(0.2)  # the report is written in one go; let it finish
        try:
            report = json.loads(reports[0].read_text())
        except (OSError, ValueError) as exc:
            return "\n".join([*lines, f"-- node's report unreadable: {exc}"])
        js = report.get("javascriptStack", {})
        lines.append(f"-- javascript: {js.get('message', '')}")
        lines += [f"  {frame}" for frame in js.get("stack", [])[:25]]
        lines.append("-- native:")
        lines += [f"  {f.get('symbol', '')}" for f in report.get("nativeStack", [])[:25]]
        lines.append("-- libuv handles:")
        lines += [f"  {h.get('type')} active={h.get('is_active')}" for h in report.get("libuv", [])]
        return "\n".join(lines)

    def _tail(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.output_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
            self._reader = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints -----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """An absolute URL on the provider for ``path`` ("/token", ...)."""
        assert self.issuer is not None, "not started"
        return self.issuer.rstrip("/") + "/" + path.lstrip("/")

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            resp = requests.get(
                self.url("/.well-known/openid-configuration"), verify=self.ca_cert, timeout=_HTTP_TIMEOUT
            )
            resp.raise_for_status()
            self._discovery = resp.json()
        return self._discovery

    @property
    def token_endpoint(self) -> str:
        return self.discovery()["token_endpoint"]

    @property
    def device_authorization_endpoint(self) -> str:
        return self.discovery()["device_authorization_endpoint"]

    @property
    def revocation_endpoint(self) -> str:
        return self.discovery()["revocation_endpoint"]

    @property
    def introspection_endpoint(self) -> str:
        return self.discovery()["introspection_endpoint"]

    @property
    def userinfo_endpoint(self) -> str:
        return self.discovery()["userinfo_endpoint"]

    @property
    def jwks_uri(self) -> str:
        return self.discovery()["jwks_uri"]

    @property
    def registration_endpoint(self) -> str:
        """RFC 7591 dynamic registration (IAM-like only; open to anyone)."""
        return self.discovery()["registration_endpoint"]

    def register_client(self, **metadata: Any) -> dict[str, Any]:
        """Register a client dynamically, as anyone may at IAM; returns the 201 answer (client_id,
        client_secret when confidential, registration_access_token, registration_client_uri, ...)."""
        resp = requests.post(self.registration_endpoint, json=metadata, verify=self.ca_cert, timeout=_HTTP_TIMEOUT)
        if resp.status_code != 201:
            raise OIDCProviderError(f"registration refused: HTTP {resp.status_code} {resp.text}")
        return resp.json()

    # -- accounts (IAM-like only) ----------------------------------------------------------------
    def set_account(self, login: str, *, suspended: bool | None = None, aup_due: bool | None = None,
                    groups: list[str] | None = None) -> dict[str, Any]:
        """Flag an account: ``suspended`` (its refreshes get 401 ``unauthorized``, as IAM answers
        for a disabled user) and ``aup_due`` (400 ``invalid_grant``: the AUP must be signed);
        ``groups`` replaces its group memberships in the tokens minted from now on (``wlcg.groups``
        gets the same names with a leading slash). Returns the account's flags."""
        if not self.iam_like:
            raise OIDCProviderError("account flags exist only in the IAM-like mode")
        changes = {k: v for k, v in (("suspended", suspended), ("aup_due", aup_due), ("groups", groups))
                   if v is not None}
        resp = requests.post(self._control_url(login), json=changes, verify=self.ca_cert, timeout=_HTTP_TIMEOUT)
        resp.raise_for_status()
        return resp.json()

    def suspend(self, login: str) -> None:
        self.set_account(login, suspended=True)

    def reinstate(self, login: str) -> None:
        self.set_account(login, suspended=False)

    def require_aup(self, login: str, due: bool = True) -> None:
        self.set_account(login, aup_due=due)

    def _control_url(self, login: str) -> str:
        return self.url(f"/_kubectl-caas-test/{self._control_token}/accounts/{quote(login, safe='')}")

    # -- request log ---------------------------------------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        """All requests so far, oldest first (each line is written before its answer is sent)."""
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def token_requests(self, grant_type: str | None = None) -> list[dict[str, Any]]:
        """POST /token requests; ``grant_type`` filters ("refresh_token", "device_code" or the
        full URN)."""
        wanted = DEVICE_CODE_GRANT if grant_type == "device_code" else grant_type
        return [
            r
            for r in self.requests()
            if r.get("method") == "POST"
            and r.get("route") == "token"
            and (wanted is None or r.get("grant_type") == wanted)
        ]

    # -- resource-server side ------------------------------------------------------------------
    def introspect(self, token: str, token_type_hint: str | None = None) -> dict[str, Any]:
        """RFC 7662 introspection with the confidential resource-server client (the public
        client may only introspect its own tokens)."""
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        resp = requests.post(
            self.introspection_endpoint,
            data=data,
            auth=(self.rs_client_id, self.rs_client_secret),
            verify=self.ca_cert,
            timeout=_HTTP_TIMEOUT,
        )
        resp.raise_for_status()
        return resp.json()

    def jwks(self) -> dict[str, Any]:
        resp = requests.get(self.discovery()["jwks_uri"], verify=self.ca_cert, timeout=_HTTP_TIMEOUT)
        resp.raise_for_status()
        return resp.json()

"""A real Keystone (identity API v3) for integration tests and benchmarks.

Keystone runs from its own virtualenv (it pins many libraries and needs Python >= 3.11), in a
subprocess serving HTTPS on 127.0.0.1 with the test PKI. Building the database and keys takes
about ten seconds, so it is done once (:func:`build_keystone_template`) and every instance
starts from a copy of it in about two seconds.

Command line (used by the Makefile)::

    python tests/servers/keystone.py ensure-venv [DIR]   # default DIR: .cache/keystone-venv
    python tests/servers/keystone.py serve [DIR]         # run one instance until Ctrl-C
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO_ROOT))

if TYPE_CHECKING:
    from tests.servers.tls import PKI

# requests and cryptography are imported where used: `ensure-venv` must run with a bare python.

KEYSTONE_VERSION = "30.0.0"
DEFAULT_VENV = REPO_ROOT / ".cache" / "keystone-venv"
WSGI_SCRIPT = Path(__file__).resolve().with_name("keystone_wsgi.py")
MARKER = "kubectl-caas-keystone-version"
# Sent on the fixture's own calls; the server logs them as "fixture": true (see keystone_wsgi.py).
FIXTURE_HEADER = "X-Kubectl-Caas-Fixture"
DEFAULT_EXPIRATION = 3600
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


# --- the virtualenv -------------------------------------------------------------------------


def _base_python() -> str:
    # Inside a virtualenv, sys.executable is the venv's python; `-m venv` from it would work
    # too, but the base interpreter gives a venv that does not depend on the project's one.
    return getattr(sys, "_base_executable", None) or sys.executable


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # The Makefile and a test session may both try to build the venv; let one of them do it.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_keystone_venv(path: str | Path = DEFAULT_VENV) -> Path:
    """Create a virtualenv with keystone==KEYSTONE_VERSION at ``path`` unless it is already there.

    Returns the venv's python. A marker file written last records the version, so a build
    that was interrupted is redone from scratch.
    """
    venv = Path(path).absolute()
    marker = venv / MARKER
    with _file_lock(venv.with_name(venv.name + ".lock")):
        if marker.is_file() and marker.read_text().strip() == KEYSTONE_VERSION:
            return _venv_python(venv)
        if sys.version_info < (3, 11):
            raise RuntimeError(f"Keystone {KEYSTONE_VERSION} needs Python >= 3.11, not {sys.version}")
        if venv.exists():
            shutil.rmtree(venv)
        steps = [
            [_base_python(), "-m", "venv", str(venv)],
            # werkzeug comes with Flask, Keystone's web framework; named to make the dependency
            # of keystone_wsgi.py explicit.
            [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", f"keystone=={KEYSTONE_VERSION}", "werkzeug"],
        ]
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"building the Keystone venv failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}"
                )
        marker.write_text(KEYSTONE_VERSION + "\n")
    return _venv_python(venv)


def keystone_venv_from_env() -> Path:
    """The venv's python: $KEYSTONE_VENV if set (an existing venv), else build the default one."""
    configured = os.environ.get("KEYSTONE_VENV")
    if configured:
        python = _venv_python(Path(configured))
        if not python.exists():
            raise RuntimeError(f"KEYSTONE_VENV={configured} has no bin/python")
        return python
    return ensure_keystone_venv(DEFAULT_VENV)


# --- configuration and the template ---------------------------------------------------------


def _write_config(
    directory: Path,
    *,
    expiration: int = DEFAULT_EXPIRATION,
    policy_file: Path | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "DEFAULT": {"debug": "false", "use_stderr": "true"},
        "database": {"connection": f"sqlite:///{directory / 'keystone.db'}"},
        # bcrypt reads at most 72 bytes; with the default 4096 Keystone warns on every login.
        # The fewest bcrypt rounds: each password check costs ~1 ms instead of ~250 ms, which
        # adds up over hundreds of test logins. Override with extra_config for realistic timing.
        "identity": {"max_password_length": 72, "password_hash_rounds": 4},
        "token": {"provider": "fernet", "expiration": expiration},
        "fernet_tokens": {"key_repository": directory / "fernet-keys"},
        "fernet_receipts": {"key_repository": directory / "fernet-keys"},
        "credential": {"key_repository": directory / "credential-keys"},
    }
    if policy_file is not None:
        sections["oslo_policy"] = {"policy_file": policy_file}
    for section, options in (extra or {}).items():
        sections.setdefault(section, {}).update(options)
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    path = directory / "keystone.conf"
    path.write_text("\n".join(lines))
    return path


@dataclass(frozen=True)
class KeystoneTemplate:
    """A bootstrapped Keystone state (database and keys) to copy for each instance."""

    directory: Path
    venv_python: Path
    admin_password: str

    def copy_to(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.directory / "keystone.db", directory / "keystone.db")
        for keys in ("fernet-keys", "credential-keys"):
            shutil.copytree(self.directory / keys, directory / keys, dirs_exist_ok=True)


def build_keystone_template(
    venv_python: str | Path, directory: str | Path, admin_password: str | None = None
) -> KeystoneTemplate:
    """db_sync, key repositories and bootstrap (admin user, roles, region, endpoint)."""
    venv_python = Path(venv_python)
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    admin_password = admin_password or secrets.token_urlsafe(16)
    config = _write_config(directory)
    manage = [str(venv_python.parent / "keystone-manage"), "--config-file", str(config)]
    owner = ["--keystone-user", _user_name(), "--keystone-group", _group_name()]

    def run_all(commands: list[list[str]]) -> None:
        # Each keystone-manage call spends ~2 s importing Keystone; the first three are
        # independent of each other, so they run side by side.
        running = [
            (command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            for command in commands
        ]
        failures = []
        for command, process in running:
            output, _ = process.communicate(timeout=300)
            if process.returncode != 0:
                failures.append(f"$ {' '.join(command)}\n{output}")
        if failures:
            raise RuntimeError("building the Keystone template failed:\n" + "\n".join(failures))

    run_all(
        [
            manage + ["db_sync"],
            manage + ["fernet_setup", *owner],
            manage + ["credential_setup", *owner],
        ]
    )
    run_all(
        [
            manage
            + [
                "bootstrap",
                # one word: token_urlsafe may start with "-", which would be read as an option
                f"--bootstrap-password={admin_password}",
                "--bootstrap-region-id",
                "RegionOne",
                # Instances get their own port; the endpoint is corrected when each one starts.
                "--bootstrap-public-url",
                "https://127.0.0.1:1/v3",
            ]
        ]
    )
    return KeystoneTemplate(directory=directory, venv_python=venv_python, admin_password=admin_password)


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _group_name() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


# --- one running instance -------------------------------------------------------------------


class KeystoneServer:
    """One Keystone instance over HTTPS on 127.0.0.1, started from a template copy.

    ``expiration``: token lifetime in seconds. ``policy``: oslo.policy overrides, e.g.
    ``{"identity:create_application_credential": "!"}`` (forbidden: 403). ``extra_config``:
    more keystone.conf options, ``{section: {option: value}}``.
    """

    def __init__(
        self,
        template: KeystoneTemplate,
        pki: PKI,
        directory: str | Path,
        *,
        expiration: int = DEFAULT_EXPIRATION,
        policy: Mapping[str, str] | None = None,
        extra_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.template = template
        self.pki = pki
        self.directory = Path(directory).absolute()
        self.expiration = expiration
        self.policy = dict(policy or {})
        self.extra_config = extra_config
        self.ca_cert: Path = pki.ca_cert
        self.admin_password: str = template.admin_password
        self.request_log = self.directory / "requests.jsonl"
        self.server_log = self.directory / "server.log"
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        import requests

        self._http = requests.Session()
        # Ignore REQUESTS_CA_BUNDLE, proxies and netrc from the environment: requests lets the
        # first override a Session's own `verify`, and this CA is the only one that counts.
        self._http.trust_env = False
        self._http.verify = str(self.ca_cert)
        self._admin_token: str | None = None
        self._admin_token_expires = 0.0
        self._role_ids: dict[str, str] = {}

    # -- life cycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Keystone is not started")
        return f"https://127.0.0.1:{self.port}/v3"

    def __enter__(self) -> KeystoneServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> KeystoneServer:
        if self._process is not None:
            raise RuntimeError("Keystone is already started")
        self.template.copy_to(self.directory)
        policy_file = None
        if self.policy:
            policy_file = self.directory / "policy.json"
            policy_file.write_text(json.dumps(self.policy, indent=2))
        config = _write_config(
            self.directory, expiration=self.expiration, policy_file=policy_file, extra=self.extra_config
        )
        self.request_log.write_text("")

        # Bind here and pass the socket down: the port is ours from now on, with no window in
        # which another process could take it, and early clients wait in the backlog.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            with open(self.server_log, "wb") as log:
                self._process = subprocess.Popen(
                    [
                        str(self.template.venv_python),
                        str(WSGI_SCRIPT),
                        "--config",
                        str(config),
                        "--cert",
                        str(self.pki.server_cert),
                        "--key",
                        str(self.pki.server_key),
                        "--fd",
                        str(listener.fileno()),
                        "--request-log",
                        str(self.request_log),
                    ],
                    stdin=subprocess.PIPE,  # its EOF tells the server that we are gone
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(listener.fileno(),),
                    cwd=self.directory,
                    env={**os.environ, "OS_KEYSTONE_CONFIG_FILES": str(config)},
                )
        finally:
            listener.close()
        try:
            self._wait_ready()
            # The template's catalog names a placeholder port; point it at this instance.
            self._fix_public_endpoint()
            self.clear_requests()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Keystone exited with {self._process.returncode} while starting:\n{self.log_text()}"
                )
            try:
                reply = self._http.get(
                    self.url,
                    timeout=min(5.0, max(0.1, deadline - time.monotonic())),
                    headers={FIXTURE_HEADER: "1"},
                )
                if reply.status_code == 200:
                    return
                last_error = RuntimeError(f"GET /v3 answered {reply.status_code}")
            except requests.exceptions.SSLError:
                # Not a start-up delay: the certificate or the CA is wrong. Say so now.
                self.stop()
                raise
            except requests.RequestException as error:
                last_error = error
            time.sleep(0.05)  # polling interval, not a wait for readiness
        raise RuntimeError(f"Keystone not ready after {START_TIMEOUT:.0f} s ({last_error}):\n{self.log_text()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if process.stdin is not None:
            process.stdin.close()
        self._http.close()
        self._admin_token = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self, limit: int = 20000) -> str:
        try:
            return self.server_log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    # -- the request log

    def requests(self, include_fixture: bool = False) -> list[dict[str, Any]]:
        """Requests served so far: dicts with method, path, query, status, time, and for logins
        auth_methods and auth_scoped. The fixture's own admin calls are left out unless asked."""
        entries = []
        for line in self.request_log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                if include_fixture or not entry.get("fixture"):
                    entries.append(entry)
        return entries

    def count_requests(self, method: str, path: str) -> int:
        """How many non-fixture requests had this method and path, e.g. POST /v3/auth/tokens."""
        return sum(1 for e in self.requests() if e["method"] == method and e["path"] == path)

    def logins(self) -> list[dict[str, Any]]:
        """The non-fixture POST /v3/auth/tokens requests."""
        return [e for e in self.requests() if e["method"] == "POST" and e["path"] == "/v3/auth/tokens"]

    def clear_requests(self) -> None:
        self.request_log.write_text("")

    # -- admin helpers (plain REST with a system-scoped admin token)

    def _admin_headers(self) -> dict[str, str]:
        # Renew well before expiry: instances with 20 s tokens would otherwise fail mid-test.
        if self._admin_token is None or time.time() > self._admin_token_expires - min(10, self.expiration / 2):
            token, body = self.issue_token("admin", self.admin_password, system=True)
            self._admin_token = token
            self._admin_token_expires = _parse_time(body["token"]["expires_at"])
        return {"X-Auth-Token": self._admin_token, FIXTURE_HEADER: "1"}

    def _admin(self, method: str, path: str, expect: Iterable[int] = (200, 201, 204), **kwargs: Any):
        reply = self._http.request(
            method,
            self.url + path,
            headers={**self._admin_headers(), **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )
        if reply.status_code not in tuple(expect):
            raise RuntimeError(f"{method} {path} answered {reply.status_code}: {reply.text}")
        return reply

    def issue_token(
        self,
        username: str,
        password: str,
        *,
        project: str | None = None,
        domain: str = "Default",
        system: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Password login done by the fixture (logged as a fixture call): (token, body)."""
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": username, "domain": {"name": domain}, "password": password}},
            }
        }
        if system:
            auth["scope"] = {"system": {"all": True}}
        elif project:
            auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
        else:
            auth["scope"] = "unscoped"
        reply = self._http.post(
            self.url + "/auth/tokens?nocatalog", json={"auth": auth}, headers={FIXTURE_HEADER: "1"}, timeout=30
        )
        if reply.status_code != 201:
            raise RuntimeError(f"login of {username} answered {reply.status_code}: {reply.text}")
        return reply.headers["X-Subject-Token"], reply.json()

    def _fix_public_endpoint(self) -> None:
        endpoints = self._admin("GET", "/endpoints", params={"interface": "public"}).json()["endpoints"]
        for endpoint in endpoints:
            self._admin("PATCH", f"/endpoints/{endpoint['id']}", json={"endpoint": {"url": self.url}})

    def role_id(self, name: str) -> str:
        if name not in self._role_ids:
            roles = self._admin("GET", "/roles", params={"name": name}).json()["roles"]
            if not roles:
                raise KeyError(f"no role named {name!r}")
            self._role_ids[name] = roles[0]["id"]
        return self._role_ids[name]

    def create_domain(self, name: str) -> str:
        body = {"domain": {"name": name, "enabled": True}}
        return self._admin("POST", "/domains", json=body).json()["domain"]["id"]

    def create_project(self, name: str, domain_id: str = "default") -> str:
        body = {"project": {"name": name, "domain_id": domain_id, "enabled": True}}
        return self._admin("POST", "/projects", json=body).json()["project"]["id"]

    def create_user(
        self,
        name: str,
        password: str,
        domain_id: str = "default",
        projects: Iterable[str] = (),
        role: str = "member",
    ) -> str:
        """Create a user with ``role`` on each project in ``projects`` (project ids)."""
        body = {"user": {"name": name, "password": password, "domain_id": domain_id, "enabled": True}}
        user_id = self._admin("POST", "/users", json=body).json()["user"]["id"]
        for project_id in projects:
            self.assign_role(user_id, project_id, role)
        return user_id

    def assign_role(self, user_id: str, project_id: str, role: str = "member") -> None:
        self._admin("PUT", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")

    def validate_token(self, token: str) -> bool:
        """True if Keystone accepts ``token`` now (200), False if expired or revoked (404)."""
        reply = self._admin("GET", "/auth/tokens?nocatalog", expect=(200, 404), headers={"X-Subject-Token": token})
        return reply.status_code == 200

    def revoke_token(self, token: str) -> None:
        self._admin("DELETE", "/auth/tokens", expect=(204, 404), headers={"X-Subject-Token": token})

    def list_application_credentials(self, user_id: str) -> list[dict[str, Any]]:
        reply = self._admin("GET", f"/users/{user_id}/application_credentials")
        return reply.json()["application_credentials"]


def _parse_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KeystoneFactory:
    """Starts instances from one template and stops them all in :meth:`close`."""

    def __init__(self, template: KeystoneTemplate, pki: PKI, directory: str | Path) -> None:
        self.template = template
        self.pki = pki
        self.directory = Path(directory)
        self.servers: list[KeystoneServer] = []

    def __call__(self, **options: Any) -> KeystoneServer:
        workdir = Path(tempfile.mkdtemp(prefix="keystone-", dir=self.directory))
        server = KeystoneServer(self.template, self.pki, workdir, **options)
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        errors = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as error:  # stop the others anyway
                errors.append(error)
        self.servers.clear()
        if errors:
            raise errors[0]


@contextmanager
def standalone_keystone(directory: str | Path, **options: Any) -> Iterator[KeystoneServer]:
    """Everything in one call, for benchmarks and manual runs: venv, PKI, template, instance."""
    from tests.servers.tls import make_pki

    directory = Path(directory)
    python = keystone_venv_from_env()
    pki = make_pki(directory / "pki")
    template = build_keystone_template(python, directory / "template")
    with KeystoneServer(template, pki, directory / "instance", **options) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-venv", help="build the Keystone virtualenv if missing")
    ensure.add_argument("directory", nargs="?", default=str(DEFAULT_VENV))
    serve = commands.add_parser("serve", help="run one Keystone instance until interrupted")
    serve.add_argument("directory", nargs="?", help="work directory (default: a temporary one)")
    serve.add_argument("--expiration", type=int, default=DEFAULT_EXPIRATION)
    args = parser.parse_args(argv)

    if args.command == "ensure-venv":
        directory = Path(args.directory)
        if not directory.is_absolute():
            directory = REPO_ROOT / directory
        print(ensure_keystone_venv(directory))
        return 0

    with tempfile.TemporaryDirectory(prefix="keystone-") as scratch:
        with standalone_keystone(args.directory or scratch, expiration=args.expiration) as server:
            print(f"url={server.url}\nca_cert={server.ca_cert}\nadmin_password={server.admin_password}", flush=True)
            try:
                while server.running:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

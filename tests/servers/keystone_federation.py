"""A real federated Keystone: Keystone 30 under Apache + mod_wsgi, with mod_oauth2 guarding the
federation auth path the way CloudVeneto publishes it.

    from tests.servers.keystone_federation import FederatedKeystone

    with FederatedKeystone(pki, issuer=op.issuer, jwks_uri=op.discovery()["jwks_uri"],
                           audience="keystone", ca_file=op.ca_cert) as ks:
        cms = ks.create_project("CMS")
        ks.map_group("users", cms)              # IAM group "users" -> member of CMS
        ks.url, ks.auth_url, ks.ca_cert         # https://127.0.0.1:PORT, .../v3, the test CA
        ks.federation_auth_url                  # .../v3/OS-FEDERATION/identity_providers/infn-cc/protocols/openid/auth

What runs (all on 127.0.0.1, on a port of its own):

- Apache (Debian's apache2, mpm_event, mod_ssl with the pki's server certificate), started as root
  with its own httpd.conf in a run directory (PidFile, Mutex, DefaultRuntimeDir, logs and
  WSGISocketPrefix there, nothing of /etc/apache2 used) by ``apache2 -f <conf> -DFOREGROUND`` in
  a session of its own (setsid), so that stop() can end the whole process group.
- Keystone 30.0.0 in a mod_wsgi 6.1.1 daemon process (``WSGIDaemonProcess ... python-home=<venv>``)
  running as www-data. ``[auth] methods`` is ``password,token,mapped,openid,application_credential``
  (``app_credentials=True``) or CloudVeneto's published ``password,token,mapped,openid``
  (``app_credentials=False``); ``[openid] remote_id_attribute = OIDC_CLAIM_iss``.
- On ``<Location /v3/OS-FEDERATION/identity_providers/infn-cc/protocols/openid/auth>``:
  ``AuthType oauth2``; ``OAuth2TokenVerify jwks_uri <jwks_uri>`` (JWT access tokens verified
  against the issuer's keys, ``exp`` required); claims passed to Keystone as ``OIDC_CLAIM_<name>``
  environment variables, REMOTE_USER = ``sub``; ``Require oauth2_claim iss:<issuer>`` and
  ``Require oauth2_claim aud:<audience>`` inside ``<RequireAll>`` (see "Doubtful" below).
- Federation set up through the admin API: identity provider ``infn-cc`` with
  ``remote_ids=[issuer]`` and ``authorization_ttl`` (without it a federated user's group roles are
  not kept, and creating an application credential fails with "Could not find role assignment"),
  protocol ``openid``, and one mapping: every token's ``sub`` becomes an (ephemeral) user of that
  name in the identity provider's domain; :meth:`FederatedKeystone.map_group` adds rules that put
  members of an IAM group (the ``OIDC_CLAIM_groups`` text matched with a regex) into a Keystone
  group holding a role on a project.

Who may read what (why the venv lives where it does). Apache starts as root and reads its
configuration, the TLS key and the logs as root; the mod_wsgi daemon and Apache's children run as
www-data: Debian's Apache refuses ``User root`` ("Apache has not been designed to serve pages while
running as root"), and mod_wsgi refuses a daemon process running as root, so Keystone must run as
www-data. www-data must therefore be able to reach the venv's interpreter and Keystone's files: the
venv is made from Debian's /usr/bin/python3 (a pyenv interpreter lives in root's home, mode 0700),
in .cache/keystone-federation-venv of the repository when every directory above it lets others
through (it does on the development machines: /work and the repository are 0755), else in
/opt/kubectl-caas/keystone-federation-venv; $KEYSTONE_FEDERATION_VENV overrides both. The run
directory is made in the system temp directory (not pytest's 0700 basetemp), mode 0755; Keystone's
database, keys and configuration are in a subdirectory owned by www-data, mode 0700.

Setup, once per machine: Debian packages apache2, apache2-dev (apxs, to build mod_wsgi),
libapache2-mod-oauth2 and python3-dev (see tests/servers/debian.py); then the venv with
``keystone==30.0.0`` and ``pip install --no-cache-dir mod_wsgi==6.1.1`` (no cache: a mod_wsgi wheel
built earlier by another interpreter carries a RUNPATH to that interpreter's libpython). Measured
on the development machine: the Debian packages 10 s, the venv 40 s (60 s while other tests run);
then the first instance starts in about 16 s (keystone-manage builds the database and keys, about
10 s; the result is kept per process and copied for the next instance, which starts in about 6 s).

Command line::

    python tests/servers/keystone_federation.py ensure-venv [DIR]   # packages and venv

What it answers (recorded from this stack, for the engineer writing the client):

- POST (or GET) of the federation auth path with ``Authorization: Bearer <JWT access token with
  the right iss and aud>``: 201, an unscoped token in ``X-Subject-Token``, body
  ``{"token": {"methods": ["openid"], "user": {"id", "name": <sub>, "domain": {"id", "name"},
  "OS-FEDERATION": {"identity_provider": {"id": "infn-cc"}, "protocol": {"id": "openid"},
  "groups": [{"id"}...]}}, "audit_ids", "expires_at", "issued_at"}}``.
- The same with a valid token of another audience: 401 from Apache's authorization (the
  ``Require oauth2_claim aud:`` failed; its HTML "401 Unauthorized" page, no WWW-Authenticate,
  Keystone never called). No token: 401, the same page, ``WWW-Authenticate: Bearer
  error="invalid_request", error_description="No bearer token found in the request."``. A token
  that does not verify (not a JWT, another key): 401, ``WWW-Authenticate: Bearer
  error="invalid_token", error_description="Token could not be verified."``.
- An identity provider with no <Location> (``/v3/OS-FEDERATION/identity_providers/nobody/
  protocols/openid/auth``): Keystone answers itself, token or not: 404 ``{"error": {"code": 404,
  "message": "Could not find Identity Provider: nobody.", "title": "Not Found"}}``
  (:data:`UNKNOWN_IDP_ANSWER`). ``infn-cc`` with another protocol (``.../protocols/saml2/auth``):
  401 JSON "Attempted to authenticate with an unsupported method.", WWW-Authenticate ``Keystone
  uri="<auth_url>"``.
- Scoping the unscoped token (``{"identity": {"methods": ["token"], ...}, "scope": {"project":
  ...}}``, what keystoneauth1's ``OidcAccessToken`` does): 201 with a project-scoped token whose
  methods are ``["token", "openid"]`` and roles those of the mapped groups (``member`` and the
  ``reader`` it implies). A project the mapped groups give no role on: 401.
- Creating an application credential with that scoped token: 201 in both variants. Using it
  (``{"identity": {"methods": ["application_credential"], ...}}``): 201 with
  ``app_credentials=True`` (methods ``["application_credential"]``, the same roles); 401 with
  ``app_credentials=False``, body ``{"error": {"code": 401, "title": "Unauthorized", "message":
  "Attempted to authenticate with an unsupported method.", "identity": {"methods": ["password",
  "token", "mapped", "openid"]}}}``.
- :meth:`FederatedKeystone.validate_token` (GET /v3/auth/tokens with the token in X-Auth-Token and
  X-Subject-Token, as k8s-keystone-auth does): 200 and the token's body for a valid one.

Doubtful: CloudVeneto publishes the two ``Require oauth2_claim`` lines; Apache joins bare
``Require`` lines with "any of" (``<RequireAny>``), so written bare they would let a token of the
right issuer and any audience through (the self-test shows it: 201 for a token with another
audience). This stack wraps them in ``<RequireAll>`` (both must hold) by default;
``require_all=False`` writes them bare, as published. mod_oauth2 fetches the JWKS without
verifying the provider's certificate (``jwks_uri.ssl_verify=false``, see :meth:`_jwks_options`),
so ``ca_file`` is kept but unused by Apache. The test OpenID provider's access tokens, like INDIGO IAM's with the
default token profile, carry no ``groups`` and no ``preferred_username`` claim (only iss, sub, aud,
iat, exp, jti, client_id): a rule on ``OIDC_CLAIM_groups`` never matches such a token, so
:meth:`map_group` with ``iam_group=None`` (everybody the issuer vouches for) is what the tests use,
and the group rules are kept for issuers whose tokens do carry the claim.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO_ROOT))

if TYPE_CHECKING:
    from tests.servers.tls import PKI

KEYSTONE_VERSION = "30.0.0"
MOD_WSGI_VERSION = "6.1.1"
DEBIAN_PACKAGES = ("apache2", "apache2-dev", "libapache2-mod-oauth2", "python3-dev")
SYSTEM_PYTHON = "/usr/bin/python3"
APACHE_USER = "www-data"
DEFAULT_VENV = REPO_ROOT / ".cache" / "keystone-federation-venv"
FALLBACK_VENV = Path("/opt/kubectl-caas/keystone-federation-venv")
MARKER = "kubectl-caas-keystone-federation"
IDENTITY_PROVIDER = "infn-cc"
PROTOCOL = "openid"
AUTH_PATH = f"/v3/OS-FEDERATION/identity_providers/{IDENTITY_PROVIDER}/protocols/{PROTOCOL}/auth"
MAPPING_ID = "infn-cc-openid"
CLAIM_PREFIX = "OIDC_CLAIM_"
AUTHORIZATION_TTL_MINUTES = 60
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
APACHE_MODULES = "/usr/lib/apache2/modules"
# What Keystone answers for an identity provider that has no <Location> (recorded by the self-test).
UNKNOWN_IDP_ANSWER = 404
_HTTP_TIMEOUT = 30.0


class FederatedKeystoneError(RuntimeError):
    pass


# --- setup: Debian packages and the venv ------------------------------------------------------


def ensure_debian_packages() -> str | None:
    """Install the Debian packages if missing; None when they are there, else why not (for a skip)."""
    from tests.servers.debian import ensure_packages

    return ensure_packages(DEBIAN_PACKAGES)


def _reachable_by_others(path: Path) -> bool:
    """True if a user other than the owner (www-data) can get through every directory to ``path``."""
    path = path.absolute()
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            continue  # made later, with mode 0755
        if not directory.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def default_venv() -> Path:
    """$KEYSTONE_FEDERATION_VENV, else .cache/keystone-federation-venv if www-data can reach it,
    else /opt/kubectl-caas/keystone-federation-venv."""
    configured = os.environ.get("KEYSTONE_FEDERATION_VENV")
    if configured:
        return Path(configured).absolute()
    return DEFAULT_VENV if _reachable_by_others(DEFAULT_VENV) else FALLBACK_VENV


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_text() -> str:
    return f"keystone=={KEYSTONE_VERSION} mod_wsgi=={MOD_WSGI_VERSION} python={SYSTEM_PYTHON}\n"


def ensure_venv(path: str | Path | None = None) -> Path:
    """Build the venv (keystone and mod_wsgi, from Debian's python) unless it is there; returns it.

    Needs the Debian packages (apxs and Python's headers build mod_wsgi). Under a file lock, so
    that pytest-xdist workers build it once; a marker written last makes an interrupted build
    start again from scratch.
    """
    venv = Path(path).absolute() if path is not None else default_venv()
    marker = venv / MARKER
    if marker.is_file() and marker.read_text() == _marker_text():
        return venv
    if not _reachable_by_others(venv):
        raise FederatedKeystoneError(f"{venv}: www-data could not reach it (a directory above it is not o+x)")
    failure = ensure_debian_packages()
    if failure:
        raise FederatedKeystoneError(failure)
    with _file_lock(venv.with_name(venv.name + ".lock")):
        if marker.is_file() and marker.read_text() == _marker_text():
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        steps = [
            [SYSTEM_PYTHON, "-m", "venv", str(venv)],
            [*pip, f"keystone=={KEYSTONE_VERSION}"],
            [*pip, "--no-cache-dir", f"mod_wsgi=={MOD_WSGI_VERSION}"],
        ]
        old_umask = os.umask(0o022)  # www-data reads the venv
        try:
            for command in steps:
                done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if done.returncode != 0:
                    raise FederatedKeystoneError(
                        f"building the federation venv failed: {' '.join(command)}\n{done.stdout[-3000:]}\n"
                        f"{done.stderr[-3000:]}"
                    )
            marker.write_text(_marker_text())
        finally:
            os.umask(old_umask)
    return venv


def mod_wsgi_module(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages/mod_wsgi/server/mod_wsgi-py*.so"))
    if not found:
        raise FederatedKeystoneError(f"no mod_wsgi module in {venv}")
    return found[0]


# --- the Keystone state: database and keys, built once per process -----------------------------

_TEMPLATES: dict[Path, tuple[Path, str]] = {}
_TEMPLATES_LOCK = threading.Lock()


def _keystone_conf(data: Path, methods: str, port: int) -> str:
    sections: dict[str, dict[str, Any]] = {
        "DEFAULT": {"debug": "false", "use_stderr": "true", "public_endpoint": f"https://127.0.0.1:{port}"},
        "database": {"connection": f"sqlite:///{data / 'keystone.db'}"},
        "identity": {"max_password_length": 72, "password_hash_rounds": 4},
        "token": {"provider": "fernet", "expiration": 3600},
        "fernet_tokens": {"key_repository": data / "fernet-keys"},
        "fernet_receipts": {"key_repository": data / "fernet-keys"},
        "credential": {"key_repository": data / "credential-keys"},
        "auth": {"methods": methods},
        "openid": {"remote_id_attribute": f"{CLAIM_PREFIX}iss"},
    }
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


def _template(venv: Path) -> tuple[Path, str]:
    """(directory, admin password) of a bootstrapped database and key repositories."""
    with _TEMPLATES_LOCK:
        if venv in _TEMPLATES and (_TEMPLATES[venv][0] / "keystone.db").exists():
            return _TEMPLATES[venv]
        directory = Path(tempfile.mkdtemp(prefix="keystone-federation-template-"))
        # keystone-manage writes the keys as the keystone user (www-data): it must get in.
        _chown_tree(directory, APACHE_USER)
        password = secrets.token_urlsafe(16)
        config = directory / "keystone.conf"
        config.write_text(_keystone_conf(directory, "password,token", 1))
        manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(config)]
        owner = ["--keystone-user", APACHE_USER, "--keystone-group", APACHE_USER]

        def run_all(commands: list[list[str]]) -> None:
            running = [(c, subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                            stdin=subprocess.DEVNULL)) for c in commands]
            failures = []
            for command, process in running:
                output, _ = process.communicate(timeout=300)
                if process.returncode != 0:
                    failures.append(f"$ {' '.join(command)}\n{output[-3000:]}")
            if failures:
                raise FederatedKeystoneError("building the Keystone database failed:\n" + "\n".join(failures))

        run_all([manage + ["db_sync"], manage + ["fernet_setup", *owner], manage + ["credential_setup", *owner]])
        run_all([manage + ["bootstrap", f"--bootstrap-password={password}", "--bootstrap-region-id", "RegionOne",
                           "--bootstrap-public-url", "https://127.0.0.1:1/v3"]])
        _TEMPLATES[venv] = (directory, password)
        atexit.register(shutil.rmtree, directory, True)
        return _TEMPLATES[venv]


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _free_port() -> int:
    # Apache binds by itself, so the port is chosen here and released: a small window in which
    # another process could take it; start() tries again on "Address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_regex(iam_group: str) -> str:
    """A regex for Keystone's mapping that finds ``iam_group`` in the groups claim as mod_oauth2
    passes it: JSON text such as ``["users","alice-group"]``, or a plain string for one group."""
    return f'(^|"){re.escape(iam_group)}("|$)'


# --- one running instance ---------------------------------------------------------------------


class FederatedKeystone:
    """Keystone 30 under Apache with mod_oauth2 on the federation auth path; see the module doc.

    ``issuer``: the IAM-like issuer exactly as its tokens carry it (with the trailing slash);
    ``jwks_uri``: where its keys are; ``audience``: the ``aud`` a token must carry; ``ca_file``:
    the issuer's CA (mod_oauth2 has no option for a CA file; see :meth:`_jwks_options`).
    """

    def __init__(
        self,
        pki: PKI,
        issuer: str,
        jwks_uri: str,
        audience: str,
        ca_file: str | os.PathLike[str],
        app_credentials: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        *,
        venv: str | os.PathLike[str] | None = None,
        require_all: bool = True,
    ) -> None:
        self.pki = pki
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.audience = audience
        self.ca_file = Path(ca_file)
        self.app_credentials = app_credentials
        self.require_all = require_all
        self.ca_cert: Path = Path(pki.ca_cert)
        self._workdir_parent = Path(workdir) if workdir is not None else None
        self._venv_arg = Path(venv) if venv is not None else None
        self.venv: Path | None = None
        self.run_dir: Path | None = None
        self.port: int | None = None
        self.admin_password: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_token: str | None = None
        self._admin_token_expires = 0.0
        self._role_ids: dict[str, str] = {}
        self._rules: list[dict[str, Any]] = []
        self.idp_domain_id: str | None = None
        import requests

        self._http = requests.Session()
        self._http.trust_env = False
        self._http.verify = str(self.ca_cert)

    # -- addresses

    @property
    def url(self) -> str:
        if self.port is None:
            raise FederatedKeystoneError("not started")
        return f"https://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """The identity API root that clients (keystoneauth1, kubectl-openstack) are given."""
        return self.url + "/v3"

    @property
    def federation_auth_url(self) -> str:
        return self.url + AUTH_PATH

    @property
    def methods(self) -> str:
        return "password,token,mapped,openid" + (",application_credential" if self.app_credentials else "")

    @property
    def error_log(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "error.log"

    @property
    def access_log(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "access.log"

    # -- life cycle

    def __enter__(self) -> FederatedKeystone:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FederatedKeystone:
        if self._process is not None:
            raise FederatedKeystoneError("already started")
        self.venv = ensure_venv(self._venv_arg)
        template, self.admin_password = _template(self.venv)
        parent = self._workdir_parent or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="keystone-federation-", dir=parent))
        os.chmod(self.run_dir, 0o755)
        if not _reachable_by_others(self.run_dir):
            raise FederatedKeystoneError(f"{self.run_dir}: www-data cannot reach it; give a workdir it can")
        data = self.run_dir / "keystone"
        data.mkdir(mode=0o700)
        shutil.copy2(template / "keystone.db", data / "keystone.db")
        for keys in ("fernet-keys", "credential-keys"):
            shutil.copytree(template / keys, data / keys)
        (self.run_dir / "runtime").mkdir()
        wsgi = self.run_dir / "keystone.wsgi"
        wsgi.write_text(
            "import os\n"
            f"os.environ['OS_KEYSTONE_CONFIG_FILES'] = {str(data / 'keystone.conf')!r}\n"
            "from keystone.wsgi.api import application  # noqa: E402,F401\n"
        )
        try:
            for attempt in range(3):
                self.port = _free_port()
                (data / "keystone.conf").write_text(_keystone_conf(data, self.methods, self.port))
                _chown_tree(data, APACHE_USER)
                conf = self._write_httpd_conf()
                if self._launch(conf):
                    break
                if attempt == 2:
                    raise FederatedKeystoneError(f"no free port after 3 tries:\n{self.error_log_tail()}")
            self._wait_ready()
            self._fix_public_endpoint()
            self._set_up_federation()
        except BaseException:
            self.stop()
            raise
        return self

    def _jwks_options(self) -> str:
        # liboauth2 fetches the keys with libcurl and has no option to name a CA file, and libcurl
        # ignores SSL_CERT_FILE and CURL_CA_BUNDLE (tried: "unable to get local issuer
        # certificate"); the test CA is not in the system store (and must not be put there), so the
        # fetch skips verification. The URL is the provider's on 127.0.0.1.
        return "verify.exp=required&jwks_uri.ssl_verify=false"

    def _write_httpd_conf(self) -> Path:
        assert self.run_dir is not None and self.venv is not None and self.port is not None
        run = self.run_dir
        modules = "\n".join(
            f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so"
            for name in ("mpm_event", "authn_core", "authz_core", "ssl", "socache_shmcb", "oauth2")
        )
        requires = [f"Require oauth2_claim iss:{self.issuer}", f"Require oauth2_claim aud:{self.audience}"]
        if self.require_all:
            requires = ["<RequireAll>", *(f"    {r}" for r in requires), "</RequireAll>"]
        require_block = "\n".join(f"    {line}" for line in requires)
        conf = f"""# Written by tests/servers/keystone_federation.py
ServerRoot {run}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile {run}/apache2.pid
Mutex file:{run}/runtime default
DefaultRuntimeDir {run}/runtime
ErrorLog {run}/error.log
LogLevel warn
LogFormat "%h %t \\"%r\\" %>s %b %D" timed
CustomLog {run}/access.log timed
User {APACHE_USER}
Group {APACHE_USER}
{modules}
LoadModule wsgi_module {mod_wsgi_module(self.venv)}
StartServers 1
ServerLimit 4
ThreadsPerChild 16
MaxRequestWorkers 64
MinSpareThreads 16
MaxSpareThreads 48
KeepAlive On
SSLEngine on
SSLCertificateFile {self.pki.server_cert}
SSLCertificateKeyFile {self.pki.server_key}
SSLSessionCache shmcb:{run}/runtime/ssl_scache(512000)

WSGISocketPrefix {run}/runtime/wsgi
WSGIDaemonProcess keystone user={APACHE_USER} group={APACHE_USER} processes=1 threads=8 \\
    python-home={self.venv} display-name=keystone-federation
WSGIProcessGroup keystone
WSGIApplicationGroup %{{GLOBAL}}
WSGIScriptAlias / {run}/keystone.wsgi
<Directory {run}>
    Require all granted
</Directory>

<Location {AUTH_PATH}>
    AuthType oauth2
    OAuth2AcceptTokenIn header
    OAuth2TokenVerify jwks_uri {self.jwks_uri} {self._jwks_options()}
    OAuth2TargetPass prefix={CLAIM_PREFIX}&envvars=On&headers=Off&remote_user_claim=sub
{require_block}
</Location>
"""
        path = run / "httpd.conf"
        path.write_text(conf)
        return path

    def _launch(self, conf: Path) -> bool:
        """Start Apache; False if it could not bind its port (try another), raises on other errors."""
        assert self.run_dir is not None
        self.error_log.write_text("")
        check = subprocess.run(["apache2", "-t", "-f", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise FederatedKeystoneError(f"apache2 -t refused {conf}:\n{check.stdout}{check.stderr}")
        with open(self.run_dir / "apache2.out", "wb") as out:
            # start_new_session: setsid, so Apache and its children form a process group of their own.
            self._process = subprocess.Popen(["apache2", "-f", str(conf), "-DFOREGROUND"], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                             cwd=self.run_dir)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = self.error_log_tail()
                self._process = None
                if "Address already in use" in text:
                    return False
                raise FederatedKeystoneError(f"Apache exited while starting:\n{text}")
            if (self.run_dir / "apache2.pid").exists():
                return True
            time.sleep(0.05)  # polling interval
        return True

    def error_log_tail(self, lines: int = 40) -> str:
        if self.run_dir is None:
            return ""
        parts = []
        for path in (self.run_dir / "apache2.out", self.run_dir / "error.log"):
            with contextlib.suppress(OSError):
                parts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(parts)

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise FederatedKeystoneError(
                    f"Apache exited with {self._process.returncode} while starting:\n{self.error_log_tail()}")
            try:
                reply = self._http.get(self.auth_url, timeout=5)
                if reply.status_code == 200:
                    return
                last = f"GET /v3 answered {reply.status_code}"  # 503 while the WSGI daemon starts
            except requests.exceptions.SSLError:
                raise
            except requests.RequestException as error:
                last = error
            time.sleep(0.1)  # polling interval
        raise FederatedKeystoneError(
            f"Keystone under Apache not ready after {START_TIMEOUT:.0f} s ({last}):\n{self.error_log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
            # Children (the WSGI daemon) may outlive the parent briefly; wait for the group to empty.
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)  # polling interval
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        self._http.close()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- admin API

    def _admin(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> Any:
        if self._admin_token is None or time.time() > self._admin_token_expires - 60:
            self._login_admin()
        headers = {"X-Auth-Token": self._admin_token, **kwargs.pop("headers", {})}
        reply = self._http.request(method, self.auth_url + path, headers=headers, timeout=_HTTP_TIMEOUT, **kwargs)
        if reply.status_code not in expect:
            raise FederatedKeystoneError(f"{method} {path} answered {reply.status_code}: {reply.text[:2000]}")
        return reply

    def _login_admin(self) -> None:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": self.admin_password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        reply = self._http.post(self.auth_url + "/auth/tokens", json=body, timeout=_HTTP_TIMEOUT)
        if reply.status_code != 201:
            raise FederatedKeystoneError(f"admin login answered {reply.status_code}: {reply.text[:2000]}")
        self._admin_token = reply.headers["X-Subject-Token"]
        self._admin_token_expires = time.time() + 3000

    def _fix_public_endpoint(self) -> None:
        for endpoint in self._admin("GET", "/endpoints").json()["endpoints"]:
            self._admin("PATCH", f"/endpoints/{endpoint['id']}", json={"endpoint": {"url": self.auth_url}})

    def role_id(self, name: str = "member") -> str:
        if name not in self._role_ids:
            roles = self._admin("GET", "/roles", params={"name": name}).json()["roles"]
            if not roles:
                raise KeyError(f"no role named {name!r}")
            self._role_ids[name] = roles[0]["id"]
        return self._role_ids[name]

    def project_id(self, name: str, domain_id: str = "default") -> str | None:
        found = self._admin("GET", "/projects", params={"name": name, "domain_id": domain_id}).json()["projects"]
        return found[0]["id"] if found else None

    def create_project(self, name: str, domain_id: str = "default") -> str:
        """The id of project ``name``, made if missing."""
        existing = self.project_id(name, domain_id)
        if existing:
            return existing
        body = {"project": {"name": name, "domain_id": domain_id, "enabled": True}}
        return self._admin("POST", "/projects", json=body).json()["project"]["id"]

    def create_group(self, name: str, project_id: str | None = None, role: str = "member",
                     domain_id: str = "default") -> str:
        """A Keystone group, with ``role`` on ``project_id`` when given."""
        body = {"group": {"name": name, "domain_id": domain_id}}
        group_id = self._admin("POST", "/groups", json=body).json()["group"]["id"]
        if project_id is not None:
            self._admin("PUT", f"/projects/{project_id}/groups/{group_id}/roles/{self.role_id(role)}")
        return group_id

    def _set_up_federation(self) -> None:
        idp = {"identity_provider": {"enabled": True, "remote_ids": [self.issuer],
                                     "authorization_ttl": AUTHORIZATION_TTL_MINUTES,
                                     "description": "INDIGO IAM (test)"}}
        created = self._admin("PUT", f"/OS-FEDERATION/identity_providers/{IDENTITY_PROVIDER}", json=idp)
        self.idp_domain_id = created.json()["identity_provider"]["domain_id"]
        # Every token's sub names the (ephemeral) user; map_group adds the groups.
        self._rules = [{"local": [{"user": {"name": "{0}"}}], "remote": [{"type": f"{CLAIM_PREFIX}sub"}]}]
        self._admin("PUT", f"/OS-FEDERATION/mappings/{MAPPING_ID}", json={"mapping": {"rules": self._rules}})
        self._admin("PUT", f"/OS-FEDERATION/identity_providers/{IDENTITY_PROVIDER}/protocols/{PROTOCOL}",
                    json={"protocol": {"mapping_id": MAPPING_ID}})

    @property
    def mapping_rules(self) -> list[dict[str, Any]]:
        return json.loads(json.dumps(self._rules))

    def set_mapping_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the whole mapping (Keystone's rule language, remote types ``OIDC_CLAIM_<claim>``)."""
        self._admin("PATCH", f"/OS-FEDERATION/mappings/{MAPPING_ID}", json={"mapping": {"rules": rules}})
        self._rules = json.loads(json.dumps(rules))

    def map_group(self, iam_group: str | None, project: str, role: str = "member") -> str:
        """Give members of IAM group ``iam_group`` ``role`` on ``project`` (a project name, made if
        missing, or id); ``iam_group=None``: everybody with a valid token. Returns the Keystone
        group's id (named ``iam-<group>-<project>``)."""
        project_id = self._project_ref(project)
        name = f"iam-{iam_group or 'everybody'}-{project}-{secrets.token_hex(3)}"
        group_id = self.create_group(name, project_id, role)
        if iam_group is None:
            remote = [{"type": f"{CLAIM_PREFIX}sub"}]
        else:
            remote = [{"type": f"{CLAIM_PREFIX}groups", "any_one_of": [group_regex(iam_group)], "regex": True}]
        self.set_mapping_rules([*self._rules, {"local": [{"group": {"id": group_id}}], "remote": remote}])
        return group_id

    def _project_ref(self, project: str) -> str:
        reply = self._admin("GET", f"/projects/{project}", expect=(200, 404))
        if reply.status_code == 200:
            return project
        return self.create_project(project)

    def validate_token(self, token: str) -> tuple[int, dict[str, Any] | None]:
        """Validate ``token`` as k8s-keystone-auth does: GET /v3/auth/tokens with the token itself in
        X-Auth-Token and X-Subject-Token. Returns (status, body or None)."""
        reply = self._http.get(self.auth_url + "/auth/tokens", timeout=_HTTP_TIMEOUT,
                               headers={"X-Auth-Token": token, "X-Subject-Token": token})
        try:
            body = reply.json()
        except ValueError:
            body = None
        return reply.status_code, body

    def list_application_credentials(self, user_id: str) -> list[dict[str, Any]]:
        return self._admin("GET", f"/users/{user_id}/application_credentials").json()["application_credentials"]


# --- IAM-like access tokens from the test OpenID provider ------------------------------------------


def device_flow_access_token(provider: Any, audience: str, login: str = "alice") -> str:
    """A person's JWT access token with ``aud`` = ``audience``, as kubectl-iam gets it from IAM:
    device authorization, approval in the "browser" (browser_standin), then the token request
    with ``audience`` (IAM takes the audience on the token request)."""
    import requests

    from tests.servers.browser_standin import approve_device_code

    scope = "openid profile email offline_access"
    device = requests.post(provider.device_authorization_endpoint, verify=provider.ca_cert, timeout=_HTTP_TIMEOUT,
                           data={"client_id": provider.client_id, "scope": scope})
    device.raise_for_status()
    grant = device.json()
    approve_device_code(grant["verification_uri"], grant["user_code"], login, provider.ca_cert)
    reply = requests.post(provider.token_endpoint, verify=provider.ca_cert, timeout=_HTTP_TIMEOUT, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": grant["device_code"],
        "client_id": provider.client_id, "audience": audience})
    if reply.status_code != 200:
        raise FederatedKeystoneError(f"token request answered {reply.status_code}: {reply.text[:500]}")
    return reply.json()["access_token"]


def service_access_token(provider: Any, audience: str) -> str:
    """A service account's JWT access token (client credentials grant; ``sub`` is the client id)."""
    import requests

    reply = requests.post(provider.token_endpoint, verify=provider.ca_cert, timeout=_HTTP_TIMEOUT,
                          auth=(provider.service_client_id, provider.service_client_secret),
                          data={"grant_type": "client_credentials", "audience": audience})
    if reply.status_code != 200:
        raise FederatedKeystoneError(f"token request answered {reply.status_code}: {reply.text[:500]}")
    return reply.json()["access_token"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-venv", help="install the Debian packages and build the venv if missing")
    ensure.add_argument("directory", nargs="?", default=None)
    args = parser.parse_args(argv)
    directory = None
    if args.directory:
        directory = Path(args.directory)
        if not directory.is_absolute():
            directory = REPO_ROOT / directory
    print(ensure_venv(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main())

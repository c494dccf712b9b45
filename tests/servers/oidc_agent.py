"""A real oidc-agent (Debian's oidc-agent-cli) on a private socket, with accounts at the test OpenID provider.

    from tests.servers.oidc_agent import OIDCAgent, oidc_agent_tools

    missing = oidc_agent_tools()              # installs oidc-agent-cli when it can (tests/servers/debian.py)
    with OIDCAgent(tmp_dir) as agent:         # oidc-agent -d on <tmp_dir>/sock/oidc-agent.sock
        agent.environ                         # {"OIDC_SOCK": ...}, for whoever asks the agent
        agent.add_account("kube", provider, login="alice")   # oidc-gen, non-interactively
        agent.run("oidc-token", "kube")       # any oidc-agent command, against this agent only

The agent and its commands run with HOME, OIDC_CONFIG_DIR and TMPDIR inside `tmp_dir`, so the
account files (encrypted with a test password) never touch the real user's ~/.config/oidc-agent,
and without DISPLAY, so nothing waits for a desktop prompt.

An account needs a refresh token: oidc-gen takes one from the environment (`--rt-env`), and
`add_account` gets it first with a device flow approved by the scripted browser stand-in, for the
provider's confidential client (oidc-agent cannot use the provider's public client: it
authenticates a client with HTTP Basic, and IAM-like refreshes want the client's secret). oidc-gen
is told the test CA (`--cp`), which the agent then uses for every request to the provider.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

import requests

from tests.servers.browser_standin import approve_device_code
from tests.servers.oidc_provider import DEVICE_CODE_GRANT

__all__ = ["OIDCAgent", "OIDCAgentError", "oidc_agent_tools", "TOOLS"]

# The commands the tests use, and the Debian package that has them (Debian 12: oidc-agent-cli 4.2.6).
TOOLS = {"oidc-agent": "oidc-agent-cli", "oidc-gen": "oidc-agent-cli", "oidc-add": "oidc-agent-cli",
         "oidc-token": "oidc-agent-cli"}
ENCRYPTION_PASSWORD = "test-agent-password"
SCOPE = "openid profile email offline_access"
_TIMEOUT = 60.0


class OIDCAgentError(RuntimeError):
    pass


def oidc_agent_tools() -> Optional[str]:
    """None when oidc-agent's commands are here (installed if need be), else why not (a skip reason)."""
    from tests.servers.debian import ensure_commands

    return ensure_commands(TOOLS)


class OIDCAgent:
    """oidc-agent in the foreground (`-d`) in its own process group; a context manager, or start()/stop()."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.config_dir = self.home / ".config" / "oidc-agent"
        # UNIX socket paths are limited to about 107 bytes; pytest's tmp paths can come close.
        self.socket = self.root / "sock" / "oidc-agent.sock"
        if len(str(self.socket)) > 100:
            raise OIDCAgentError(f"socket path too long for a UNIX socket: {self.socket}")
        self.log_path = self.root / "oidc-agent.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def environ(self) -> Dict[str, str]:
        return {"OIDC_SOCK": str(self.socket)}

    def _env(self, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OIDC_", "OIDCD_")) and k not in ("DISPLAY", "WAYLAND_DISPLAY", "HOME", "TMPDIR")}
        env.update(HOME=str(self.home), OIDC_CONFIG_DIR=str(self.config_dir), TMPDIR=str(self.root),
                   OIDC_SOCK=str(self.socket), OIDC_AGENT_NOCOLOR="1")
        env.update(extra)
        return env

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> OIDCAgent:
        if self._proc is not None:
            raise OIDCAgentError("already started")
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.log_path, "wb") as log:
            # -d: stay in the foreground (so we own the process); --log-stderr: its log, for
            # failures (not -g: debug lines carry tokens, and go to syslog too); no automatic
            # re-authentication: it would wait for a browser nobody opens.
            self._proc = subprocess.Popen(
                ["oidc-agent", "-d", "--log-stderr", "--no-autoreauthenticate", "-a", str(self.socket)],
                env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise OIDCAgentError(f"oidc-agent exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.05)  # polling for the socket, not a guessed wait
        self.stop()
        raise OIDCAgentError(f"oidc-agent did not listen on {self.socket} within 15 s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        """Is the agent serving the socket? (Connecting alone: it answers an empty connection with
        an error and forgets it.)"""
        if not self.socket.exists():
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Its child (oidcd) is in the same process group, which is this agent's own.
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> OIDCAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- commands and accounts ---------------------------------------------------------------------
    def run(self, *argv: str, env: Optional[Dict[str, str]] = None, check: bool = False) -> subprocess.CompletedProcess:
        """An oidc-agent command (oidc-gen, oidc-add, oidc-token, ...) against this agent."""
        result = subprocess.run([shutil.which(argv[0]) or argv[0], *argv[1:]], env=self._env(**(env or {})),
                                capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL,
                                cwd=self.home)
        if check and result.returncode != 0:
            raise OIDCAgentError(f"{' '.join(argv)} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                                 f"agent log:\n{self.log_tail()}")
        return result

    def add_account(self, name: str, provider: Any, login: str = "alice", scope: str = SCOPE) -> None:
        """Create account `name` for `login` at the provider with its confidential client, and load it."""
        refresh_token = device_flow_refresh_token(provider, login, scope)
        self.run("oidc-gen", name, "--issuer", provider.issuer, "--client-id", provider.confidential_client_id,
                 "--client-secret", provider.confidential_client_secret, "--cp", str(provider.ca_cert),
                 "--scope", scope, "--rt-env", "--pw-cmd", f"echo {ENCRYPTION_PASSWORD}", "--prompt", "none",
                 "--confirm-default", env={"OIDC_REFRESH_TOKEN": refresh_token}, check=True)

    def remove_account(self, name: str) -> None:
        """Unload the account from the agent (`oidc-add -r`); its file stays."""
        self.run("oidc-add", "-r", name, check=True)


def device_flow_refresh_token(provider: Any, login: str, scope: str = SCOPE) -> str:
    """A refresh token for `login` and the provider's confidential client, from a device flow
    approved by the browser stand-in."""
    client = (provider.confidential_client_id, provider.confidential_client_secret)
    started = requests.post(provider.device_authorization_endpoint, data={"client_id": client[0], "scope": scope},
                            verify=provider.ca_cert, timeout=10)
    started.raise_for_status()
    device = started.json()
    approve_device_code(device["verification_uri"], device["user_code"], login, str(provider.ca_cert))
    answer = requests.post(provider.token_endpoint, data={"grant_type": DEVICE_CODE_GRANT,
                                                          "device_code": device["device_code"]},
                           auth=client, verify=provider.ca_cert, timeout=10)
    if answer.status_code != 200 or "refresh_token" not in answer.json():
        raise OIDCAgentError(f"device flow for {login} gave no refresh token: {answer.status_code} {answer.text}")
    return answer.json()["refresh_token"]

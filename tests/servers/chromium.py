"""A real browser for the sign-in tests: headless Chromium, driven over its DevTools protocol.

    from tests.servers.chromium import sign_in

    page = sign_in(authorization_url, login="alice", server_cert=provider.cert)
    page.status, page.text     # what the client's loopback address answered Chromium

Chromium opens the authorization URL, and the person's part is played through the DevTools
protocol (https://chromedevtools.github.io/devtools-protocol/): typing the login and password
into the provider's sign-in form (Input.insertText, real input events), clicking its buttons with
the mouse (Input.dispatchMouseEvent at the button's place on the page), and reading where the
browser ended up. Everything else (TLS, cookies, the provider's redirects, following the last
one to the client's loopback listener) is Chromium's own doing.

The protocol runs over a pipe (--remote-debugging-pipe: Chromium reads commands on its fd 3 and
writes answers on fd 4, each a JSON text ended by a NUL byte), so no port is opened and no
websocket client is needed. Chromium trusts the provider's certificate by its public key only
(--ignore-certificate-errors-spki-list), resolves no host name but 127.0.0.1 (the provider's
page loads a web font from the Internet: it must not), uses no proxy and a new, empty profile.

`python -m tests.servers.chromium URL --server-cert FILE [--login alice]` does the same by hand.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.servers.browser_standin import BrowserStandinError, LoopbackPage

__all__ = ["CHROMIUM_FLAGS", "ChromiumError", "DevTools", "chromium_command", "sign_in", "spki_hash"]

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
_STEP = 0.1  # how often the page is looked at while it loads


class ChromiumError(BrowserStandinError):
    """Chromium did not start, or the DevTools protocol answered with an error."""


def chromium_command() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def spki_hash(cert_path: str | os.PathLike[str]) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, as --ignore-certificate-errors-spki-list takes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class DevTools:
    """One headless Chromium and its DevTools protocol over a pipe; a context manager."""

    def __init__(self, server_cert: str | os.PathLike[str], timeout: float = 60.0) -> None:
        command = chromium_command()
        if command is None:
            raise ChromiumError("chromium is not installed")
        self.deadline = time.monotonic() + timeout
        self.profile = tempfile.mkdtemp(prefix="kubectl-caas-chromium-")
        to_chromium, self._commands = os.pipe()  # Chromium reads fd 3
        self._answers, from_chromium = os.pipe()  # Chromium writes fd 4

        def onto_3_and_4() -> None:  # in the child, before exec: above 10 first, so neither is overwritten
            reading, writing = fcntl.fcntl(to_chromium, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chromium, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.log = Path(self.profile) / "chromium.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [command, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                 f"--ignore-certificate-errors-spki-list={spki_hash(server_cert)}", "--remote-debugging-pipe",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(3, 4), preexec_fn=onto_3_and_4)
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (ChromiumError, OSError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _read_message(self, until: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = until - time.monotonic()
            if left <= 0:
                raise ChromiumError("Chromium did not answer in time")
            ready, _, _ = select.select([self._answers], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise ChromiumError(f"Chromium closed the DevTools pipe; its log ends: {self._tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, *, browser_level: bool = False,
             timeout: float = 15.0) -> dict[str, Any]:
        """Send one command (to the attached page unless `browser_level`) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser_level and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        until = min(time.monotonic() + timeout, self.deadline + 5)
        while True:
            answer = self._read_message(until)
            if answer.get("id") != self._next_id:
                continue  # an event, or the answer to nothing we wait for
            if "error" in answer:
                raise ChromiumError(f"{method}: {answer['error'].get('message')}")
            return answer.get("result", {})

    def attach_to_page(self) -> None:
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; None while the page is between documents."""
        try:
            result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        except ChromiumError as exc:
            if "context" in str(exc).lower():  # navigating: the old document is gone, the new one not there yet
                return None
            raise
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """A left click with the mouse in the middle of the element."""
        where = self.evaluate(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            if (!el) return null; el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()""")
        if not where:
            raise ChromiumError(f"nothing to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": where["x"], "y": where["y"], "button": "left",
                                                   "clickCount": 1})

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type `text` into it (input events, as from a keyboard)."""
        if not self.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                             "if (!el) return false; el.focus(); el.select && el.select(); return true; })()"):
            raise ChromiumError(f"no field {selector}")
        self.call("Input.insertText", {"text": text})


_LOOK = """(() => ({
  href: location.href, ready: document.readyState, title: document.title,
  text: document.body ? document.body.innerText : '',
  status: (performance.getEntriesByType('navigation')[0] || {}).responseStatus || 0,
  prompt: (document.querySelector('form input[name=prompt]') || {}).value || null,
  uid: location.pathname,
}))()"""


def sign_in(url: str, *, login: str = "alice", password: str = "any-password",
            server_cert: str | os.PathLike[str], timeout: float = 60.0) -> LoopbackPage:
    """Open `url` in headless Chromium, sign in and consent like a person, and return what the
    client's loopback address answered once the provider's redirect reached it."""
    with DevTools(server_cert, timeout) as chromium:
        chromium.attach_to_page()
        chromium.call("Page.navigate", {"url": url})
        done: set[tuple[str, str]] = set()  # (page, prompt) handled: never submit a form twice
        steps: list[str] = []
        while time.monotonic() < chromium.deadline:
            page = chromium.evaluate(_LOOK)
            if not page or page["ready"] != "complete":
                time.sleep(_STEP)
                continue
            where = urlsplit(page["href"])
            if where.scheme == "http" and where.hostname == "127.0.0.1":
                steps.append("loopback")
                return LoopbackPage(page["href"], int(page["status"]), page["title"], " ".join(page["text"].split()),
                                    steps)
            key = (page["uid"], page["prompt"] or "")
            if page["prompt"] == "login" and key not in done:
                done.add(key)
                steps.append("login")
                chromium.type_into("input[name=login]", login)
                chromium.type_into("input[name=password]", password)
                chromium.click("form button[type=submit]")
            elif page["prompt"] == "consent" and key not in done:
                done.add(key)
                steps.append("consent")
                chromium.click("form button[type=submit]")
            elif page["prompt"] is None and page["href"] != "about:blank" and where.hostname != "127.0.0.1":
                if "oops" in page["text"].lower() or page["status"] >= 400:
                    raise ChromiumError(f"the provider showed an error page at {page['href']}: {page['text'][:300]}")
            time.sleep(_STEP)
        raise ChromiumError(f"the sign-in did not reach the loopback address in {timeout:.0f} s (steps: {steps})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.chromium",
                                     description="Sign in at an authorization URL with headless Chromium.")
    parser.add_argument("url")
    parser.add_argument("--server-cert", required=True, help="the provider's TLS certificate (PEM)")
    parser.add_argument("--login", default="alice")
    args = parser.parse_args(argv)
    try:
        page = sign_in(args.url, login=args.login, server_cert=args.server_cert)
    except BrowserStandinError as exc:
        print(f"chromium: {exc}", file=sys.stderr)
        return 1
    print(f"{page.url.split('?')[0]} answered HTTP {page.status}: {page.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The side effects of one run, handed in rather than reached for.

A console script builds one Runtime and passes it down: the environment variables, the clocks,
sleeping, the person at the terminal (notices on stderr, secret prompts, whether stdin is a
terminal), the browser, and whether --debug is on. Tests build one with fakes, so a whole login or
renewal runs without a terminal, a browser or real waiting (see tests/unit).

Standard library only and cheap to build: get-token makes one on every kubectl command.
"""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional, Set, TextIO


class Runtime:
    __slots__ = ("environ", "clock", "monotonic", "sleep", "stderr", "debug", "_ask_secret", "_open_browser",
                 "_isatty", "_said")

    def __init__(self, environ: Optional[Mapping[str, str]] = None, clock: Optional[Callable[[], float]] = None,
                 monotonic: Optional[Callable[[], float]] = None, sleep: Optional[Callable[[float], Any]] = None,
                 stderr: Optional[TextIO] = None, ask_secret: Optional[Callable[[str], Optional[str]]] = None,
                 open_browser: Optional[Callable[[str], bool]] = None, isatty: Optional[Callable[[], bool]] = None,
                 debug: bool = False):
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.clock = clock or time.time
        self.monotonic = monotonic or time.monotonic
        self.sleep = sleep or time.sleep
        self.stderr = stderr
        self.debug = debug
        self._ask_secret = ask_secret
        self._open_browser = open_browser
        self._isatty = isatty
        self._said: Set[str] = set()

    # -- the person at the terminal -------------------------------------------------------------

    def notice(self, message: object) -> None:
        """One line for the person, on stderr; control characters shown escaped (terminal.printable)."""
        from kubectl_caas.terminal import printable

        print(printable(message), file=self.stderr or sys.stderr)

    def notice_once(self, message: str) -> None:
        """The same notice only once in this run (several entries may give the same reason)."""
        if message not in self._said:
            self._said.add(message)
            self.notice(message)

    def ask_secret(self, prompt: str) -> Optional[str]:
        """A secret typed without echo, or None when no person can answer."""
        if self._ask_secret is not None:
            return self._ask_secret(prompt)
        from kubectl_caas.terminal import prompt_secret

        return prompt_secret(prompt)

    def isatty(self) -> bool:
        if self._isatty is not None:
            return self._isatty()
        return sys.stdin is not None and sys.stdin.isatty()

    def open_browser(self, url: str) -> bool:
        """Open a sign-in page; False when it is not safe to, or no browser could (browser.py)."""
        if self._open_browser is not None:
            return self._open_browser(url)
        from kubectl_caas.browser import open_url

        return open_url(url, self.environ)

    def getenv(self, name: str) -> Optional[str]:
        return self.environ.get(name) or None

"""Talking to the person at the terminal. Standard library only: get-token asks too, when kubectl
says a person is there and nothing else can renew the token.

Servers choose many of the strings we show (user codes, URLs, error descriptions, project, user
and group names). A terminal obeys escape sequences in them: colours, cursor moves that overwrite
earlier lines, OSC 52 writes to the clipboard. So everything shown passes through `printable`,
which turns control characters into visible escapes.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, TextIO

# C0, DEL and C1 controls, plus the Unicode line/paragraph separators and bidirectional
# overrides, which can forge a line break or reorder what the reader sees ("Trojan Source").
_INVISIBLE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
              *range(0x2066, 0x206A)]
_ESCAPES: Dict[int, str] = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _INVISIBLE}


def printable(text: object) -> str:
    """`text` with every control character shown as an escape (\\x1b, \\u202e), on one line."""
    return str(text).translate(_ESCAPES)


def show(message: object, stream: Optional[TextIO] = None) -> None:
    """One line for a person, on stderr unless told otherwise; server-chosen parts made printable."""
    print(printable(message), file=stream or sys.stderr)


def has_terminal() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return sys.stdin is not None and sys.stdin.isatty()


def prompt_secret(prompt: str) -> Optional[str]:
    """Ask without echo; None when no person can answer."""
    if not has_terminal():
        return None
    import getpass

    try:
        return getpass.getpass(printable(prompt))
    except (EOFError, OSError):
        return None

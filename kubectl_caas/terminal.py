"""Asking the person at the terminal. Standard library only: get-token asks too, when kubectl
says a person is there and nothing else can renew the token."""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


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
        return getpass.getpass(prompt)
    except (EOFError, OSError):
        return None

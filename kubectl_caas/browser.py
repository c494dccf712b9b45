"""Opening a page in the person's browser for a sign-in.

The URL comes from a server, so it is checked first: only https:// (http:// on loopback), which
rules out `javascript:`, `data:` and `file:` pages, and any word a browser's command line would
take for an option (a URL that starts with `-`). The browser is a long-lived program that we
start with our environment, so the variables that hold our secrets are left out of it.
"""
from __future__ import annotations

import os
import re
import sys
import webbrowser

from kubectl_caas import http

# Whatever looks like a secret by its name, plus the ones we read by name.
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PASSCODE|CREDENTIAL|PRIVATE|_KEY$", re.I)


def secret_free_environment() -> dict:
    return {k: v for k, v in os.environ.items() if not _SECRET_NAME.search(k)}


def can_open() -> bool:
    """A browser can show a page only in a desktop session, or on macOS."""
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_url(url: str) -> bool:
    """Open `url` in a new browser tab; False when it is not safe to, or no browser could."""
    if not http.is_secure_url(url) or url.startswith("-") or not can_open():
        return False
    saved = dict(os.environ)
    clean = secret_free_environment()
    try:
        # webbrowser starts the browser with os.environ, so the secrets go out of it for that moment.
        os.environ.clear()
        os.environ.update(clean)
        return webbrowser.get().open(url, new=2)
    except webbrowser.Error:
        return False
    finally:
        os.environ.clear()
        os.environ.update(saved)

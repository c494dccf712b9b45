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
from typing import Dict, Mapping, Optional

from kubectl_caas import http

# Whatever looks like a secret by its name, plus the ones we read by name.
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PASSCODE|CREDENTIAL|PRIVATE|_KEY$", re.I)


def secret_free_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    return {k: v for k, v in environ.items() if not _SECRET_NAME.search(k)}


def can_open(environ: Mapping[str, str]) -> bool:
    """A browser can show a page only in a desktop session, or on macOS."""
    return sys.platform == "darwin" or bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def open_url(url: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Open `url` in a new browser tab, the browser seeing `environ` (the run's) without its
    secrets; False when it is not safe to, or no browser could."""
    environ = os.environ if environ is None else environ
    if not http.is_secure_url(url) or url.startswith("-") or not can_open(environ):
        return False
    saved = dict(os.environ)
    clean = secret_free_environment(environ)
    try:
        # webbrowser starts the browser with os.environ, so that is what it must hold for that moment.
        os.environ.clear()
        os.environ.update(clean)
        return webbrowser.get().open(url, new=2)
    except webbrowser.Error:
        return False
    finally:
        os.environ.clear()
        os.environ.update(saved)

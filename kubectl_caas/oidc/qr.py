"""The device flow's link as a QR code on the terminal, so a phone can approve the sign-in (as
oidc-agent does). Drawn with segno, two modules per character cell; only for a link that passed
the same checks as one we would open in a browser, and only on a terminal."""
from __future__ import annotations

import io
from typing import List, Optional

from kubectl_caas import http

MAX_URL = 512  # a longer link makes a code too dense for a terminal (and no real provider sends one)


def qr_lines(url: str) -> Optional[List[str]]:
    """The QR code of `url` as lines of block characters, or None when it should not be drawn."""
    if not isinstance(url, str) or len(url) > MAX_URL or not url.isprintable() or not http.is_secure_url(url):
        return None
    import segno

    out = io.StringIO()
    segno.make(url, error="l").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n").splitlines()

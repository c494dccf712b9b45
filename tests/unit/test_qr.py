"""The device flow's QR code: drawn on a UTF-8 terminal only, only for a link we would open, and
decoded by an independent reader (zbarimg from Debian's zbar-tools) back to that very link."""
from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from kubectl_caas.oidc.device import announce
from kubectl_caas.oidc.qr import qr_lines
from kubectl_caas.runtime import Runtime
from tests.servers.debian import ensure_commands

URL = "https://iam.example.org/device?user_code=WDJB-MJHT"


class Terminal(io.StringIO):
    def __init__(self, tty=True, encoding="utf-8"):
        super().__init__()
        self._tty, self._encoding = tty, encoding

    def isatty(self):
        return self._tty

    @property
    def encoding(self):
        return self._encoding


def shown(stream, qr=True, complete=URL):
    rt = Runtime(environ={}, stderr=stream, clock=lambda: 0.0)
    announce({"verification_uri": "https://iam.example.org/device", "user_code": "WDJB-MJHT",
              "verification_uri_complete": complete, "expires_in": 600}, rt, qr=qr)
    return stream.getvalue()


def modules(lines):
    """The module matrix drawn with half blocks: each character is two rows (upper, lower)."""
    upper = {" ": False, "▀": True, "▄": False, "█": True}
    lower = {" ": False, "▀": False, "▄": True, "█": True}
    rows = []
    for line in lines:
        rows.append([upper[c] for c in line])
        rows.append([lower[c] for c in line])
    return rows


def pbm(rows, scale=4):
    """A plain PBM image (black = 1) of the matrix; segno draws dark modules as spaces."""
    width = len(rows[0]) * scale
    out = [f"P1\n{width} {len(rows) * scale}\n"]
    for row in rows:
        line = " ".join("1" if not lit else "0" for lit in row for _ in range(scale))
        out.extend(line + "\n" for _ in range(scale))
    return "".join(out)


def test_qr_is_drawn_on_a_utf8_terminal_and_decodes_to_the_link(tmp_path):
    text = shown(Terminal())
    assert f"or open {URL}" in text
    lines = text.split("--no-qr hides this):\n", 1)[1].split("\n(the code is valid", 1)[0].splitlines()
    assert lines == qr_lines(URL)
    missing = ensure_commands({"zbarimg": "zbar-tools"})
    if missing:
        pytest.skip(f"no QR decoder to check against: {missing}")
    image = tmp_path / "qr.pbm"
    image.write_text(pbm(modules(lines)))
    decoded = subprocess.run([shutil.which("zbarimg"), "--quiet", "--raw", str(image)], capture_output=True,
                             text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout.strip() == URL


@pytest.mark.parametrize("stream,qr", [(Terminal(tty=False), True), (Terminal(), False),
                                       (Terminal(encoding="ascii"), True)],
                         ids=["not-a-terminal", "no-qr", "not-utf8"])
def test_no_qr_where_it_cannot_or_should_not_be_drawn(stream, qr):
    text = shown(stream, qr=qr)
    assert f"or open {URL}" in text and "█" not in text and "scan it" not in text


@pytest.mark.parametrize("complete", ["javascript:alert(1)", "http://evil.example/device", "-https://x/device",
                                      "https://x/" + "a" * 600])
def test_no_qr_for_a_link_we_would_not_open(complete):
    assert qr_lines(complete) is None

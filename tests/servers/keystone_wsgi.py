"""Serve Keystone's public WSGI app over TLS; run by the Keystone virtualenv's python.

Started by tests/servers/keystone.py, never imported by the project's own environment.
The parent binds the listening socket and hands us its file descriptor, so the port is known
before we start and no other process can take it in between. Every request is appended as one
JSON line to the request log, which the tests read to count Keystone calls.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

# This directory holds tests/servers/keystone.py, which would shadow the real ``keystone``
# package: drop it from the import path before importing anything from Keystone.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

# Header the test fixture puts on its own admin calls, so the log can tell them apart.
ADMIN_HEADER = "HTTP_X_KUBECTL_CAAS_FIXTURE"
AUTH_PATH = "/v3/auth/tokens"


class RequestLog:
    """WSGI middleware: one JSON line per request (method, path, query, status, ...)."""

    def __init__(self, app, path: Path) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()

    def _auth_summary(self, environ: dict) -> dict:
        # For logins, record which methods were used and whether a scope was sent, so tests can
        # tell a password login from an application credential one. The body is put back.
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            auth = json.loads(body)["auth"]
            return {
                "auth_methods": list(auth["identity"]["methods"]),
                "auth_scoped": "scope" in auth,
            }
        except (ValueError, KeyError, TypeError):
            return {}

    def __call__(self, environ: dict, start_response):
        entry: dict = {
            "time": time.time(),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "fixture": ADMIN_HEADER in environ,
            "status": None,
        }
        if entry["method"] == "POST" and entry["path"].rstrip("/") == AUTH_PATH:
            entry.update(self._auth_summary(environ))

        def recording_start_response(status: str, headers, exc_info=None):
            entry["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        except Exception:
            entry["status"] = 500
            raise
        finally:
            # Opened per write in append mode: the fixture may truncate the file at any time.
            line = json.dumps(entry) + "\n"
            with self.lock, open(self.path, "a", encoding="utf-8") as log:
                log.write(line)


def _exit_when_parent_goes() -> None:
    # The parent keeps our stdin open; EOF means it died without stopping us. Exit rather than
    # leave an orphan server running.
    sys.stdin.buffer.read()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--request-log", required=True)
    args = parser.parse_args()

    # oslo.config parses sys.argv when Keystone configures itself; leave it nothing to misread.
    sys.argv[:] = sys.argv[:1]
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = args.config
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()

    from keystone.server import wsgi as keystone_wsgi
    from werkzeug.serving import make_server

    app = RequestLog(keystone_wsgi.initialize_public_application(), Path(args.request_log))
    # make_server is what werkzeug's run_simple uses, minus the reloader and the banner; it
    # adopts the already-listening socket through ``fd``.
    server = make_server(
        "127.0.0.1",
        0,
        app,
        threaded=True,
        ssl_context=(args.cert, args.key),
        fd=args.fd,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()

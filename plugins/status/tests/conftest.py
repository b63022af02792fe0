"""Fixtures of the status plugin's tests: loopback TCP/HTTP servers the tests start, and components on nodes."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.rsplit("/", 1)[-1] or 3))
        code = 503 if self.path.startswith("/broken") else 200
        body = b"ok\n" if code == 200 else b"unavailable\n"
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture
def http_server():
    """A real HTTP server on loopback: ``/`` is 200, ``/broken`` is 503, ``/slow/<s>`` answers after s seconds."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def tcp_server():
    """A TCP listener on loopback that accepts and closes connections; yields its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    stop = threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join(2)
    sock.close()


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def make_component(app):
    from hostbay.core.db import db
    from hostbay.plugins.status.incidents import save_component

    def _make(name="Frankfurt", **kw):
        c = save_component(None, name=name, **kw)
        db.session.commit()
        return c
    return _make


@pytest.fixture
def make_probe(app):
    from hostbay.core.db import db
    from hostbay.plugins.status.incidents import save_probe

    def _make(component, **kw):
        kw.setdefault("name", kw.get("kind", "probe"))
        p = save_probe(None, component_id=component.id, **kw)
        db.session.commit()
        return p
    return _make

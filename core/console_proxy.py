"""The console proxy: websockify's ``WebSocketProxy`` with a token plugin that redeems hostbay console tokens.

``hostbay console-proxy`` listens on ``HOSTBAY_CONSOLE_PROXY_HOST:PORT`` (loopback by default) behind the TLS
reverse proxy that serves the panel (see docs/console.md). A browser connects to ``HOSTBAY_CONSOLE_URL?token=…``;
the plugin spends the token (single use, owner and state checked again) inside an app context and hands websockify
the driver's raw VNC address, which websockify relays as binary WebSocket frames; a driver whose console is itself
a WebSocket (Proxmox's ``vncwebsocket``) gets it opened server-side by :mod:`hostbay.core.console_relay`. websockify serves each
connection in a forked process, so the plugin gives every process its own database connections.

Refusals answer HTTP 403 before the WebSocket upgrade; tokens are never written to the log.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from urllib.parse import urlsplit

from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

log = logging.getLogger(__name__)

RELAYED_PROTOCOLS = ("vnc",)  # raw RFB over TCP
UPSTREAM_PROTOCOLS = ("websocket",)  # a WebSocket upstream that hostbay opens itself (core/console_relay.py)
_TOKEN_RE = re.compile(r"(token=)[^&\s'\"]*")


def redact(text: str) -> str:
    return _TOKEN_RE.sub(r"\1[redacted]", text)


class HostbayTokenPlugin:
    """websockify token plugin: ``lookup(token)`` returns ``(host, port)`` or ``None``."""

    def __init__(self, app):
        self.app = app
        self._pid = None

    def _fresh_connections(self) -> None:
        # A forked handler process must not share pooled connections with its parent.
        if self._pid != os.getpid():
            from .db import db

            with self.app.app_context():
                db.engine.dispose(close=False)
            self._pid = os.getpid()

    def lookup(self, token: str):
        from . import console
        from .db import db

        self._fresh_connections()
        with self.app.app_context():
            try:
                target, user_id, service_id = console.redeem_for(token)
            except console.ConsoleRefused as exc:
                log.info("console token refused: %s", exc.__cause__ or exc)
                return None
            except Exception:  # noqa: BLE001 - a driver failure refuses this connection only
                log.exception("console target lookup failed")
                return None
            finally:
                db.session.remove()
        if target.protocol in UPSTREAM_PROTOCOLS:
            self.upstream = target  # this forked process serves one connection: new_websocket_client opens it
            return "hostbay-upstream", 0
        if target.protocol not in RELAYED_PROTOCOLS:
            log.error("console target protocol %r cannot be relayed by this proxy", target.protocol)
            return None
        self.redeemed = (user_id, service_id)  # this forked handler's connection
        return target.host, int(target.port)

    def opened(self, ids) -> None:
        """Record "Web console opened" once the connection to the console stands."""
        from . import console
        from .db import db

        with self.app.app_context():
            try:
                console.record_opened(*ids)
            except Exception:  # noqa: BLE001 - the console works even if the activity line cannot be written
                log.exception("could not record the console opening")
            finally:
                db.session.remove()


class HostbayProxyHandler(ProxyRequestHandler):
    """Answers refusals with 403, checks the Origin of browsers, and keeps tokens out of the log."""

    def log_message(self, format, *args):  # noqa: A002 - websockify's signature
        super().log_message("%s", redact(format % args if args else format))

    def _refuse(self, code: int, message: str):
        self.send_response(code, message)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(message)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(message.encode())
        raise self.server.EClose(message)

    def get_target(self, target_plugin):
        allowed = getattr(self.server, "hostbay_origins", ())
        origin = self.headers.get("Origin")
        if origin and allowed and origin.rstrip("/") not in allowed:
            self._refuse(403, "Console refused: wrong origin")
        from urllib.parse import parse_qs

        args = parse_qs(urlsplit(self.path).query)
        token = (args.get("token") or [""])[0].strip()
        if not token:
            self._refuse(403, "Console refused: no token")
        target_plugin.upstream = None
        target = target_plugin.lookup(token)
        if target is None:
            self._refuse(403, "Console refused: the link has expired or was already used")
        self.hostbay_plugin, self.hostbay_redeemed = target_plugin, getattr(target_plugin, "redeemed", None)
        self.hostbay_upstream = getattr(target_plugin, "upstream", None)
        return target

    def do_proxy(self, target):
        """Called by websockify once the console's socket is connected: now the console is open."""
        if getattr(self, "hostbay_redeemed", None):
            self.hostbay_plugin.opened(self.hostbay_redeemed)
        return super().do_proxy(target)

    def new_websocket_client(self):
        upstream = getattr(self, "hostbay_upstream", None)
        if upstream is None:
            return super().new_websocket_client()
        from .console_relay import start_relay

        try:
            local = start_relay(upstream)  # the upstream's address, headers and password stay in this process
        except Exception as exc:  # noqa: BLE001 - refuse this connection only
            log.error("console upstream could not be opened: %s", type(exc).__name__)
            raise self.CClose(1011, "Failed to connect to the console")
        try:
            self.do_proxy(local)
        finally:
            local.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def build_server(app, host: str | None = None, port: int | None = None, **kwargs) -> WebSocketProxy:
    host = host or app.config["HOSTBAY_CONSOLE_PROXY_HOST"]
    port = int(port if port is not None else app.config["HOSTBAY_CONSOLE_PROXY_PORT"])
    server = WebSocketProxy(RequestHandlerClass=HostbayProxyHandler, listen_host=host, listen_port=port,
                            token_plugin=HostbayTokenPlugin(app), web='', daemon=False, **kwargs)
    base = _origin(app.config.get("HOSTBAY_BASE_URL") or "")
    server.hostbay_origins = tuple(o for o in {base} if o)
    return server


def serve(app, host: str | None = None, port: int | None = None, **kwargs) -> None:
    """Run the proxy in this process until SIGINT/SIGTERM (websockify forks one process per connection)."""
    try:
        multiprocessing.set_start_method("fork", force=True)
    except (RuntimeError, ValueError):  # pragma: no cover - platforms without fork
        pass
    build_server(app, host, port, **kwargs).start_server()

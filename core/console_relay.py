"""Relay a console whose upstream is a WebSocket (e.g. Proxmox VE's ``vncwebsocket``), opened by hostbay itself.

A driver returns ``ConsoleTarget(protocol="websocket", host, port, path, password, extra)`` where ``path`` holds
the path and query, ``extra["headers"]`` the headers the upstream needs (an API token), ``extra["tls"]`` and
``extra["verify"]`` (True, False or a CA bundle path) the TLS settings, and ``password`` the VNC password the
upstream's RFB server asks for. The console proxy (websockify) relays the browser's WebSocket to one end of a
socket pair; :func:`start_relay` connects the other end to the upstream WebSocket.

When the upstream asks for VNC authentication, the relay answers it itself and offers the browser "no
authentication" on its side of the handshake: the browser never receives the upstream's host, headers, ticket or
password, only the RFB stream after authentication. hostbay's own single-use console token is what authorises the
browser.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading

log = logging.getLogger(__name__)

RFB_VERSION = b"RFB 003.008\n"
SEC_NONE, SEC_VNC = 1, 2


def _reverse_bits(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The RFB "VNC Authentication" answer: the 16-byte challenge DES-encrypted with the password (its first 8
    bytes, each byte's bits reversed, as every VNC implementation does)."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes(_reverse_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


class RelayError(Exception):
    pass


class _WsStream:
    """Byte-stream view of a websockets sync client connection (binary messages)."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = self.ws.recv()
            self.buf += msg if isinstance(msg, bytes) else msg.encode()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def write(self, data: bytes) -> None:
        self.ws.send(data)


def _recv_exact(sock, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise RelayError("browser side closed during the handshake")
        out += chunk
    return out


def _handshake_up(up: _WsStream, password: str | None) -> None:
    """Authenticate to the upstream RFB server (RFB 3.8)."""
    version = up.read(12)
    if not version.startswith(b"RFB "):
        raise RelayError(f"upstream did not speak RFB ({version!r})")
    up.write(RFB_VERSION)
    count = up.read(1)[0]
    if count == 0:
        length = struct.unpack(">I", up.read(4))[0]
        raise RelayError(f"upstream refused: {up.read(length)!r}")
    types = set(up.read(count))
    if SEC_VNC in types and password is not None:
        up.write(bytes([SEC_VNC]))
        up.write(vnc_auth_response(password, up.read(16)))
    elif SEC_NONE in types:
        up.write(bytes([SEC_NONE]))
    else:
        raise RelayError(f"upstream offers no usable security type ({sorted(types)})")
    result = struct.unpack(">I", up.read(4))[0]
    if result != 0:
        raise RelayError("upstream rejected the VNC authentication")


def _handshake_down(up: _WsStream, down: socket.socket) -> None:
    """The browser's side of the handshake: the same version, security type None, result OK."""
    down.sendall(RFB_VERSION)
    _recv_exact(down, 12)
    down.sendall(bytes([1, SEC_NONE]))
    if _recv_exact(down, 1)[0] != SEC_NONE:
        raise RelayError("browser chose an unknown security type")
    down.sendall(struct.pack(">I", 0))
    if up.buf:
        down.sendall(up.buf)
        up.buf = b""


def connect_upstream(target):
    """Open the upstream WebSocket of ``target`` (a ConsoleTarget with protocol "websocket")."""
    from websockets.sync.client import connect

    extra = dict(target.extra or {})
    tls = extra.get("tls", True)
    ctx = None
    if tls:
        verify = extra.get("verify", True)
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    host = f"[{target.host}]" if ":" in target.host else target.host
    url = f"{'wss' if tls else 'ws'}://{host}:{int(target.port)}{target.path}"
    return connect(url, ssl=ctx, additional_headers=dict(extra.get("headers") or {}),
                   subprotocols=extra.get("subprotocols") or ["binary"], open_timeout=15, max_size=None,
                   compression=None, user_agent_header="hostbay-console")


def start_relay(target) -> socket.socket:
    """Connect to the upstream of ``target`` and return a local socket carrying the plain RFB stream after
    authentication; two threads pump bytes until either side closes."""
    ws = connect_upstream(target)
    mine, theirs = socket.socketpair()
    up = _WsStream(ws)
    try:
        _handshake_up(up, target.password)
    except BaseException:
        ws.close()
        mine.close()
        theirs.close()
        raise

    def upstream_to_local():
        try:
            _handshake_down(up, mine)
            threading.Thread(target=local_to_upstream, daemon=True).start()
            for msg in ws:
                mine.sendall(msg if isinstance(msg, bytes) else msg.encode())
        except Exception:  # noqa: BLE001 - either side closing ends the relay
            pass
        finally:
            _close(mine)

    def local_to_upstream():
        try:
            while True:
                data = mine.recv(65536)
                if not data:
                    break
                ws.send(data)
        except Exception:  # noqa: BLE001
            pass
        finally:
            ws.close()

    threading.Thread(target=upstream_to_local, daemon=True).start()
    return theirs


def _close(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

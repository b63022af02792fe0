"""A tiny RFB (VNC) server that shows a text screen: the console of the simulated driver.

Enough of RFB 3.8 (RFC 6143) for noVNC and other viewers: security type None, ServerInit, the client's
SetPixelFormat / SetEncodings / FramebufferUpdateRequest / key / pointer / cut-text messages, and one Raw-encoded
frame per full (non-incremental) update request. The screen is drawn in grey levels only, so it looks the same
in every true-colour pixel format a client asks for. It listens on loopback only.
"""

from __future__ import annotations

import socket
import struct
import threading

WIDTH, HEIGHT = 640, 240
SCALE = 3  # each font pixel is SCALE x SCALE screen pixels
CELL_W, CELL_H = 6 * SCALE, 9 * SCALE

# 5x7 glyphs, one row per entry (bit 4 is the left column).
FONT = {
    " ": [0, 0, 0, 0, 0, 0, 0],
    "A": [14, 17, 17, 31, 17, 17, 17], "B": [30, 17, 17, 30, 17, 17, 30], "C": [14, 17, 16, 16, 16, 17, 14],
    "D": [30, 17, 17, 17, 17, 17, 30], "E": [31, 16, 16, 30, 16, 16, 31], "F": [31, 16, 16, 30, 16, 16, 16],
    "G": [14, 17, 16, 23, 17, 17, 15], "H": [17, 17, 17, 31, 17, 17, 17], "I": [14, 4, 4, 4, 4, 4, 14],
    "J": [7, 2, 2, 2, 2, 18, 12], "K": [17, 18, 20, 24, 20, 18, 17], "L": [16, 16, 16, 16, 16, 16, 31],
    "M": [17, 27, 21, 21, 17, 17, 17], "N": [17, 17, 25, 21, 19, 17, 17], "O": [14, 17, 17, 17, 17, 17, 14],
    "P": [30, 17, 17, 30, 16, 16, 16], "Q": [14, 17, 17, 17, 21, 18, 13], "R": [30, 17, 17, 30, 20, 18, 17],
    "S": [15, 16, 16, 14, 1, 1, 30], "T": [31, 4, 4, 4, 4, 4, 4], "U": [17, 17, 17, 17, 17, 17, 14],
    "V": [17, 17, 17, 17, 17, 10, 4], "W": [17, 17, 17, 21, 21, 21, 10], "X": [17, 17, 10, 4, 10, 17, 17],
    "Y": [17, 17, 10, 4, 4, 4, 4], "Z": [31, 1, 2, 4, 8, 16, 31],
    "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
    "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
    "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
    "9": [14, 17, 17, 15, 1, 2, 12],
    ".": [0, 0, 0, 0, 0, 12, 12], ":": [0, 12, 12, 0, 12, 12, 0], "-": [0, 0, 0, 31, 0, 0, 0],
    "/": [1, 1, 2, 4, 8, 16, 16], "_": [0, 0, 0, 0, 0, 0, 31], "!": [4, 4, 4, 4, 4, 0, 4],
    "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8], ",": [0, 0, 0, 0, 12, 4, 8],
}

DEFAULT_LINES = ("HOSTBAY SIMULATED SERVER", "", "DEBIAN GNU/LINUX 12 TTY1", "", "THIS IS THE DEMO CONSOLE.",
                 "", "LOGIN: _")


def render(lines, width: int = WIDTH, height: int = HEIGHT) -> bytearray:
    """The screen as one grey level (0-255) per pixel: light text on a dark background."""
    grey = bytearray([24]) * (width * height)
    for row, line in enumerate(lines):
        for col, ch in enumerate(str(line).upper()):
            glyph = FONT.get(ch, FONT[" "])
            x0, y0 = 12 + col * CELL_W, 12 + row * CELL_H
            for gy, bits in enumerate(glyph):
                for gx in range(5):
                    if not bits & (16 >> gx):
                        continue
                    for dy in range(SCALE):
                        y = y0 + gy * SCALE + dy
                        if y >= height:
                            continue
                        start = y * width + x0 + gx * SCALE
                        end = min(start + SCALE, (y + 1) * width)
                        if x0 + gx * SCALE < width:
                            grey[start:end] = b"\xe6" * (end - start)
    return grey


def _pixels(grey: bytearray, fmt: dict) -> bytes:
    """Encode grey levels in the client's pixel format (true colour, 8/16/32 bits per pixel)."""
    bpp = fmt["bpp"] // 8
    order = ">" if fmt["big_endian"] else "<"
    code = {1: "B", 2: "H", 4: "I"}[bpp]
    table = []
    for v in range(256):
        value = ((v * fmt["red_max"] // 255) << fmt["red_shift"] | (v * fmt["green_max"] // 255) << fmt["green_shift"]
                 | (v * fmt["blue_max"] // 255) << fmt["blue_shift"])
        table.append(struct.pack(order + code, value))
    return b"".join(table[v] for v in grey)


SERVER_FORMAT = {"bpp": 32, "depth": 24, "big_endian": 0, "true_colour": 1, "red_max": 255, "green_max": 255,
                 "blue_max": 255, "red_shift": 16, "green_shift": 8, "blue_shift": 0}


def _pixel_format_bytes(f: dict) -> bytes:
    return struct.pack(">BBBBHHHBBBxxx", f["bpp"], f["depth"], f["big_endian"], f["true_colour"], f["red_max"],
                       f["green_max"], f["blue_max"], f["red_shift"], f["green_shift"], f["blue_shift"])


class TextScreenServer:
    """``TextScreenServer(lines).port``: an RFB server on 127.0.0.1 showing ``lines``; one thread per viewer."""

    def __init__(self, lines=DEFAULT_LINES, name: str = "hostbay simulated console", host: str = "127.0.0.1",
                 port: int = 0):
        self.grey = render(lines)
        self.name = name.encode()
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]
        self.frames_sent = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name="hostbay-rfb")
        self._thread.start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("viewer went away")
            buf += chunk
        return buf

    def _client(self, conn) -> None:
        fmt = dict(SERVER_FORMAT)
        try:
            with conn:
                conn.sendall(b"RFB 003.008\n")
                self._read(conn, 12)
                conn.sendall(b"\x01\x01")  # one security type: None
                self._read(conn, 1)
                conn.sendall(struct.pack(">I", 0))  # SecurityResult: OK
                self._read(conn, 1)  # ClientInit (shared flag)
                conn.sendall(struct.pack(">HH", WIDTH, HEIGHT) + _pixel_format_bytes(fmt)
                             + struct.pack(">I", len(self.name)) + self.name)
                while True:
                    kind = self._read(conn, 1)[0]
                    if kind == 0:  # SetPixelFormat
                        data = self._read(conn, 19)[3:]
                        (bpp, depth, big, true_colour, rmax, gmax, bmax, rs, gs, bs) = struct.unpack(
                            ">BBBBHHHBBB", data[:13])
                        if true_colour and bpp in (8, 16, 32):
                            fmt = {"bpp": bpp, "depth": depth, "big_endian": big, "true_colour": 1,
                                   "red_max": rmax, "green_max": gmax, "blue_max": bmax, "red_shift": rs,
                                   "green_shift": gs, "blue_shift": bs}
                    elif kind == 2:  # SetEncodings
                        (count,) = struct.unpack(">xH", self._read(conn, 3))
                        self._read(conn, 4 * count)
                    elif kind == 3:  # FramebufferUpdateRequest
                        incremental = self._read(conn, 9)[0]
                        if not incremental:
                            self._frame(conn, fmt)
                    elif kind == 4:  # KeyEvent
                        self._read(conn, 7)
                    elif kind == 5:  # PointerEvent
                        self._read(conn, 5)
                    elif kind == 6:  # ClientCutText
                        (length,) = struct.unpack(">xxxI", self._read(conn, 7))
                        self._read(conn, length)
                    else:
                        return
        except (ConnectionError, OSError):
            return

    def _frame(self, conn, fmt: dict) -> None:
        header = struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, WIDTH, HEIGHT, 0)  # one Raw rectangle
        conn.sendall(header + _pixels(self.grey, fmt))
        self.frames_sent += 1


_shared: TextScreenServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> TextScreenServer:
    """One text-screen server per process, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TextScreenServer()
        return _shared

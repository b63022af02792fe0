"""libvirt connections and error translation. ``libvirt`` is imported lazily so the plugin loads (and its driver
lists) on a machine without libvirt-python; using the driver there raises a clear FatalDriverError."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

from hostbay.core.errors import FatalDriverError, TransientDriverError

_lock = threading.Lock()
_connections: dict[str, Any] = {}
_pid = os.getpid()  # a forked job process (RQ's work horse) must not share its parent's libvirt socket

# Error codes that mean "the hypervisor could not be reached or answered too slowly": a retry may cure them.
_TRANSIENT_NAMES = ("VIR_ERR_SYSTEM_ERROR", "VIR_ERR_NO_CONNECT", "VIR_ERR_RPC", "VIR_ERR_OPERATION_TIMEOUT",
                    "VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_AUTH_UNAVAILABLE", "VIR_ERR_RESOURCE_BUSY")


def libvirt():
    try:
        import libvirt as module
    except ImportError:
        raise FatalDriverError("libvirt-python is not installed on this worker: install hostbay[kvm] "
                               "(it builds against the libvirt-dev package)") from None
    return module


def transient_codes() -> set[int]:
    lv = libvirt()
    return {getattr(lv, n) for n in _TRANSIENT_NAMES if hasattr(lv, n)}


# A system error on a live connection that names a missing device or file, or a refused permission, is a
# configuration problem on the host (a bridge that does not exist, a template outside QEMU's reach): no retry.
_CONFIG_HINTS = ("No such device", "No such file or directory", "Permission denied")


def translate(exc: Exception, doing: str, connecting: bool = False) -> Exception:
    """Turn a libvirtError into a Transient/FatalDriverError whose text (admin detail) says what failed."""
    lv = libvirt()
    if isinstance(exc, lv.libvirtError):
        code = exc.get_error_code()
        message = exc.get_error_message() or str(exc)
        text = f"libvirt: {doing}: {message} (code {code})"
        if code in transient_codes():
            if not connecting and code == lv.VIR_ERR_SYSTEM_ERROR and any(h in message for h in _CONFIG_HINTS):
                return FatalDriverError(text)
            return TransientDriverError(text)
        return FatalDriverError(text)
    return exc


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    lv = libvirt()
    try:
        yield
    except lv.libvirtError as exc:
        raise translate(exc, doing) from exc


def _silence(_ctx, _err):  # libvirt prints every error to stderr by default; they are raised instead
    pass


def connect(uri: str):
    """A shared, live connection to ``uri`` (reopened when the daemon went away)."""
    global _pid
    lv = libvirt()
    with _lock:
        if os.getpid() != _pid:
            _connections.clear()  # inherited across fork: abandon, never close the parent's connections
            _pid = os.getpid()
        conn = _connections.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except lv.libvirtError:
                pass
            with contextlib.suppress(lv.libvirtError):
                conn.close()
            _connections.pop(uri, None)
        lv.registerErrorHandler(_silence, None)
        try:
            conn = lv.open(uri)
        except lv.libvirtError as exc:
            err = translate(exc, f"connecting to {uri}", connecting=True)
            if isinstance(err, FatalDriverError) and "no connection driver" in str(exc).lower():
                err = FatalDriverError(f"libvirt URI {uri!r} is not usable on this worker: {exc}")
            raise err from exc
        if conn is None:
            raise TransientDriverError(f"libvirt: could not connect to {uri}")
        _connections[uri] = conn
        return conn


def forget(uri: str) -> None:
    with _lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()

"""Probe primitives (TCP connect, HTTP(S) with an expected status, ICMP echo) and the sweep that runs the due ones.

A probe never raises: every failure is a result with ``ok=False`` and a short reason ("connection refused",
"timed out after 2.0 s", "HTTP 503, expected 200"). The sweep runs probes in a thread pool with one overall
deadline, so a target that hangs costs at most its timeout and never holds the job.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select

from hostbay.core import clock
from hostbay.core import metrics as core_metrics
from hostbay.core.db import db

from .models import Probe, Sample

MAX_PARALLEL = 16

# Prometheus (docs/operations.md): one sample per probe run, counted once the sweep has recorded it
PROBE_RESULTS = core_metrics.Counter("hostbay_status_probe_results_total",
                                     "Status probe runs, by probe (its name), kind and result (up, down).",
                                     ["probe", "kind", "result"])
PROBE_LATENCY = core_metrics.Histogram("hostbay_status_probe_latency_seconds",
                                       "Latency of the status probes that answered, by probe and kind.",
                                       ["probe", "kind"], buckets=core_metrics.LATENCY_BUCKETS)


@dataclass
class Result:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "name not resolved"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"[:200]
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno:
        return (os.strerror(exc.errno) or str(exc)).lower()[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def probe_tcp(host: str, port: int, timeout: float) -> Result:
    start = time.perf_counter()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except Exception as exc:  # noqa: BLE001 - every failure is a result
        return Result(False, None, _reason(exc, timeout))
    return Result(True, (time.perf_counter() - start) * 1000.0)


def probe_http(url: str, expected_status: int, timeout: float) -> Result:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Result(False, None, "not an http(s) address")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs = {"timeout": timeout}
    if parts.scheme == "https":
        kwargs["context"] = ssl.create_default_context()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    start = time.perf_counter()
    conn = cls(parts.hostname, parts.port, **kwargs)
    try:
        conn.request("GET", path, headers={"User-Agent": "hostbay-status-probe", "Connection": "close"})
        resp = conn.getresponse()
        latency = (time.perf_counter() - start) * 1000.0
        resp.read(65536)
        status = resp.status
    except Exception as exc:  # noqa: BLE001
        return Result(False, None, _reason(exc, timeout))
    finally:
        conn.close()
    if status != int(expected_status):
        return Result(False, latency, f"HTTP {status}, expected {expected_status}")
    return Result(True, latency)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket():
    """An unprivileged ICMP socket (net.ipv4.ping_group_range) or, for root, a raw one; None when neither."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            return socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP), kind
        except OSError:
            continue
    return None, None


def icmp_available() -> bool:
    sock, _ = _icmp_socket()
    if sock is None:
        return False
    sock.close()
    return True


def probe_icmp(host: str, timeout: float) -> Result:
    sock, kind = _icmp_socket()
    if sock is None:
        return Result(False, None, "ICMP is not permitted for this process")
    ident = os.getpid() & 0xFFFF
    payload = b"hostbay-status" + os.urandom(8)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    try:
        addr = socket.gethostbyname(host)
        sock.settimeout(timeout)
        start = time.perf_counter()
        sock.sendto(packet, (addr, 0))
        deadline = start + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            data, src = sock.recvfrom(2048)
            if kind == socket.SOCK_RAW:
                data = data[(data[0] & 0x0F) * 4:]
            if src[0] == addr and len(data) >= 8 and data[0] == 0 and data[8:] == payload:
                return Result(True, (time.perf_counter() - start) * 1000.0)
    except Exception as exc:  # noqa: BLE001
        return Result(False, None, _reason(exc, timeout))
    finally:
        sock.close()


def run_probe(kind: str, host: str = "", port: int | None = None, url: str = "", expected_status: int = 200,
              timeout: float = 5.0) -> Result:
    try:
        if kind == "tcp":
            return probe_tcp(host, port or 0, timeout)
        if kind == "http":
            return probe_http(url, expected_status, timeout)
        if kind == "icmp":
            return probe_icmp(host, timeout)
        return Result(False, None, f"unknown probe kind {kind}")
    except Exception as exc:  # noqa: BLE001 - a probe never takes the sweep down
        return Result(False, None, _reason(exc, timeout))


# --------------------------------------------------------------------------------------------------------------
# The sweep (job ``status.probe_sweep``)
# --------------------------------------------------------------------------------------------------------------

def due_probes(now: datetime) -> list[Probe]:
    probes = db.session.scalars(select(Probe).where(Probe.enabled.is_(True)).order_by(Probe.id)).all()
    return [p for p in probes
            if p.last_run_at is None or p.last_run_at + timedelta(seconds=p.interval_seconds) <= now + timedelta(seconds=1)]


def sweep(now: datetime | None = None, probe_ids: list[int] | None = None) -> dict:
    """Run every due probe (or the given ones) once and record a sample for each. No transaction is held while
    the probes run. Returns counts."""
    from .status import maintenance_component_ids

    now = now or clock.now()
    if probe_ids is None:
        probes = due_probes(now)
    else:
        probes = db.session.scalars(select(Probe).where(Probe.id.in_(probe_ids))).all()
    specs = [(p.id, p.component_id, p.kind, p.host, p.port, p.url, p.expected_status, float(p.timeout_seconds))
             for p in probes]
    names = {p.id: (p.name, p.kind) for p in probes}
    in_maint = maintenance_component_ids(now)
    db.session.commit()  # no transaction (and no SQLite write lock) across the network calls
    if not specs:
        return {"probes": 0, "down": 0}
    results: dict[int, Result] = {}
    pool = ThreadPoolExecutor(min(MAX_PARALLEL, len(specs)), thread_name_prefix="hostbay-probe")
    try:
        futures = {pool.submit(run_probe, kind, host, port, url, status, timeout): (pid, timeout)
                   for pid, _cid, kind, host, port, url, status, timeout in specs}
        deadline = max(t for *_, t in specs) + 2.0
        done, not_done = wait(futures, timeout=deadline)
        for fut in done:
            results[futures[fut][0]] = fut.result()
        for fut in not_done:
            pid, timeout = futures[fut]
            results[pid] = Result(False, None, f"timed out after {timeout:g} s")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    rows = []
    down = 0
    for pid, cid, *_ in specs:
        r = results[pid]
        down += not r.ok
        rows.append({"probe_id": pid, "ts": now, "ok": r.ok, "maintenance": cid in in_maint,
                     "latency_ms": round(r.latency_ms, 3) if r.latency_ms is not None else None, "error": r.error})
    db.session.execute(Sample.__table__.insert(), rows)
    flipped = False
    for p in db.session.scalars(select(Probe).where(Probe.id.in_(list(results)))).all():
        r = results[p.id]
        flipped |= p.last_ok is not None and p.last_ok != r.ok or (not r.ok and p.fail_streak == 1)
        p.last_run_at, p.last_ok, p.last_error = now, r.ok, r.error
        p.last_latency_ms = round(r.latency_ms, 3) if r.latency_ms is not None else None
        p.fail_streak = 0 if r.ok else p.fail_streak + 1
    if flipped:  # a component's derived status may have changed: the public pages show it at once
        from .status import bump

        bump()
    db.session.commit()
    for pid, r in results.items():
        name, kind = names[pid]
        PROBE_RESULTS.labels(name, kind, "up" if r.ok else "down").inc()
        if r.ok and r.latency_ms is not None:
            PROBE_LATENCY.labels(name, kind).observe(r.latency_ms / 1000.0)
    return {"probes": len(specs), "down": down}

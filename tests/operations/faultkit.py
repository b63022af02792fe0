"""Private Redis and PostgreSQL servers on spare loopback ports, and ``hostbay worker`` processes, for the fault
tests: a test may stop, kill and restart these (never the shared servers on 6379/5432)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOSTBAY = Path(sys.executable).with_name("hostbay")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class RedisServer:
    """redis-server with an append-only file fsynced on every write (the production setting for RQ): a restart
    keeps what was queued."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError("redis-server is not installed")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None


class PostgresCluster:
    """A throw-away PostgreSQL 15 cluster (initdb, trust on loopback) that a test can stop and start."""

    def __init__(self, workdir: Path | None = None):
        if not (PG_BIN / "pg_ctl").exists():
            raise RuntimeError(f"{PG_BIN}/pg_ctl is not installed")
        # its own directory outside pytest's (root-only) tmp tree: initdb runs as postgres when we are root
        workdir = Path(tempfile.mkdtemp(prefix="hostbay-pg-")) if workdir is None else workdir
        self.workdir = workdir
        self.dir = workdir / "pgdata"
        self.log = workdir / "pg.log"
        self.port = free_port()
        self.sock_dir = workdir / "sock"
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self._run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if self._run_as:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.sock_dir, "postgres")
        subprocess.run(self._run_as + [str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        subprocess.run(self._run_as + [str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-w",
                                       "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
                                             f"-c unix_socket_directories={self.sock_dir} -c fsync=off",
                                       "start"], check=True, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self._run_as + [str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')


def start_worker(env: dict, *extra: str, log_path: Path | None = None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen([str(HOSTBAY), "worker", *extra], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_processes(procs, timeout: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

"""A real ``hostbay worker`` on Redis: its scheduler enqueues the probe sweep by itself and the worker runs it."""

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from hostbay.core.db import db
from hostbay.plugins.status.models import Sample


@pytest.mark.redis
def test_worker_scheduler_runs_the_probes(app, database_url, tmp_path, tcp_server, closed_port, make_component,
                                          make_probe):
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("HOSTBAY_TEST_REDIS_URL is not set")
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    comp = make_component("Loopback")
    up = make_probe(comp, kind="tcp", host="127.0.0.1", port=tcp_server)
    down = make_probe(comp, kind="tcp", host="127.0.0.1", port=closed_port)
    up_id, down_id = up.id, down.id
    db.session.commit()
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url,
               HOSTBAY_QUEUE="hostbay-test-status", HOSTBAY_INSTANCE_PATH=str(tmp_path / "w"))
    worker = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        rows = {}
        while time.time() < deadline and len(rows) < 2:
            rows = {pid: (ok, err) for pid, ok, err in
                    db.session.execute(select(Sample.probe_id, Sample.ok, Sample.error))}
            db.session.commit()  # end the read transaction (SQLite: one writer)
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    assert rows.get(up_id) == (True, None), out[-3000:]
    assert rows.get(down_id) == (False, "connection refused"), out[-3000:]

"""20 concurrent dedicated orders for 5 matching servers on PostgreSQL, provisioned by two real ``hostbay worker``
processes over Redis against 5 BMC simulators: exactly 5 are charged and assigned, 15 are refused before any
charge, every wallet equals its ledger."""

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from hostbay.core import billing, jobs, ledger
from hostbay.core.inventory import HardwareServer, OutOfStock
from hostbay.core.ledger import LedgerEntry
from hostbay.core.services import Service
from hostbay.testing.bmcsim import BmcSimulator

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS_URL = os.environ.get("HOSTBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
HOSTBAY = Path(sys.executable).with_name("hostbay")
PRICE = 9900
ORDERS, SERVERS = 20, 5


@pytest.fixture
def rq_app(app, database_url, tmp_path):
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    if shutil.which("ipmitool") is None:
        pytest.skip("needs ipmitool")
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs Redis at {REDIS_URL}: {exc}")
    queue = f"hostbay-dedicated-test-{uuid.uuid4().hex[:8]}"
    key = Fernet.generate_key().decode()
    power = {"ipmi": {"min_interval_ms": 20, "verify_timeout": 10, "backoff_ms": 100, "timeout": 15,
                      "lock_dir": str(tmp_path / "locks")}}
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=REDIS_URL, HOSTBAY_QUEUE=queue,
                      HOSTBAY_SECRET_KEYS=key, HOSTBAY_POWER_SETTINGS=power)
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=REDIS_URL, HOSTBAY_QUEUE=queue,
               HOSTBAY_JOBS="rq", HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"), HOSTBAY_SECRET_KEY="w",
               HOSTBAY_SECRET_KEYS=key, HOSTBAY_POWER_SETTINGS=json.dumps(power), HOSTBAY_LOG_LEVEL="WARNING")
    yield app, env
    for k in conn.scan_iter(f"rq:*{queue}*"):
        conn.delete(k)
    app.extensions.pop("hostbay.redis", None)


def test_twenty_concurrent_orders_five_servers_two_workers(db, rq_app, tmp_path, make_user, ded_package,
                                                           add_server, make_image):
    app, env = rq_app
    pkg = ded_package()
    image = make_image(driver="ipmi", source="debian-12/amd64", name="Debian 12")
    sims = [BmcSimulator(tmp_path / f"bmc{i}").start() for i in range(SERVERS)]
    try:
        servers = [add_server(sim, auto_install=True) for sim in sims]
        add_server(cpu_cores=4)              # does not match: never sold
        add_server(state="maintenance")       # matches but not for sale
        users = [make_user(balance_cents=PRICE + 100) for _ in range(ORDERS)]
        db.session.commit()
        results: dict[int, object] = {}
        start = threading.Barrier(ORDERS)

        def order(i, user_id):
            from hostbay.core.accounts import User
            from hostbay.core.catalog import Package
            from hostbay.core.db import db as database

            with app.app_context():
                user, package = database.session.get(User, user_id), database.session.get(Package, pkg.id)
                database.session.commit()
                start.wait()
                try:
                    svc = billing.place_order(user, package, "monthly", f"m{i}.example.com", image.id,
                                              key=f"order-{i}")
                    database.session.commit()  # the owner of the unit of work, as the order view is
                    results[i] = svc.uuid
                except OutOfStock as exc:
                    database.session.commit()  # the refusal's demand record, as the order view commits it
                    results[i] = exc
                except BaseException as exc:  # noqa: BLE001 - reported below
                    results[i] = exc
                finally:
                    database.session.remove()

        threads = [threading.Thread(target=order, args=(i, u.id)) for i, u in enumerate(users)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        placed = [r for r in results.values() if isinstance(r, str)]
        refused = [r for r in results.values() if isinstance(r, OutOfStock)]
        other = [r for r in results.values() if not isinstance(r, (str, OutOfStock))]
        assert not other, other
        assert len(placed) == SERVERS and len(refused) == ORDERS - SERVERS

        procs = [subprocess.Popen([str(HOSTBAY), "worker", "--burst"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(2)]
        outs = [p.communicate(timeout=240)[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs

        db.session.expire_all()
        ops = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.provision")).all()
        assert len(ops) == SERVERS and all(o.state == "succeeded" for o in ops), [(o.state, o.error) for o in ops]
        svcs = db.session.scalars(select(Service).where(Service.uuid.in_(placed))).all()
        assert sorted(s.state for s in svcs) == ["active"] * SERVERS
        owned = db.session.scalars(select(HardwareServer).where(HardwareServer.service_id.is_not(None))).all()
        assert sorted(s.id for s in owned) == sorted(s.id for s in servers), "each matching server once"
        assert {s.service_id for s in owned} == {s.id for s in svcs}
        assert all(s.state == "in_use" for s in owned)
        for sim in sims:  # every simulator was booted into the installer exactly once
            st = sim.state()
            assert st["power"] == "on" and st["boot_device"] == "pxe"
            assert st["received"].count("boot_device:pxe") == 1
        assert db.session.scalar(select(func.count()).select_from(Service)) == SERVERS

        charged = {s.user_id for s in svcs}
        orders = db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "order")).all()
        assert len(orders) == SERVERS and all(e.amount_cents == -PRICE for e in orders)
        for u in users:
            bal = ledger.balance_cents(u.id)
            assert bal == ledger.ledger_sum_cents(u.id)
            assert bal == (100 if u.id in charged else PRICE + 100)
        print(f"\n{ORDERS} orders / {SERVERS} servers: {len(placed)} charged and assigned, {len(refused)} refused "
              f"uncharged; provisioning by 2 workers: {sum(p.returncode == 0 for p in procs)} exited cleanly")
    finally:
        for sim in sims:
            sim.stop()

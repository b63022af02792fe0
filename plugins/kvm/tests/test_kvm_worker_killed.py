"""A ``hostbay worker`` SIGKILLed while the KVM driver creates a real domain (libvirtd + QEMU, PostgreSQL, Redis):
another worker takes the stale claim over (``HOSTBAY_STALE_SECONDS`` shortened for the test) and the service
reaches active with exactly one domain of its name, one IP address and one debit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from hostbay.core import billing, ipam, jobs
from hostbay.core.catalog import Image, Node
from hostbay.core.ipam_models import IpAddress
from hostbay.core.ledger import LedgerEntry, Wallet
from hostbay.core.services import Service

pytestmark = [pytest.mark.libvirt, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

# the driver's own steps between creating the disk and starting the domain: the create is under way
DRIVER_STARTED = {"Creating the disk", "Writing the first-boot configuration", "Defining the server"}


@pytest.fixture
def clock():
    """The real clock, as the workers have it: with a frozen one the order's renewal date would be due for the
    second worker's renewal sweep."""
    from hostbay.core.clock import SystemClock

    return SystemClock()


@pytest.fixture
def rq_env(app, database_url, tmp_path):
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("HOSTBAY_TEST_REDIS_URL is not set")
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    prefix = f"hostbay-kvm-kill-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=prefix)
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=prefix,
               HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"), HOSTBAY_SECRET_KEY="w", HOSTBAY_LOG_LEVEL="WARNING",
               HOSTBAY_STALE_SECONDS="4", HOSTBAY_SCHEDULER_TICK="1")
    procs: list[subprocess.Popen] = []
    yield env, procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    from redis import Redis

    conn = Redis.from_url(redis_url)
    for key in conn.scan_iter(f"rq:*{prefix}*"):
        conn.delete(key)
    app.extensions.pop("hostbay.redis", None)


def _worker(env, procs, *args):
    p = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return p


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def test_worker_killed_during_kvm_create_is_taken_over(kvm_host, rq_env, db, make_user, make_package):
    env, procs = rq_env
    node = Node(name="kvm-kill-node", driver="kvm", settings=kvm_host.settings(), vcpus=8, memory_mib=8192,
                disk_gib=100)
    image = Image(driver="kvm", slug="blank", name="Blank", source="blank.qcow2")
    db.session.add_all([node, image])
    db.session.commit()
    ipam.create_pool(name="kvm-kill-v4", cidr="192.0.2.0/28", gateway="192.0.2.1", nameservers=["192.0.2.53"],
                     node_ids=[node.id])
    pkg = make_package(driver="kvm", vcpus=1, memory_mib=128, disk_gib=1, port_speed_mbit=100, monthly_cents=500)
    user = make_user(balance_cents=500)
    db.session.commit()

    first = _worker(env, procs, "--queue", "driver", "--without-scheduler")
    svc = billing.place_order(user, pkg, "monthly", "kill1.example.test", image=image, key="kill-order-1")
    svc_id, svc_uuid = svc.id, svc.uuid
    op_id = db.session.scalar(select(jobs.Operation.id).where(jobs.Operation.service_id == svc_id,
                                                               jobs.Operation.kind == "service.provision"))
    db.session.commit()
    domain = f"{kvm_host.settings()['name_prefix']}{svc_uuid}"

    # kill -9 the worker once the driver's create is in progress
    deadline, seen = time.time() + 120, None
    while time.time() < deadline:
        row = db.session.execute(select(jobs.Operation.state, jobs.Operation.progress_text)
                                 .where(jobs.Operation.id == op_id)).one()
        db.session.commit()
        if row.state == jobs.RUNNING and row.progress_text in DRIVER_STARTED:
            seen = row.progress_text
            break
        assert row.state in (jobs.QUEUED, jobs.RUNNING), row
        time.sleep(0.005)
    assert seen, "the driver call never started"
    children = _children(first.pid)  # RQ's scheduler process: a machine that dies takes it along
    os.kill(first.pid, signal.SIGKILL)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    first.wait()
    db.session.expire_all()
    op = db.session.get(jobs.Operation, op_id)
    assert op.state == jobs.RUNNING and op.attempts == 1, (op.state, op.progress_text)  # killed mid-call
    db.session.commit()

    # another worker (with its scheduler: the stale-claim recovery) takes the claim over and finishes
    _worker(env, procs)
    deadline, state = time.time() + 240, None
    while time.time() < deadline:
        db.session.expire_all()
        state = db.session.get(Service, svc_id).state
        op = db.session.get(jobs.Operation, op_id)
        db.session.commit()
        if state != "provisioning" or op.state == jobs.FAILED:
            break
        time.sleep(0.5)
    op = db.session.get(jobs.Operation, op_id)
    assert state == "active", (state, op.state, op.error)
    assert op.state == jobs.SUCCEEDED and op.attempts == 2, (op.state, op.attempts)  # one retry, no more

    conn = kvm_host.conn()
    mine = [d.name() for d in conn.listAllDomains(0) if svc_uuid in d.name()]
    assert mine == [domain], mine  # exactly one domain with its name
    svc = db.session.get(Service, svc_id)
    assert svc.infra_ref["domain"] == domain
    assigned = db.session.scalar(select(func.count()).select_from(IpAddress).where(IpAddress.service_id == svc_id))
    assert assigned == 1 and [a.address for a in ipam.addresses_for(svc)] == ["192.0.2.2"]
    wallet = db.session.scalar(select(Wallet).where(Wallet.user_id == user.id))
    debits = db.session.scalars(select(LedgerEntry).where(LedgerEntry.wallet_id == wallet.id,
                                                          LedgerEntry.amount_cents < 0)).all()
    assert len(debits) == 1 and debits[0].amount_cents == -500
    assert wallet.balance_cents == 0
    print(f"killed at {seen!r}; taken over, active with one domain, one address, one debit")

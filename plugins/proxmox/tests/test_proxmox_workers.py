"""Real ``hostbay worker`` processes on Redis and PostgreSQL provisioning Proxmox guests on the HTTPS stand-in:
20 orders at once on one node with two workers, and a worker SIGKILLed between clone and configuration."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from pve_testenv import TEMPLATE, settings_for
from sqlalchemy import select, update

from hostbay.core import billing, ipam, jobs, numbering
from hostbay.core.accounts import add_ssh_key
from hostbay.core.services import Service
from hostbay.plugins.proxmox.driver import IPSET, MARKER
from hostbay.plugins.proxmox.standin import ProxmoxStandin
from hostbay.testing.conformance import TEST_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def slow_standin(tmp_path):
    s = ProxmoxStandin(task_delay=0.2, workdir=tmp_path / "pve", templates={TEMPLATE: {"disk_gib": 1}}).start()
    yield s
    s.stop()


def _shop(db, standin, make_node, make_package, make_image, make_user, n_users):
    node = make_node(name="pve-node-1", driver="proxmox", settings=settings_for(standin, vmid_min=1000,
                                                                                 vmid_max=1999))
    ipam.create_pool(name="pve-v4", cidr="198.51.100.0/24", gateway="198.51.100.1",
                     nameservers=["198.51.100.53"], node_ids=[node.id])
    pkg = make_package(driver="proxmox", vcpus=1, memory_mib=512, disk_gib=4, monthly_cents=500)
    image = make_image(driver="proxmox", source=str(TEMPLATE), name="Debian 12")
    users = []
    for _ in range(n_users):
        u = make_user(balance_cents=500)
        add_ssh_key(u, "laptop", TEST_KEY)
        users.append(u)
    db.session.commit()
    return node, pkg, image, users


def _order(db, user, pkg, image, i):
    from hostbay.core.accounts import SSHKey

    key = db.session.scalar(select(SSHKey).where(SSHKey.user_id == user.id))
    svc = billing.place_order(user, pkg, "monthly", f"web{i}.example.test", image=image, ssh_key_ids=[key.id],
                              key=f"pve-order-{i}")
    db.session.commit()
    return svc.id


def _check_one_guest_per_service(db, standin, svc_ids, scope):
    db.session.expire_all()
    svcs = [db.session.get(Service, i) for i in svc_ids]
    guests = standin.guests()
    vmids = [s.infra_ref["vmid"] for s in svcs]
    assert len(set(vmids)) == len(svcs) == len(guests), (vmids, [g.vmid for g in guests])
    assert sorted(g.vmid for g in guests) == sorted(vmids)
    for svc in svcs:
        vm = standin.vms[svc.infra_ref["vmid"]]
        assert vm.config["description"] == f"{MARKER}{svc.uuid}" and "lock" not in vm.config
        assert vm.status == "running" and 1000 <= vm.vmid <= 1999
        assert set(vm.ipsets[IPSET]) == {a.address for a in ipam.addresses_for(svc)}
    assert numbering.held_in(scope) == {s.infra_ref["vmid"]: s.uuid for s in svcs}
    volumes = standin.storages[("pve1", "local-lvm")]["volumes"]
    assert sorted(v for v in volumes if v.startswith("local-lvm:vm-")) == \
        sorted(f"local-lvm:vm-{v}-disk-0" for v in vmids)  # no leftover clone disk


def test_two_workers_provision_twenty_orders_on_one_node(db, running_workers, slow_standin, make_node, make_package,
                                                         make_image, make_user):
    node, pkg, image, users = _shop(db, slow_standin, make_node, make_package, make_image, make_user, 20)
    svc_ids = [_order(db, u, pkg, image, i) for i, u in enumerate(users)]
    running_workers.burst(2, timeout=300)
    db.session.expire_all()
    states = [db.session.get(Service, i).state for i in svc_ids]
    ops = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "service.provision")).all()
    assert states == ["active"] * 20, [(o.state, o.error) for o in ops]
    assert len(ops) == 20 and all(o.state == "succeeded" for o in ops)
    _check_one_guest_per_service(db, slow_standin, svc_ids, f"proxmox:127.0.0.1:{slow_standin.port}")
    clones = [r for r in slow_standin.requests if r["path"].endswith("/clone")]
    assert len(clones) == 20
    # Each guest's requests (its clone, then everything under /qemu/<vmid>/) span the time one worker spent on it;
    # two workers running at once means two of those spans overlap.
    spans: dict[int, list[float]] = {}
    for r in slow_standin.requests:
        m = re.search(r"/qemu/(\d+)/", r["path"])
        vmid = int(r["params"]["newid"]) if r["path"].endswith("/clone") else int(m.group(1)) if m else None
        if vmid is not None and vmid != TEMPLATE:
            spans.setdefault(vmid, [r["at"], r["at"]])[1] = r["at"]
    ordered = sorted(spans.values())
    assert len(ordered) == 20
    assert any(b[0] < a[1] for a, b in zip(ordered, ordered[1:])), "the two workers never worked at the same time"
    assert all(o.progress_text == "Your server is ready" for o in ops)


def test_worker_killed_between_clone_and_configuration_then_retried(db, running_workers, slow_standin, make_node,
                                                                    make_package, make_image, make_user):
    node, pkg, image, users = _shop(db, slow_standin, make_node, make_package, make_image, make_user, 1)
    slow_standin.task_delay = 3.0  # the clone takes 3 s: the worker is killed while it waits for it
    svc_id = _order(db, users[0], pkg, image, 0)
    proc = running_workers.start(quiet=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r["path"].endswith("/clone") for r in slow_standin.requests):
        time.sleep(0.02)
    assert any(r["path"].endswith("/clone") for r in slow_standin.requests), "the worker never cloned"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (guest,) = slow_standin.guests()
    assert guest.config.get("lock") == "clone" and "ipconfig0" not in guest.config  # cloned, not configured
    db.session.expire_all()
    op = db.session.scalar(select(jobs.Operation).where(jobs.Operation.kind == "service.provision"))
    assert op.state == "running"
    # The dead worker's claim goes stale; the recovery sweep hands the operation to a new worker.
    slow_standin.task_delay = 0.2
    long_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=jobs.STALE_SECONDS + 60)
    db.session.execute(update(jobs.Operation).where(jobs.Operation.id == op.id).values(heartbeat_at=long_ago))
    db.session.commit()
    jobs.run_stale_recovery()
    running_workers.burst(1, timeout=120)
    db.session.expire_all()
    svc = db.session.get(Service, svc_id)
    op = db.session.get(jobs.Operation, op.id)
    assert (svc.state, op.state) == ("active", "succeeded"), op.error
    assert len([r for r in slow_standin.requests if r["path"].endswith("/clone")]) == 1
    _check_one_guest_per_service(db, slow_standin, [svc_id], f"proxmox:127.0.0.1:{slow_standin.port}")

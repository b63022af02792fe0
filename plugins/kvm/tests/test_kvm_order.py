"""End to end on real components: a paid order goes through RQ (a separate ``hostbay worker`` process on the real
Redis) and the KVM driver on a real libvirtd with QEMU to a running domain with its allocated address."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from hostbay.core import billing, ipam
from hostbay.core.accounts import add_ssh_key
from hostbay.core.catalog import Image, Node
from hostbay.core.services import Service
from hostbay.testing.conformance import TEST_KEY

pytestmark = [pytest.mark.libvirt, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def worker(app, database_url, tmp_path):
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("HOSTBAY_TEST_REDIS_URL is not set")
    queue = f"hostbay-kvm-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue)
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"))
    proc = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", "--without-scheduler"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def test_paid_order_reaches_a_running_domain(kvm_host, worker, db, make_user, make_package):
    node = Node(name="kvm-test-node", driver="kvm", settings=kvm_host.settings(), vcpus=8, memory_mib=8192,
                disk_gib=100)
    image = Image(driver="kvm", slug="blank", name="Blank", source="blank.qcow2")
    db.session.add_all([node, image])
    db.session.commit()
    ipam.create_pool(name="kvm-v4", cidr="192.0.2.0/28", gateway="192.0.2.1", nameservers=["192.0.2.53"],
                     node_ids=[node.id])
    pkg = make_package(driver="kvm", vcpus=1, memory_mib=128, disk_gib=1, port_speed_mbit=100, monthly_cents=500)
    user = make_user(balance_cents=500)
    key = add_ssh_key(user, "laptop", TEST_KEY)
    db.session.commit()

    svc = billing.place_order(user, pkg, "monthly", "web1.example.test", image=image, ssh_key_ids=[key.id],
                              key="order-1")
    db.session.commit()  # the caller owns the transaction; the set-up job is dispatched after its commit
    svc_id = svc.id
    deadline = time.time() + 180
    state = None
    while time.time() < deadline:
        db.session.expire_all()
        state = db.session.get(Service, svc_id).state
        db.session.commit()
        if state == "active":
            break
        time.sleep(0.5)
    svc = db.session.get(Service, svc_id)
    assert state == "active", f"service is {state}"
    assert svc.node_id == node.id

    import libvirt

    conn = kvm_host.conn()
    dom = conn.lookupByName(svc.infra_ref["domain"])
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    address = [a.address for a in ipam.addresses_for(svc)]
    assert address == ["192.0.2.2"]
    from hostbay.plugins.kvm import nft as N
    from hostbay.plugins.kvm import xml as X

    port = X.parse(dom.XMLDesc(0)).find("./devices/interface/target").get("dev")
    if N.is_port(port):  # the node's antispoof is auto: hostbay's nftables rules on a local root host
        assert N.Nft().port_addresses(port) == {"192.0.2.2"}
        # the scheduled re-apply, as the job layer calls it, after the port's rules vanished under the server
        from hostbay.plugins.kvm import antispoof_resync_job

        N.Nft().remove(port)
        assert antispoof_resync_job(None, {})["ports"]["kvm-test-node"] >= 1
        assert N.Nft().port_addresses(port) == {"192.0.2.2"}
    else:
        bindings = [b.XMLDesc(0) for b in conn.listAllNWFilterBindings(0) if dom.name() in b.XMLDesc(0)]
        assert len(bindings) == 1 and "value='192.0.2.2'" in bindings[0].replace('"', "'"), bindings
    from hostbay.core.ledger import balance_cents

    assert balance_cents(user.id) == 0

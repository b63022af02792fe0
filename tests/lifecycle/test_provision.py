"""Provisioning and action handlers with the fake driver."""
import threading

import pytest

from hostbay.core import jobs, lifecycle
from hostbay.core.accounts import add_ssh_key
from hostbay.core.actions import request_action
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.catalog import Node
from hostbay.core.errors import ActionNotAllowed
from hostbay.core.lifecycle import NodeReservation
from hostbay.core.services import Service
from hostbay.testing.fakes import FakeVirtDriver

from .conftest import ops_of

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test")


def test_provision_places_creates_and_activates(db, setup, order, registry, register_plugin):
    key = add_ssh_key(setup.user, "laptop", KEY)
    db.session.commit()
    events = []

    class Listener:
        from hostbay.core.hookspecs import hookimpl

        @hookimpl
        def hostbay_service_provisioned(self, service):
            events.append(service.uuid)

    with register_plugin(Listener(), name="listener"):
        svc, op = order(ssh_key_ids=[key.id])
    db.session.refresh(svc)
    db.session.refresh(op)
    assert op.state == jobs.SUCCEEDED and op.progress_pct == 100
    assert svc.state == "active" and svc.node_id == setup.node.id
    assert svc.infra_ref["id"] == svc.uuid
    server = FakeVirtDriver.servers[svc.uuid]
    assert server["spec"].ssh_keys == (key.public_key,)
    assert server["spec"].image["source"] == "test.qcow2"
    node = db.session.get(Node, setup.node.id)
    db.session.refresh(node)
    assert (node.used_vcpus, node.used_memory_mib, node.used_disk_gib) == (1, 512, 10)
    assert events == [svc.uuid]
    acts = db.session.scalars(db.select(ActivityEntry).filter_by(service_id=svc.id)).all()
    assert [a.event for a in acts] == ["create"]
    assert "fake-node" not in acts[0].message and "fake-" not in acts[0].message
    # re-running the (finished) handler changes nothing and makes no second reservation
    lifecycle.provision(op, {})
    assert db.session.scalar(db.select(db.func.count()).select_from(NodeReservation)) == 1


def test_provision_rerun_after_crash_is_idempotent(db, setup, order, job_runner):
    svc, op = order()
    # simulate a worker that died after placement: state provisioning, reservation held, no server yet
    from hostbay.core.services import transition
    transition(svc, "provisioning", expect="pending")
    lifecycle.place(svc)
    db.session.commit()
    job_runner.run_all()
    db.session.refresh(svc)
    assert svc.state == "active"
    node = db.session.get(Node, setup.node.id)
    db.session.refresh(node)
    assert node.used_memory_mib == 512  # not reserved twice
    assert FakeVirtDriver.servers[svc.uuid]["installs"] == 1


def test_failed_provisioning_is_visible_and_retryable(db, setup, order, make_user):
    setup.node.enabled = False
    db.session.commit()
    svc, op = order()
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.FAILED and "no enabled fake node" in op.error
    assert "capacity" in op.customer_error
    assert svc.state == "provisioning"  # never silently active
    setup.node.enabled = True
    db.session.commit()
    staff = make_user(role="admin")
    request_action(svc, "retry", staff)
    db.session.commit()
    db.session.refresh(svc)
    db.session.refresh(op)
    assert op.state == jobs.SUCCEEDED and svc.state == "active"


def test_node_never_overfilled_by_concurrent_orders(app, db, setup, order, job_runner, make_package):
    # room for exactly two 1-GiB services on the node (2048 MiB)
    big = make_package(memory_mib=1024)
    svcs = [order(package=big, hostname=f"h{i}.example.test")[0] for i in range(4)]
    ids = [op.id for s in svcs for op in ops_of(db, s)]
    db.session.commit()  # end this thread's read transaction (SQLite: BEGIN IMMEDIATE holds the write lock)
    results = []

    def run(op_id):
        with app.app_context():
            results.append(jobs.run_operation(op_id))

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["failed", "failed", "succeeded", "succeeded"]
    node = db.session.get(Node, setup.node.id)
    db.session.refresh(node)
    assert node.used_memory_mib == 2048
    assert db.session.scalar(db.select(db.func.count()).select_from(Service).filter_by(state="active")) == 2


def test_choose_node_hook(db, setup, order, make_node, register_plugin):
    other = make_node(name="fake-node-b", vcpus=2, memory_mib=1024, disk_gib=50)

    class Chooser:
        from hostbay.core.hookspecs import hookimpl

        @hookimpl
        def hostbay_choose_node(self, service, candidates):
            return next(n for n in candidates if n.name == "fake-node-b")

    with register_plugin(Chooser(), name="chooser"):
        svc, _ = order()
    db.session.refresh(svc)
    assert svc.node_id == other.id


def test_power_actions_reinstall_and_busy_refusal(db, setup, order, job_runner):
    key = add_ssh_key(setup.user, "laptop", KEY)
    db.session.commit()
    svc, _ = order(ssh_key_ids=[key.id])
    job_runner.run_all()
    db.session.refresh(svc)
    request_action(svc, "stop", setup.user)
    db.session.commit()
    job_runner.run_all()
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "stopped"
    request_action(svc, "start", setup.user)
    db.session.commit()
    job_runner.run_all()
    assert FakeVirtDriver.servers[svc.uuid]["state"].value == "running"
    op = request_action(svc, "reinstall", setup.user)
    db.session.commit()
    assert svc.state == "reinstalling"
    with pytest.raises(ActionNotAllowed, match="being reinstalled"):
        request_action(svc, "restart", setup.user)
    with pytest.raises(ActionNotAllowed):
        request_action(svc, "reinstall", setup.user)
    job_runner.run_all()
    db.session.refresh(svc)
    db.session.refresh(op)
    assert op.state == "succeeded" and svc.state == "active"
    server = FakeVirtDriver.servers[svc.uuid]
    assert server["installs"] == 2 and server["spec"].ssh_keys == (key.public_key,)
    events = [a.event for a in db.session.scalars(db.select(ActivityEntry).filter_by(service_id=svc.id)
                                                  .order_by(ActivityEntry.id))]
    assert events == ["create", "stop", "start", "reinstall"]
    audits = {a.action for a in db.session.scalars(db.select(AuditEntry).filter_by(target_id=svc.uuid))}
    assert {"service.provisioned", "service.stop", "service.start", "service.reinstall"} <= audits


def test_resize_adjusts_reservation(db, setup, order, make_package):
    svc, _ = order()
    db.session.refresh(svc)
    bigger = make_package(vcpus=2, memory_mib=1024, disk_gib=20)
    from hostbay.core.services import transition
    svc.package_id = bigger.id
    transition(svc, "resizing", expect="active")
    jobs.enqueue("service.resize", service=svc, payload={"old_package_id": setup.package.id}, title="Change package")
    db.session.commit()
    db.session.refresh(svc)
    assert svc.state == "active"
    node = db.session.get(Node, setup.node.id)
    db.session.refresh(node)
    assert (node.used_vcpus, node.used_memory_mib, node.used_disk_gib) == (2, 1024, 20)
    assert FakeVirtDriver.servers[svc.uuid]["disk_gib"] == 20


def _pools_a_b(node_ids_a, node_ids_b):
    from hostbay.core import ipam

    a = ipam.create_pool(name="pool-a", cidr="203.0.113.0/28", gateway="203.0.113.1", node_ids=node_ids_a)
    b = ipam.create_pool(name="pool-b", cidr="192.0.2.0/28", gateway="192.0.2.1", node_ids=node_ids_b)
    return a, b


def test_package_with_addresses_per_pool_provisions_exactly_those(db, setup, order, make_package):
    from hostbay.core.ipam import IpAddress

    a, b = _pools_a_b([setup.node.id], [setup.node.id])
    pkg = make_package(ipv4_count=1, pool_addresses={str(a.id): 2, str(b.id): 1})
    db.session.commit()
    svc, op = order(package=pkg)
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.SUCCEEDED and svc.state == "active"
    held = db.session.scalars(db.select(IpAddress).where(IpAddress.service_id == svc.id)).all()
    assert sorted((r.pool_id, r.address) for r in held) == [(a.id, "203.0.113.2"), (a.id, "203.0.113.3"),
                                                             (b.id, "192.0.2.2")]
    spec = FakeVirtDriver.servers[svc.uuid]["spec"]
    assert sorted(x.address for x in spec.addresses) == ["192.0.2.2", "203.0.113.2", "203.0.113.3"]
    # the lifecycle-v4 pool of the fixture serves the node too, but the package names only pools A and B
    assert setup.pool.id not in {r.pool_id for r in held}


def test_a_node_missing_a_named_pool_is_not_chosen(db, setup, order, make_package, make_node):
    roomy = make_node(name="fake-node-roomy", vcpus=64, memory_mib=65536, disk_gib=4000)  # preferred by free memory
    a, b = _pools_a_b([setup.node.id, roomy.id], [setup.node.id])
    pkg = make_package(pool_addresses={str(a.id): 2, str(b.id): 1})
    plain = make_package()
    db.session.commit()
    other, _ = order(package=plain, hostname="plain.example.test")
    db.session.refresh(other)
    assert other.node_id == roomy.id  # without named pools the roomy node wins
    svc, op = order(package=pkg)
    db.session.refresh(svc)
    assert svc.state == "active" and svc.node_id == setup.node.id


def test_no_node_attached_to_every_named_pool_is_a_clear_refusal(db, setup, order, make_package, make_node):
    from hostbay.core.ipam import IpAddress

    lone = make_node(name="fake-node-lone")
    a, b = _pools_a_b([setup.node.id], [lone.id])
    pkg = make_package(pool_addresses={str(a.id): 2, str(b.id): 1})
    db.session.commit()
    svc, op = order(package=pkg)
    db.session.refresh(op)
    db.session.refresh(svc)
    assert op.state == jobs.FAILED and svc.node_id is None
    assert "attached to every pool" in op.error and "pool-a" in op.error and "pool-b" in op.error
    assert "addresses your package includes" in op.customer_error
    assert db.session.scalar(db.select(db.func.count()).select_from(IpAddress)
                             .where(IpAddress.service_id == svc.id)) == 0
    assert db.session.scalar(db.select(db.func.count()).select_from(NodeReservation)) == 0


def test_named_pools_are_taken_all_or_nothing(db, setup, make_package, make_service):
    from hostbay.core import ipam
    from hostbay.core.ipam import IpAddress, PoolExhausted

    a = ipam.create_pool(name="pool-a", cidr="203.0.113.0/28", gateway="203.0.113.1", node_ids=[setup.node.id])
    b = ipam.create_pool(name="pool-b", cidr="192.0.2.0/30", gateway="192.0.2.1", node_ids=[setup.node.id])
    pkg = make_package(pool_addresses={str(a.id): 2, str(b.id): 2})  # pool B has a single free address
    svc = make_service(setup.user, pkg, state="provisioning", node=setup.node)
    with pytest.raises(PoolExhausted, match="pool-b"):
        ipam.allocate_for_service(svc)
    assert db.session.scalar(db.select(db.func.count()).select_from(IpAddress)
                             .where(IpAddress.service_id == svc.id)) == 0

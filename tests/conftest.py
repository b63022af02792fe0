"""Shared test helpers; the fixtures themselves come from hostbay.testing (the plugin author kit)."""

import pytest

from hostbay.core.drivers import ServerSpec
from hostbay.testing import FakeVirtDriver

# --- shared by the ISO and console tests: an ISO-looking file and an active service on the fake driver ---------
KIB = 1024
ISO_SIZE = 40 * KIB  # a minimal image: the primary volume descriptor sits at 32 KiB


def iso_bytes(size: int = ISO_SIZE, fill: bytes = b"\0") -> bytes:
    """Bytes that look like an ISO 9660 image: "CD001" at offset 32769."""
    head = fill * 32768 + b"\x01CD001\x01"
    assert size >= len(head)
    return head + fill * (size - len(head))


@pytest.fixture
def active_service(app, make_user, make_package, make_node, registry):
    """``active_service(user=None, state="active")``: a service with a running fake server behind it."""
    pkg = make_package()
    node = make_node(name="node-secret-fra1")

    def _make(user=None, state="active", make_service=None):
        from hostbay.core.db import db
        from hostbay.core.services import Service
        from hostbay.core.catalog import add_cycle
        from hostbay.core import clock

        user = user or make_user()
        now = clock.now()
        svc = Service(user_id=user.id, package_id=pkg.id, kind="vps", state=state, cycle="monthly",
                      hostname="web1.example.test", period_start=now, renews_at=add_cycle(now, "monthly"),
                      price_cents=pkg.price_cents("monthly"), node_id=node.id)
        db.session.add(svc)
        db.session.flush()
        driver = registry.driver("virt", "fake", {})
        ref = driver.create(ServerSpec(uuid=svc.uuid, hostname=svc.hostname, vcpus=1, memory_mib=512, disk_gib=10,
                                       image={"name": "x", "source": "x"}, node={}), lambda p, t: None)
        svc.infra_ref = ref
        db.session.commit()
        return svc

    yield _make
    FakeVirtDriver.servers.clear()


@pytest.fixture
def make_iso():
    return iso_bytes



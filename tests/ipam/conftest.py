"""Helpers for the IPAM tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def running_service(make_user, make_package, make_node, make_service, db):
    """``running_service(user=None, package=None, node=None, **pkg)``: an active service with a (fake) server, so
    network filters apply to it."""
    from hostbay.core.drivers import ServerSpec
    from hostbay.testing.fakes import FakeVirtDriver

    def _make(user=None, package=None, node=None, **pkg):
        user = user or make_user()
        package = package or make_package(**pkg)
        node = node or make_node()
        svc = make_service(user, package, node=node)
        ref = FakeVirtDriver({}).create(ServerSpec(uuid=svc.uuid, hostname=svc.hostname, vcpus=1, memory_mib=512,
                                                   disk_gib=10, image={}, node={}), lambda *_: None)
        svc.infra_ref = ref
        db.session.commit()
        return svc

    return _make


@pytest.fixture
def fake_dns(db):
    """Configure the in-memory DNS backend and return its class (records/forward dicts, emptied)."""
    from hostbay.core.rdns import DnsBackendConfig
    from hostbay.testing.fakes import FakeDns

    FakeDns.records.clear()
    FakeDns.forward.clear()
    db.session.add(DnsBackendConfig(driver="fake", label="In-memory DNS"))
    db.session.commit()
    yield FakeDns
    FakeDns.records.clear()
    FakeDns.forward.clear()

"""The forward-match recheck asks DNS for every waiting request: no write (and so, on SQLite, no write lock) may
be held while it asks."""

import pytest

from hostbay.core import ipam, jobs, rdns
from hostbay.core.db import db


@pytest.fixture
def waiting(app, make_user, make_package, make_node, make_service, job_runner):
    from hostbay.core.rdns import DnsBackendConfig
    from hostbay.testing.fakes import FakeDns

    FakeDns.records.clear()
    FakeDns.forward.clear()
    db.session.add(DnsBackendConfig(driver="fake", label="In-memory DNS"))
    ipam.create_pool(name="p-fm", cidr="192.0.2.0/28", rdns_policy="forward_match")
    node, pkg = make_node(), make_package()
    reqs = []
    for i in range(3):
        svc = make_service(make_user(), pkg, node=node, infra_ref={"domain": f"d{i}"})
        addr = ipam.allocate_for_service(svc)[0].address
        reqs.append(rdns.request_ptr(svc, addr, f"web{i}.example.com", svc.user))
    db.session.commit()
    job_runner.run_all()
    assert all(r.state == rdns.WAITING for r in reqs)
    yield FakeDns, reqs
    FakeDns.records.clear()
    FakeDns.forward.clear()


def _write_pending() -> bool:
    if db.session.dirty or db.session.new or db.session.deleted:
        return True
    if db.engine.dialect.name == "sqlite" and db.session().in_transaction():
        return db.session.connection().connection.driver_connection.in_transaction
    return False


def test_recheck_holds_no_write_while_resolving(waiting, job_runner, monkeypatch):
    fake, reqs = waiting
    seen = []
    orig = fake.resolve

    def resolve(self, hostname):
        seen.append((hostname, _write_pending()))
        return orig(self, hostname)

    monkeypatch.setattr(fake, "resolve", resolve)
    for r in reqs:
        fake.forward[r.hostname] = [r.address.address]
    jobs.enqueue("rdns.recheck", key="recheck-lock")
    db.session.commit()
    job_runner.run_all()
    assert len(seen) == 3 and not any(pending for _, pending in seen), seen
    for r in reqs:
        db.session.refresh(r)
        assert r.state == rdns.APPLIED
    assert fake.records == {r.address.address: r.hostname for r in reqs}

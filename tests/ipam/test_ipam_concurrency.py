"""Concurrent allocators never hand out one address twice and lose none (PostgreSQL and SQLite)."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from hostbay.core import ipam
from hostbay.core.ipam import IpAddress


def _run_allocators(app, pool_id: int, service_ids: list[int], each: int, seed: int) -> list[list[str]]:
    """One thread per service; each takes ``each`` addresses in randomly sized batches, committing every batch."""
    from hostbay.core.db import db

    results: list[list[str]] = [[] for _ in service_ids]
    errors: list[BaseException] = []
    start = threading.Barrier(len(service_ids))

    def worker(i: int, service_id: int):
        rnd = random.Random(seed + i)
        try:
            with app.app_context():
                start.wait()
                got = results[i]
                while len(got) < each:
                    n = min(each - len(got), rnd.randint(1, 8))
                    taken = ipam.take_ipv4(pool_id, n, service_id)
                    db.session.commit()
                    assert len(taken) == n, f"pool ran dry early: asked {n}, got {len(taken)}"
                    got.extend(a for _, a in taken)
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    db.session.commit()  # end the caller's transaction: on SQLite even a read one holds the write lock
    threads = [threading.Thread(target=worker, args=(i, sid)) for i, sid in enumerate(service_ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _check(db, pool, service_ids, results, each, usable):
    flat = [a for r in results for a in r]
    assert len(flat) == len(service_ids) * each
    assert len(set(flat)) == len(flat), "an address was handed out twice"
    db.session.expire_all()
    for sid, got in zip(service_ids, results):
        held = set(db.session.scalars(select(IpAddress.address).where(IpAddress.service_id == sid)))
        assert held == set(got), "the database and the allocator disagree"
    counts = dict(db.session.execute(select(IpAddress.state, func.count()).where(IpAddress.pool_id == pool.id)
                                     .group_by(IpAddress.state)).all())
    assert counts["assigned"] == len(flat)
    assert counts["free"] == usable - len(flat), "addresses were lost"


def _services(make_user, make_package, make_service, n):
    user, pkg = make_user(), make_package()
    return [make_service(user, pkg).id for _ in range(n)]


@pytest.mark.postgres
@pytest.mark.slow
def test_eight_allocators_2000_each_from_a_slash16_on_postgres(app, db, make_user, make_package, make_service):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    pool = ipam.create_pool(name="big", cidr="10.20.0.0/16")
    sids = _services(make_user, make_package, make_service, 8)
    results = _run_allocators(app, pool.id, sids, 2000, seed=16)
    _check(db, pool, sids, results, 2000, usable=65534)


def test_concurrent_allocators_on_sqlite(app, db, make_user, make_package, make_service):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite variant")
    pool = ipam.create_pool(name="mid", cidr="10.30.0.0/21")  # 2046 usable
    sids = _services(make_user, make_package, make_service, 4)
    results = _run_allocators(app, pool.id, sids, 400, seed=4)
    _check(db, pool, sids, results, 400, usable=2046)


def test_concurrent_allocate_for_service_calls_are_idempotent(app, db, make_user, make_package, make_service):
    """Several workers provisioning the same services at once: each service ends with exactly its count."""
    from hostbay.core.db import db as database
    from hostbay.core.services import Service

    pool = ipam.create_pool(name="p", cidr="10.40.0.0/24")
    user, pkg = make_user(), make_package(ipv4_count=3)
    sids = [make_service(user, pkg).id for _ in range(10)]
    errors = []
    start = threading.Barrier(4)

    def worker():
        try:
            with app.app_context():
                start.wait()
                for sid in sids:
                    ipam.allocate_for_service(database.session.get(Service, sid))
                    database.session.commit()  # as the provisioning handler does before its driver call
                database.session.remove()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    db.session.commit()  # end this thread's transaction (on SQLite it holds the write lock)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    db.session.expire_all()
    per = dict(db.session.execute(select(IpAddress.service_id, func.count()).where(IpAddress.pool_id == pool.id,
                                                                                 IpAddress.state == "assigned")
                                  .group_by(IpAddress.service_id)).all())
    assert per == {sid: 3 for sid in sids}

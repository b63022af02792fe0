"""Orders racing for the same wallet, each from its own thread, app context, session and connection."""

import threading

import pytest

from hostbay.core import billing, jobs, ledger
from hostbay.core.accounts import User
from hostbay.core.catalog import Image, Package
from hostbay.core.db import db
from hostbay.core.errors import InsufficientFunds
from hostbay.core.services import Service


@pytest.fixture
def postgres_only(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")


def _race(app, user_id, package_id, image_id, keys):
    db.session.commit()  # end this thread's transaction: on SQLite an open one holds the write lock
    barrier = threading.Barrier(len(keys))
    results: list = [None] * len(keys)

    def worker(i, key):
        with app.app_context():
            try:
                user = db.session.get(User, user_id)
                pkg = db.session.get(Package, package_id)
                img = db.session.get(Image, image_id)
                db.session.commit()  # give the connection back to the pool while waiting for the others
                barrier.wait(timeout=60)
                svc = billing.place_order(user, pkg, "monthly", f"web{i}.example.com", img, key=key)
                db.session.commit()  # the caller owns the transaction
                results[i] = ("ok", svc.uuid)
            except InsufficientFunds as exc:
                results[i] = ("short", exc.shortfall_cents)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results[i] = ("error", repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, k)) for i, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _count(model, **kw):
    return db.session.scalar(db.select(db.func.count()).select_from(model).filter_by(**kw))


@pytest.mark.postgres
def test_fifty_orders_against_a_wallet_for_ten(app, postgres_only, make_user, make_package, make_image):
    user = make_user(balance_cents=10 * 1000)
    pkg, img = make_package(monthly_cents=1000), make_image()
    results = _race(app, user.id, pkg.id, img.id, [f"order-{i}" for i in range(50)])
    assert not [r for r in results if r[0] == "error"], results
    ok = [r for r in results if r[0] == "ok"]
    assert len(ok) == 10 and len({r[1] for r in ok}) == 10
    assert all(r == ("short", 1000) for r in results if r[0] != "ok")
    db.session.expire_all()
    assert _count(Service, user_id=user.id) == 10
    debits = db.session.scalars(db.select(ledger.LedgerEntry).filter_by(kind="order")).all()
    assert len(debits) == 10 and {d.reference_id for d in debits} == {r[1] for r in ok}
    assert all(d.balance_after_cents >= 0 for d in debits)
    assert sorted(d.balance_after_cents for d in debits) == [i * 1000 for i in range(10)]
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 0
    assert _count(jobs.Operation, kind="service.provision") == 10


@pytest.mark.postgres
def test_same_order_submitted_twenty_times_at_once(app, postgres_only, make_user, make_package, make_image):
    user = make_user(balance_cents=5000)
    pkg, img = make_package(monthly_cents=1000), make_image()
    results = _race(app, user.id, pkg.id, img.id, ["double-click"] * 20)
    assert {r[0] for r in results} == {"ok"}, results
    assert len({r[1] for r in results}) == 1
    db.session.expire_all()
    assert _count(Service, user_id=user.id) == 1 and _count(jobs.Operation, kind="service.provision") == 1
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 4000


def test_racing_orders_on_any_database(app, make_user, make_package, make_image):
    """The same guarantee in embedded mode (SQLite serialises writers): 12 orders, a wallet for 4."""
    user = make_user(balance_cents=4 * 700)
    pkg, img = make_package(monthly_cents=700), make_image()
    results = _race(app, user.id, pkg.id, img.id, [f"o{i}" for i in range(12)])
    assert sorted(r[0] for r in results) == ["ok"] * 4 + ["short"] * 8, results
    db.session.expire_all()
    assert _count(Service, user_id=user.id) == 4
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 0

"""Property tests: random sequences of money operations keep the wallet consistent.

After every step the cached balance equals the sum of the ledger, is never negative, and equals an independent
model of what each operation should have moved; replaying any earlier operation with its key changes nothing.
"""

from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hostbay.core import billing, ledger, services
from hostbay.core.accounts import User
from hostbay.core.catalog import CYCLES, add_cycle
from hostbay.core.db import db, new_uuid
from hostbay.core.errors import InsufficientFunds, UserError
from hostbay.core.money import prorata_cents
from hostbay.testing.pytest_plugin import DEFAULT_NOW

cents = st.integers(min_value=1, max_value=60000)
OPS = st.one_of(
    st.tuples(st.just("topup"), cents),
    st.tuples(st.just("order"), st.integers(0, 2), st.sampled_from(sorted(CYCLES))),
    st.tuples(st.just("renew"), st.integers(0, 5)),
    st.tuples(st.just("change"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("charge"), cents),
    st.tuples(st.just("bonus"), cents),
    st.tuples(st.just("correction"), st.one_of(st.integers(-20000, -1), st.integers(1, 20000))),
    st.tuples(st.just("refund"), cents),
    st.tuples(st.just("advance"), st.integers(0, 24 * 60), st.integers(0, 59)),
    st.tuples(st.just("replay"), st.integers(0, 30)),
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


def _check(user, expected):
    db.session.expire_all()
    bal = ledger.balance_cents(user.id)
    assert bal == ledger.ledger_sum_cents(user.id) == expected
    assert bal >= 0


@SETTINGS
@given(opening=st.integers(0, 200000), steps=st.lists(OPS, min_size=1, max_size=25))
def test_random_money_sequences(app, clock, make_package, make_image, finish_job, opening, steps):
    cache = app.extensions.setdefault("billing-test-catalogue", {})
    if not cache:
        cache["pkgs"] = [make_package(monthly_cents=m, disk_gib=d) for m, d in ((500, 10), (1234, 20), (2999, 40))]
        cache["img"] = make_image(min_disk_gib=1)
    pkgs, img = cache["pkgs"], cache["img"]
    staff = db.session.scalar(db.select(User).filter_by(email="money-staff@example.test"))
    if staff is None:
        staff = User(email="money-staff@example.test", password_hash="-", role="billing")
        db.session.add(staff)
    clock.set(DEFAULT_NOW)
    user = User(email=f"{new_uuid()}@example.test", password_hash="-")
    db.session.add(user)
    db.session.commit()

    expected = 0
    if opening:
        ledger.credit(user.id, opening, kind="topup", key=f"opening:{user.uuid}", description="Top-up")
        db.session.commit()
        expected = opening
    svcs: list[services.Service] = []
    done: list = []  # (callable replaying the operation)

    for step in steps:
        kind = step[0]
        before = expected
        try:
            if kind == "topup":
                key = new_uuid()
                ledger.credit(user.id, step[1], kind="topup", key=key, description="Top-up")
                db.session.commit()
                expected += step[1]
                done.append(lambda k=key, a=step[1]: ledger.credit(user.id, a, kind="topup", key=k,
                                                                   description="Top-up"))
            elif kind == "order":
                pkg, cycle, key = pkgs[step[1]], step[2], new_uuid()
                svc = billing.place_order(user, pkg, cycle, f"h{len(svcs)}.example.test", img, key=key)
                db.session.commit()  # the test is the owner of the unit of work
                expected -= pkg.price_cents(cycle)
                svcs.append(finish_job(svc))
                done.append(lambda p=pkg, c=cycle, k=key, n=len(svcs): billing.place_order(
                    user, p, c, f"h{n - 1}.example.test", img, key=k))
            elif kind == "renew" and svcs:
                svc = svcs[step[1] % len(svcs)]
                key = f"renewal:{svc.uuid}:{svc.renews_at:%Y%m%dT%H%M%S}"
                price = svc.price_cents
                ledger.debit(user.id, price, kind="renewal", key=key, description=f"Renewal of {svc.hostname}",
                             reference=("service", svc.uuid), service_id=svc.id)
                svc.period_start, svc.renews_at = svc.renews_at, add_cycle(svc.renews_at, svc.cycle)
                db.session.commit()
                expected -= price
                done.append(lambda k=key, a=price: ledger.debit(user.id, a, kind="renewal", key=k,
                                                                description="Renewal"))
            elif kind == "change" and svcs:
                svc, pkg, key = svcs[step[1] % len(svcs)], pkgs[step[2]], new_uuid()
                if pkg.id == svc.package_id:
                    continue
                amount = prorata_cents(svc.price_cents, pkg.price_cents(svc.cycle), clock.now(), svc.period_start,
                                       svc.renews_at)
                billing.change_package(svc, pkg, user, confirm=svc.hostname, key=key)
                db.session.commit()
                expected -= amount
                finish_job(svc)
                done.append(lambda s=svc, p=pkg, k=key: billing.change_package(s, p, user, confirm=s.hostname,
                                                                               key=k))
            elif kind in ("charge", "bonus", "correction"):
                key = new_uuid()
                fn = {"charge": lambda a, k: billing.admin_charge(user, a, staff, "Charge", key=k),
                      "bonus": lambda a, k: billing.bonus(user, a, staff, "Bonus", key=k),
                      "correction": lambda a, k: billing.correction(user, a, staff, "reason", key=k)}[kind]
                fn(step[1], key)
                db.session.commit()
                expected += -step[1] if kind == "charge" else step[1]
                done.append(lambda f=fn, a=step[1], k=key: f(a, k))
            elif kind == "refund":
                req = billing.request_refund(user, step[1], "please")
                billing.approve_refund(req, staff, "tx")
                db.session.commit()
                expected -= step[1]
                done.append(lambda r=req: ledger.debit(user.id, r.amount_cents, kind="refund_payout",
                                                       key=f"refund:{r.uuid}", description="Refund"))
            elif kind == "advance":
                clock.advance(hours=step[1], minutes=step[2])
                continue
            elif kind == "replay" and done:
                entries = ledger.ledger_sum_cents(user.id), db.session.scalar(
                    db.select(db.func.count()).select_from(ledger.LedgerEntry))
                done[step[1] % len(done)]()
                db.session.commit()
                assert (ledger.ledger_sum_cents(user.id), db.session.scalar(
                    db.select(db.func.count()).select_from(ledger.LedgerEntry))) == entries
            else:
                continue
            event(f"{kind} done")
        except InsufficientFunds as exc:
            event(f"{kind} refused: insufficient funds")
            db.session.rollback()
            assert exc.shortfall_cents > 0
            expected = before
        except UserError:
            event(f"{kind} refused")
            db.session.rollback()  # e.g. a refund above the balance
            expected = before
        _check(user, expected)


@settings(max_examples=300, deadline=None)
@given(old=st.integers(0, 10**7), new=st.integers(0, 10**7), cycle=st.sampled_from(sorted(CYCLES)),
       start_s=st.integers(0, 4 * 365 * 86400), frac=st.fractions(0, 1))
def test_upgrade_then_reverse_downgrade_nets_to_zero(old, new, cycle, start_s, frac):
    start = datetime(2026, 1, 1) + timedelta(seconds=start_s)
    end = add_cycle(start, cycle)
    at = start + timedelta(seconds=int((end - start).total_seconds() * frac))
    up = prorata_cents(old, new, at, start, end)
    down = prorata_cents(new, old, at, start, end)
    assert abs(up + down) <= 1 and up + down == 0
    assert abs(up) <= abs(new - old)
    assert (up >= 0) == (new >= old) or up == 0
    assert prorata_cents(old, new, start, start, end) == new - old
    assert prorata_cents(old, new, end, start, end) == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(cycle=st.sampled_from(sorted(CYCLES)), offset=st.integers(0, 400 * 86400), up_first=st.booleans(),
       prices=st.tuples(st.integers(1, 99999), st.integers(1, 99999)).filter(lambda p: p[0] != p[1]))
def test_change_then_reverse_change_nets_to_zero_through_the_engine(app, clock, make_package, make_image,
                                                                    finish_job, cycle, offset, up_first, prices):
    clock.set(DEFAULT_NOW)
    user = User(email=f"{new_uuid()}@example.test", password_hash="-")
    db.session.add(user)
    db.session.commit()
    ledger.credit(user.id, 10**8, kind="topup", key=f"t:{user.uuid}", description="Top-up")
    db.session.commit()
    low, high = sorted(prices)
    a = make_package(monthly_cents=low if up_first else high, disk_gib=20)
    b = make_package(monthly_cents=high if up_first else low, disk_gib=20)
    svc = finish_job(billing.place_order(user, a, cycle, "web.example.test", make_image(), key="o"))
    clock.advance(seconds=offset % int((svc.renews_at - svc.period_start).total_seconds()))
    before = ledger.balance_cents(user.id)
    billing.change_package(svc, b, user, key="there")
    finish_job(svc)
    billing.change_package(svc, a, user, key="back")
    assert abs(ledger.balance_cents(user.id) - before) <= 1
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id)
    assert svc.price_cents == a.price_cents(cycle)

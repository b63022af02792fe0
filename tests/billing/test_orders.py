import pytest

from hostbay.core import billing, jobs, ledger, services
from hostbay.core.activity import ActivityEntry
from hostbay.core.catalog import add_cycle, orderable_packages
from hostbay.core.db import db
from hostbay.core.errors import InsufficientFunds, UserError
from hostbay.core.services import Service


def _count(model, **filters):
    return db.session.scalar(db.select(db.func.count()).select_from(model).filter_by(**filters))


def test_order_debits_creates_pending_service_and_queues_setup(make_user, make_package, make_image, make_key, clock):
    user = make_user(balance_cents=5000)
    pkg = make_package(monthly_cents=1200)
    img = make_image()
    k1, k2 = make_key(user, "a"), make_key(user, "b")
    svc = billing.place_order(user, pkg, "quarterly", "Web1.Example.com.", img.uuid, [k2.uuid, k1.id], key="req-1")
    assert svc.state == services.PENDING and svc.hostname == "web1.example.com"
    assert svc.price_cents == 3600 and svc.cycle == "quarterly"
    assert svc.period_start == clock.now() and svc.renews_at == add_cycle(clock.now(), "quarterly")
    assert svc.ssh_key_ids == sorted([k1.id, k2.id]) and svc.image_id == img.id
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 1400
    entry = ledger.find_entry(f"order:{user.uuid}:req-1")
    assert entry.kind == "order" and entry.amount_cents == -3600 and entry.reference_id == svc.uuid
    events = db.session.scalars(db.select(ActivityEntry).filter_by(user_id=user.id, service_id=svc.id)).all()
    assert sorted(e.event for e in events) == ["billing", "create"]
    assert any(e.message == "$36.00 charged from your wallet: Order: Test VPS (quarterly) for web1.example.com. "
               "Balance: $14.00." for e in events)
    op = db.session.scalar(db.select(jobs.Operation).filter_by(key=f"provision:{svc.uuid}"))
    assert op.kind == "service.provision" and op.service_id == svc.id and op.state == jobs.QUEUED
    # replay: same service, no second charge, no second job
    again = billing.place_order(user, pkg, "quarterly", "web1.example.com", img.uuid, [k1.id], key="req-1")
    assert again.id == svc.id
    assert _count(Service, user_id=user.id) == 1 and _count(jobs.Operation, kind="service.provision") == 1
    assert ledger.balance_cents(user.id) == 1400


def test_insufficient_funds_creates_nothing(make_user, make_package, make_image):
    user = make_user(balance_cents=999)
    pkg = make_package(monthly_cents=1000)
    img = make_image()
    quote = billing.quote_order(user, pkg, "monthly")
    assert quote.shortfall_cents == 1 and not quote.affordable
    with pytest.raises(InsufficientFunds) as exc:
        billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="k")
    assert exc.value.shortfall_cents == 1 and "Add at least $0.01" in exc.value.customer_message
    assert _count(Service) == 0 and _count(jobs.Operation, kind="service.provision") == 0
    assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == 999


def test_failure_after_debit_rolls_everything_back(make_user, make_package, make_image, monkeypatch):
    user = make_user(balance_cents=5000)
    pkg, img = make_package(), make_image()

    def broken(*a, **kw):
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(jobs, "enqueue", broken)
    with pytest.raises(RuntimeError):
        billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="k")
    assert _count(Service) == 0 and ledger.balance_cents(user.id) == 5000
    assert ledger.find_entry(f"order:{user.uuid}:k") is None


@pytest.mark.parametrize("hostname", ["", "-bad.example.com", "bad-.example.com", "a..b", "under_score.com",
                                      "x" * 64 + ".com", "1.2.3.4", ("a" * 60 + ".") * 5 + "com", "sp ace.com"])
def test_hostname_rules(hostname):
    with pytest.raises(UserError):
        billing.normalise_hostname(hostname)


def test_hostname_accepted():
    assert billing.normalise_hostname(" Web-1.EXAMPLE.com. ") == "web-1.example.com"
    assert billing.normalise_hostname("box") == "box"
    assert billing.normalise_hostname("1and1.example.com") == "1and1.example.com"


def test_order_validation(make_user, make_package, make_image, make_key):
    user, other = make_user(balance_cents=100000), make_user()
    pkg = make_package(disk_gib=10)
    img = make_image()
    foreign_key = make_key(other)

    def order(**kw):
        args = dict(package=pkg, cycle="monthly", hostname="web1.example.com", image=img, ssh_key_ids=[])
        args.update(kw)
        return billing.place_order(user, args["package"], args["cycle"], args["hostname"], args["image"],
                                   args["ssh_key_ids"], key=kw.get("key", "k"))

    cases = [
        dict(cycle="weekly"),
        dict(image=None),
        dict(image=make_image(driver="other")),
        dict(image=make_image(enabled=False)),
        dict(image=make_image(min_disk_gib=20)),
        dict(ssh_key_ids=[foreign_key.uuid]),
        dict(ssh_key_ids=[999999]),
        dict(hostname="not a host"),
        dict(package=make_package(retired=True)),
        dict(package=make_package(visible=False)),
        dict(key=""),
    ]
    for case in cases:
        with pytest.raises(UserError):
            order(**case)
    # a package without a price for a cycle
    pkg.prices = [p for p in pkg.prices if p.cycle != "annual"]
    db.session.commit()
    with pytest.raises(UserError):
        order(cycle="annual")
    assert _count(Service) == 0 and ledger.balance_cents(user.id) == 100000


def test_orderable_packages_and_catalogue(make_package, make_image):
    a = make_package(slug="a", sort=2)
    b = make_package(slug="b", sort=1)
    make_package(slug="hidden", visible=False)
    make_package(slug="retired", retired=True)
    ded = make_package(slug="ded", kind="dedicated", driver="ipmi", hardware={"cpu": "E-2388G", "ram_gib": 64})
    assert [p.slug for p in orderable_packages()] == ["ded", "b", "a"]
    assert [p.slug for p in orderable_packages("dedicated")] == ["ded"]
    assert ded.hardware_text() == "cpu: E-2388G, ram gib: 64"
    assert a.cycles == ["monthly", "quarterly", "semiannual", "annual"] and b.orderable


def test_retiring_a_package_keeps_existing_services(make_user, make_package, make_image):
    user = make_user(balance_cents=5000)
    pkg, img = make_package(), make_image()
    svc = billing.place_order(user, pkg, "monthly", "web1.example.com", img, key="k")
    pkg.retired = True
    db.session.commit()
    db.session.refresh(svc)
    assert svc.package.id == pkg.id and svc.price_cents == 1000 and svc.state == services.PENDING


def test_dedicated_order_without_image(make_user, make_package):
    user = make_user(balance_cents=50000)
    ded = make_package(kind="dedicated", driver="ipmi", monthly_cents=9900, hardware={"cpu_pattern": "E-2388G"})
    from hostbay.core.db import db
    from hostbay.core.inventory import HardwareServer, OutOfStock

    db.session.add(HardwareServer(name="m1", cpu_model="Intel Xeon E-2388G", cpu_cores=8, ram_gib=64,
                                  disk_size_gib=960, location="fra1"))
    db.session.commit()
    svc = billing.place_order(user, ded, "monthly", "metal1.example.com", None, key="k")
    assert svc.kind == "dedicated" and svc.image_id is None and ledger.balance_cents(user.id) == 50000 - 9900
    with pytest.raises(OutOfStock):  # the only matching server is taken: refused, nothing charged
        billing.place_order(user, ded, "monthly", "metal2.example.com", None, key="k2")
    assert ledger.balance_cents(user.id) == 50000 - 9900


def test_free_package_order_is_idempotent(make_user, make_package, make_image):
    user = make_user()
    pkg, img = make_package(monthly_cents=0), make_image()
    a = billing.place_order(user, pkg, "monthly", "free.example.com", img, key="k")
    b = billing.place_order(user, pkg, "monthly", "free.example.com", img, key="k")
    assert a.id == b.id and _count(Service) == 1 and ledger.ledger_sum_cents(user.id) == 0

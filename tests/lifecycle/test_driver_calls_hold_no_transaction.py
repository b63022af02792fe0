"""Job handlers call drivers with no database transaction open: on SQLite every transaction begins IMMEDIATE (it
holds the only write lock), so a slow start, stop or reinstall would block every other writer meanwhile."""

import pytest

from hostbay.core import billing, iso, jobs
from hostbay.core.actions import request_action
from hostbay.core.db import db
from hostbay.core.ipam import create_pool
from hostbay.core.services import Service
from hostbay.testing.fakes import FakeNetworkFilter, FakeVirtDriver

METHODS = ["create", "start", "stop", "restart", "reinstall", "resize", "rebuild", "suspend", "unsuspend",
           "delete", "mount_iso", "eject_iso"]


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def watch(cls, name):
        orig = getattr(cls, name)

        def wrapped(self, *args, **kw):
            seen.append((name, db.session().in_transaction()))
            return orig(self, *args, **kw)
        monkeypatch.setattr(cls, name, wrapped)

    for name in METHODS:
        if hasattr(FakeVirtDriver, name):
            watch(FakeVirtDriver, name)
    watch(FakeNetworkFilter, "apply")
    return seen


def _fresh(svc):
    db.session.expire_all()
    return db.session.get(Service, svc.id)


def test_handlers_release_the_transaction_before_driver_calls(calls, make_user, make_package, make_node, make_image,
                                                             clock, tmp_path, app):
    node = make_node()
    create_pool(name="drv-v4", cidr="198.51.100.0/28", gateway="198.51.100.1")
    user = make_user(balance_cents=100000)
    small = make_package(slug="s", monthly_cents=1000, disk_gib=20)
    big = make_package(slug="b", monthly_cents=2000, disk_gib=40)
    img = make_image()
    svc = billing.place_order(user, small, "monthly", "drv.example.com", img, key="o1")
    db.session.commit()  # the caller owns the transaction; the job runs after its commit
    assert _fresh(svc).state == "active"
    for action in ("stop", "start", "restart"):
        request_action(_fresh(svc), action, user)
        db.session.commit()
    request_action(_fresh(svc), "reinstall", user, image_id=img.id)
    db.session.commit()
    billing.change_package(_fresh(svc), big, user, key="up")
    db.session.commit()
    assert _fresh(svc).state == "active"
    billing.change_package(_fresh(svc), small, user, confirm=svc.hostname, key="down")
    db.session.commit()
    assert _fresh(svc).state == "active"
    app.config["HOSTBAY_ISO_DIR"] = str(tmp_path / "isos")
    image = iso.IsoImage(user_id=user.id, name="r.iso", stored_name="0123456789abcdef0123456789abcdef.iso", size_bytes=3, sha256="0" * 64,
                         state=iso.APPROVED)
    db.session.add(image)
    db.session.commit()
    image.path.parent.mkdir(parents=True, exist_ok=True)
    image.path.write_bytes(b"iso")
    iso.request_mount(_fresh(svc), image.uuid, actor=user)
    db.session.commit()
    iso.request_eject(_fresh(svc), actor=user)
    db.session.commit()
    request_action(_fresh(svc), "cancel", user, when="now")
    db.session.commit()
    ops = db.session.scalars(db.select(jobs.Operation).where(jobs.Operation.state != jobs.SUCCEEDED)).all()
    assert not ops, [(o.kind, o.state, o.error) for o in ops]
    names = [n for n, _ in calls]
    for name in ("create", "stop", "start", "restart", "reinstall", "resize", "rebuild", "mount_iso", "eject_iso",
                 "delete", "apply"):
        assert name in names, names
    held = [n for n, in_tx in calls if in_tx]
    assert not held, f"driver called inside a transaction: {held}"

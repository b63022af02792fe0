"""Staff approval of ISOs, and mount/eject through the fake driver: only approved ISOs of the owner mount."""

from __future__ import annotations

from sqlalchemy import select

from hostbay.core import iso as iso_mod
from hostbay.core import jobs
from hostbay.core.activity import ActivityEntry, AuditEntry
from hostbay.core.db import db
from hostbay.testing import FakeVirtDriver
from hostbay.testing.pytest_plugin import login


def _iso(user, make_iso, name="install.iso", approve_by=None):
    image = iso_mod.upload_bytes(user, make_iso(), name)
    db.session.commit()
    if approve_by is not None:
        iso_mod.decide(image, True, approve_by)
        db.session.commit()
    return image


def _drive(service):
    return FakeVirtDriver.servers[service.uuid]["iso"]


def test_staff_queue_approve_and_reject(app, client, make_user, make_iso):
    customer, support = make_user(), make_user(role="support")
    a, b = _iso(customer, make_iso, "a.iso"), _iso(customer, make_iso, "b.iso")
    login(client, support)
    page = client.get("/staff/isos/")
    assert page.status_code == 200 and b"a.iso" in page.data and b"b.iso" in page.data
    assert client.post(f"/staff/isos/{a.uuid}/approve", data={"note": "checksum matches"}).status_code == 303
    # Rejecting needs a reason for the customer.
    client.post(f"/staff/isos/{b.uuid}/reject", data={"note": ""})
    db.session.expire_all()
    assert db.session.get(iso_mod.IsoImage, b.id).state == "pending"
    client.post(f"/staff/isos/{b.uuid}/reject", data={"note": "Unknown vendor image"})
    db.session.expire_all()
    a, b = db.session.get(iso_mod.IsoImage, a.id), db.session.get(iso_mod.IsoImage, b.id)
    assert (a.state, a.decided_by_id, a.staff_note) == ("approved", support.id, "checksum matches")
    assert b.state == "rejected" and b.decided_at is not None and not b.path.exists()
    # The first decision wins: a second one is refused.
    client.post(f"/staff/isos/{a.uuid}/reject", data={"note": "changed my mind"})
    db.session.expire_all()
    assert db.session.get(iso_mod.IsoImage, a.id).state == "approved"
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == support.id)).all()
    assert sorted(actions) == ["iso.approve", "iso.reject"]
    # The customer sees the outcome and the note.
    client.post("/logout")
    login(client, customer)
    page = client.get("/panel/isos").data
    assert b"Approved" in page and b"Rejected" in page and b"Unknown vendor image" in page


def test_staff_page_needs_the_approvals_permission(app, client, make_user, make_iso):
    customer = make_user()
    image = _iso(customer, make_iso)
    for role in ("customer", "billing"):
        user = make_user(role=role)
        login(client, user)
        assert client.get("/staff/isos/").status_code == 404
        assert client.post(f"/staff/isos/{image.uuid}/approve").status_code == 404
        client.post("/logout")
    db.session.expire_all()
    assert db.session.get(iso_mod.IsoImage, image.id).state == "pending"


def test_only_approved_own_isos_mount_and_eject(app, client, make_user, make_iso, active_service):
    owner, stranger, support = make_user(), make_user(), make_user(role="support")
    service = active_service(owner)
    pending = _iso(owner, make_iso, "pending.iso")
    foreign = _iso(stranger, make_iso, "foreign.iso", approve_by=support)
    mine = _iso(owner, make_iso, "mine.iso", approve_by=support)
    login(client, owner)

    page = client.get("/panel/isos")
    assert page.status_code == 200
    # A pending ISO cannot be mounted.
    resp = client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": pending.uuid},
                       follow_redirects=False)
    assert resp.status_code == 303 and _drive(service) is None
    # Another customer's approved ISO is not found.
    assert client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": foreign.uuid}).status_code == 404
    assert _drive(service) is None
    # The owner's approved ISO mounts through a job that calls the driver.
    assert client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": mine.uuid}).status_code == 303
    assert _drive(service) == str(mine.path)
    assert FakeVirtDriver.servers[service.uuid]["boot"] == "cdrom"
    op = db.session.scalar(select(jobs.Operation).filter_by(kind="service.mount_iso"))
    assert op.state == "succeeded" and op.service_id == service.id
    mount = iso_mod.mount_of(service)
    assert mount.state == "mounted" and mount.iso_id == mine.id
    # A second mount while one is in the drive is refused; a mounted ISO cannot be deleted.
    client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": mine.uuid})
    assert db.session.scalar(select(db.func.count(jobs.Operation.id)).filter_by(kind="service.mount_iso")) == 1
    client.post(f"/panel/isos/{mine.uuid}/delete")
    db.session.expire_all()
    assert db.session.get(iso_mod.IsoImage, mine.id) is not None and mine.path.exists()
    # Eject.
    assert client.post(f"/panel/services/{service.uuid}/iso/eject").status_code == 303
    assert _drive(service) is None and FakeVirtDriver.servers[service.uuid]["boot"] == "hd"
    assert iso_mod.mount_of(service) is None
    events = db.session.scalars(select(ActivityEntry.event).filter_by(service_id=service.id)
                                .order_by(ActivityEntry.id)).all()
    assert events == ["iso_mount", "iso_eject"]
    # Now it can be deleted.
    client.post(f"/panel/isos/{mine.uuid}/delete")
    db.session.expire_all()
    assert db.session.get(iso_mod.IsoImage, mine.id) is None


def test_mount_on_another_customers_service_is_404(app, client, make_user, make_iso, active_service):
    owner, other, support = make_user(), make_user(), make_user(role="support")
    service = active_service(owner)
    image = _iso(other, make_iso, approve_by=support)
    login(client, other)
    assert client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": image.uuid}).status_code == 404
    assert client.post(f"/panel/services/{service.uuid}/iso/eject").status_code == 404
    assert _drive(service) is None


def test_mount_refused_when_the_state_does_not_allow_it(app, client, make_user, make_iso, active_service):
    owner, support = make_user(), make_user(role="support")
    service = active_service(owner, state="suspended")
    image = _iso(owner, make_iso, approve_by=support)
    login(client, owner)
    resp = client.post(f"/panel/services/{service.uuid}/iso/mount", data={"iso": image.uuid},
                       follow_redirects=True)
    assert b"suspended" in resp.data
    assert _drive(service) is None and iso_mod.mount_of(service) is None


def test_failed_mount_frees_the_drive_and_is_visible(app, make_user, make_iso, active_service, job_runner):
    owner, support = make_user(), make_user(role="support")
    service = active_service(owner)
    image = _iso(owner, make_iso, approve_by=support)
    op = iso_mod.request_mount(service, image.uuid)
    db.session.commit()
    assert iso_mod.mount_of(service).state == "mounting"
    image.path.unlink()  # the file vanished before the job ran
    job_runner.run_all()
    db.session.expire_all()
    op = db.session.get(jobs.Operation, op.id)
    assert op.state == "failed" and "missing" in op.customer_error
    assert iso_mod.mount_of(service) is None and _drive(service) is None


def test_mount_page_partial(app, client, make_user, make_iso, active_service):
    from flask import render_template_string

    owner, support = make_user(), make_user(role="support")
    service = active_service(owner)
    image = _iso(owner, make_iso, "rescue.iso", approve_by=support)
    login(client, owner)
    with app.test_request_context():
        from flask_login import login_user

        login_user(owner)
        html = render_template_string('{% include "services/_iso.html" %}{% include "services/_console.html" %}',
                                      service=service)
    assert image.uuid in html and "rescue.iso" in html and f"/panel/services/{service.uuid}/iso/mount" in html
    assert f"/panel/services/{service.uuid}/console" in html
    assert "node-secret-fra1" not in html and "fake-" not in html


def test_transient_failures_keep_the_drive_until_retries_run_out(app, make_user, make_iso, active_service,
                                                                 job_runner, monkeypatch):
    from hostbay.core.errors import TransientDriverError

    owner, support = make_user(), make_user(role="support")
    service = active_service(owner)
    image = _iso(owner, make_iso, approve_by=support)

    def busy(self, ref, path):
        raise TransientDriverError("domain lock held")
    monkeypatch.setattr(FakeVirtDriver, "mount_iso", busy)
    op = iso_mod.request_mount(service, image.uuid)
    op.max_attempts = 2
    db.session.commit()
    op_id = op.id
    job_runner.run_all()
    db.session.expire_all()
    assert db.session.get(jobs.Operation, op_id).state == "retrying"
    assert iso_mod.mount_of(service).state == "mounting"  # reserved while a retry is due
    db.session.execute(db.update(jobs.Operation).where(jobs.Operation.id == op_id).values(run_after=None))
    db.session.commit()
    job_runner.run_all()
    db.session.expire_all()
    assert db.session.get(jobs.Operation, op_id).state == "failed"
    assert iso_mod.mount_of(service) is None and _drive(service) is None


def test_mount_on_an_ended_service_does_not_block_delete(app, make_user, make_iso, active_service):
    owner, support = make_user(), make_user(role="support")
    service = active_service(owner)
    image = _iso(owner, make_iso, approve_by=support)
    iso_mod.request_mount(service, image.uuid)
    db.session.commit()
    assert iso_mod.mount_of(service).state == "mounted"
    service.state = "terminated"
    db.session.commit()
    iso_mod.delete_iso(owner, image)
    db.session.commit()
    assert db.session.get(iso_mod.IsoImage, image.id) is None and iso_mod.mount_of(service) is None

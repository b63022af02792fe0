"""Staff register OS images per driver with their OS family and whether they report readiness (web/staff_images.py)."""

from __future__ import annotations

from hostbay.core.catalog import Image
from hostbay.testing.pytest_plugin import login


def test_staff_register_and_mark_images(app, db, client, make_user):
    admin = make_user(role="admin")
    login(client, admin)
    assert "Reports readiness" in client.get("/staff/images/").get_data(as_text=True)
    resp = client.post("/staff/images/", data={"driver": "fake", "slug": "debian-12", "name": "Debian 12",
                                               "source": "debian-12.qcow2", "os_family": "debian",
                                               "min_disk_gib": "2", "reports_readiness": "on"})
    assert resp.status_code == 303
    img = db.session.scalar(db.select(Image).filter_by(slug="debian-12"))
    assert (img.driver, img.os_family, img.min_disk_gib, img.reports_readiness) == ("fake", "debian", 2, True)
    # a custom installation: cannot report, so its servers do not wait
    client.post("/staff/images/", data={"driver": "fake", "slug": "custom", "name": "Custom", "source": "c.qcow2",
                                        "os_family": "other"})
    assert db.session.scalar(db.select(Image).filter_by(slug="custom")).reports_readiness is False
    # unknown driver, bad slug and a duplicate are refused
    for bad in ({"driver": "nope", "slug": "x", "name": "X", "source": "x"},
                {"driver": "fake", "slug": "Bad Slug", "name": "X", "source": "x"},
                {"driver": "fake", "slug": "debian-12", "name": "Again", "source": "x"}):
        client.post("/staff/images/", data=bad)
    assert db.session.scalar(db.select(db.func.count()).select_from(Image)) == 2
    # unmark: the form sends only ticked boxes
    client.post(f"/staff/images/{img.uuid}", data={"enabled": "on"})
    db.session.refresh(img)
    assert img.enabled is True and img.reports_readiness is False


def test_customers_and_support_cannot_reach_the_image_registry(app, client, make_user):
    for role in ("customer", "support"):
        c = app.test_client()
        login(c, make_user(role=role))
        assert c.get("/staff/images/").status_code == 404
        assert c.post("/staff/images/", data={"driver": "fake", "slug": "x", "name": "x",
                                              "source": "x"}).status_code == 404

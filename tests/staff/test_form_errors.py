"""Staff catalogue and node forms validate every field at once (issue 17): a refused save answers 422 and shows the
form again with what was submitted (never a secret), each bad control aria-invalid and described by its own message
right under it, and a summary of all of them at the top; nothing is saved."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from hostbay.core.catalog import Image, Node, Package
from hostbay.core.db import db
from hostbay.core.drivers import Setting
from hostbay.core.hookspecs import hookimpl
from hostbay.testing import fakes
from hostbay.testing.pytest_plugin import login

_VOID = ("input", "br", "img", "meta", "link", "hr")


class _Page(HTMLParser):
    """Attributes of every element with an id, the text of each, and the ids in document order."""

    def __init__(self, html: str):
        super().__init__()
        self.attrs: dict[str, dict] = {}
        self.text: dict[str, str] = {}
        self.order: list[str] = []
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.attrs[attrs["id"]] = {**attrs, "tag": tag}
            self.text[attrs["id"]] = ""
            self.order.append(attrs["id"])
        if tag not in _VOID:
            self._open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if self._open and tag not in _VOID:
            self._open.pop()

    def handle_data(self, data):
        for el in self._open:
            if el:
                self.text[el] += data


def _assert_field_error(page: _Page, control: str, error_id: str, words: str) -> None:
    ctl = page.attrs[control]
    assert ctl.get("aria-invalid") == "true", (control, ctl)
    assert error_id in ctl.get("aria-describedby", "").split(), (control, ctl)
    assert words in page.text[error_id], (error_id, page.text.get(error_id))
    assert "field-error" in page.attrs[error_id]["class"]
    # right under its own control: the next element with an id after the control (and its options) is the message
    after = page.order[page.order.index(control) + 1:]
    assert after and after[0] == error_id, (control, after[:3])


def _assert_summary(page: _Page, summary_id: str, messages: list[str]) -> None:
    text = page.text[summary_id]
    for m in messages:
        assert m in text, (m, text)
    assert page.attrs[summary_id].get("role") == "alert"


def _value(page: _Page, control: str):
    return page.attrs[control].get("value")


PKG_FORM = {"name": "Standard 2", "slug": "std-2", "kind": "vps", "driver": "fake", "vcpus": "2",
            "memory_mib": "2048", "disk_gib": "40", "ipv4_count": "1", "port_speed_mbit": "1000",
            "price_monthly": "12.50", "price_annual": "125", "sort": "3", "visible": "1"}
PKG_BAD = {"name": "", "memory_mib": "lots", "price_monthly": "-5.00"}
PKG_MESSAGES = {"name": "Give the package a name.", "memory_mib": "Memory must be a whole number.",
                "price_monthly": "Prices cannot be negative."}


@pytest.fixture
def staff(app, client, make_user):
    login(client, make_user(role="admin"))
    return client


def _refused_page(resp, messages: dict) -> "_Page":
    """The 422 page of a refused form: each message under its own control, all of them in the summary."""
    assert resp.status_code == 422, resp.status_code
    page = _Page(resp.get_data(as_text=True))
    for field, message in messages.items():
        _assert_field_error(page, field, f"{field}-error", message)
    _assert_summary(page, "error-summary", list(messages.values()))
    return page


def _check_package_page(resp):
    page = _refused_page(resp, PKG_MESSAGES)
    # the good values stay in the form; the bad ones are shown as typed
    assert (_value(page, "slug"), _value(page, "vcpus"), _value(page, "disk_gib")) == ("std-2", "2", "40")
    assert (_value(page, "price_annual"), _value(page, "sort")) == ("125", "3")
    assert (_value(page, "memory_mib"), _value(page, "price_monthly")) == ("lots", "-5.00")
    for good in ("slug", "vcpus", "disk_gib", "price_annual"):
        assert "aria-invalid" not in page.attrs[good], good
    return page


def test_package_create_reports_every_bad_field_next_to_it(staff):
    resp = staff.post("/staff/catalogue/packages/", data={**PKG_FORM, **PKG_BAD})
    _check_package_page(resp)
    assert db.session.scalar(select(Package).filter_by(slug="std-2")) is None
    fresh = _Page(staff.get("/staff/catalogue/packages/").get_data(as_text=True))  # a fresh form: no marks
    assert "error-summary" not in fresh.attrs and not any("aria-invalid" in a for a in fresh.attrs.values())


def test_package_edit_reports_every_bad_field_and_changes_nothing(staff, make_package):
    pkg = make_package(slug="std-2", name="Standard", monthly_cents=1000)
    resp = staff.post(f"/staff/catalogue/packages/{pkg.uuid}", data={**PKG_FORM, **PKG_BAD, "apply_existing": "1"})
    _check_package_page(resp)
    assert "<h1>Standard</h1>" in resp.get_data(as_text=True)  # the package's own page, its saved name
    db.session.expire_all()
    pkg = db.session.get(Package, pkg.id)
    assert (pkg.name, pkg.price_cents("monthly")) == ("Standard", 1000)


IMG_FORM = {"driver": "fake", "name": "Debian 12", "slug": "debian-12", "source": "debian-12.qcow2",
            "os_family": "linux", "min_disk_gib": "4", "enabled": "1"}
IMG_BAD = {"name": "", "source": "", "min_disk_gib": "big"}
IMG_MESSAGES = {"name": "The image needs a name.", "source": "The image needs a template reference.",
                "min_disk_gib": "Minimum disk must be a whole number."}


def _check_image_page(resp):
    page = _refused_page(resp, IMG_MESSAGES)
    assert (_value(page, "slug"), _value(page, "os_family"), _value(page, "min_disk_gib")) == \
        ("debian-12", "linux", "big")
    assert "aria-invalid" not in page.attrs["slug"]


def test_image_create_and_edit_report_every_bad_field(staff, make_image):
    _check_image_page(staff.post("/staff/catalogue/images/", data={**IMG_FORM, **IMG_BAD}))
    assert db.session.scalar(select(Image).filter_by(slug="debian-12")) is None
    img = make_image(driver="fake", slug="debian-12", name="Debian", source="deb.qcow2")
    _check_image_page(staff.post(f"/staff/catalogue/images/{img.uuid}", data={**IMG_FORM, **IMG_BAD}))
    db.session.expire_all()
    img = db.session.get(Image, img.id)
    assert (img.name, img.source) == ("Debian", "deb.qcow2")


class StrictVirt(fakes.FakeVirtDriver):
    name, label = "strict", "Strict host"
    settings = [Setting("uri", "URI", type="url"),
                Setting("port", "SSH port", type="int", required=False, default=22),
                Setting("password", "Host password", type="secret", required=False),
                Setting("mode", "Mode", type="choice", default="a", choices=("a", "b"))]


class StrictPlugin:
    @hookimpl
    def hostbay_virt_drivers(self):
        return [StrictVirt]


NODE_FORM = {"driver": "strict", "name": "hv-7", "location": "fra1", "vcpus": "8", "memory_mib": "16384",
             "disk_gib": "200", "enabled": "1", "setting_uri": "", "setting_port": "twenty-two",
             "setting_password": "hunter2-secret", "setting_mode": "b"}


def test_node_add_reports_every_bad_setting_and_keeps_the_rest(staff, register_plugin):
    with register_plugin(StrictPlugin()):
        resp = staff.post("/staff/nodes/", data={**NODE_FORM, "disk_gib": "-1"})
        assert resp.status_code == 422, resp.status_code
        html = resp.get_data(as_text=True)
        page = _Page(html)
        messages = {"s-strict-uri": "URI is required", "s-strict-port": "SSH port must be a whole number",
                    "d-strict": "Disk cannot be negative."}
        errors = {"s-strict-uri": "s-strict-setting_uri-error", "s-strict-port": "s-strict-setting_port-error",
                  "d-strict": "s-strict-disk_gib-error"}
        for control, words in messages.items():
            _assert_field_error(page, control, errors[control], words)
        _assert_summary(page, "s-strict-error-summary", list(messages.values()))
        assert (_value(page, "n-strict"), _value(page, "l-strict"), _value(page, "c-strict")) == ("hv-7", "fra1", "8")
        assert _value(page, "s-strict-port") == "twenty-two"
        assert re.search(r'<option selected>b</option>', html)
        assert "hunter2-secret" not in html and _value(page, "s-strict-password") == ""  # a secret is not echoed
        for good in ("n-strict", "c-strict", "s-strict-password"):
            assert "aria-invalid" not in page.attrs[good], good
        assert "aria-invalid" not in page.attrs["n-fake"]  # the other driver's form is untouched
        assert db.session.scalar(select(Node).filter_by(name="hv-7")) is None


def test_node_edit_reports_every_bad_setting_and_changes_nothing(staff, register_plugin, make_node):
    with register_plugin(StrictPlugin()):
        node = make_node(name="hv-8", driver="strict",
                         settings={"uri": "qemu:///system", "port": 22, "password": "old-pw", "mode": "a"})
        resp = staff.post(f"/staff/nodes/{node.id}", data={"setting_uri": "", "setting_port": "x",
                                                          "setting_password": "new-secret-pw", "setting_mode": "b"})
        assert resp.status_code == 422, resp.status_code
        html = resp.get_data(as_text=True)
        page = _Page(html)
        _assert_field_error(page, "s-uri", "s-setting_uri-error", "URI is required")
        _assert_field_error(page, "s-port", "s-setting_port-error", "SSH port must be a whole number")
        _assert_summary(page, "s-error-summary", ["URI is required", "SSH port must be a whole number"])
        assert "new-secret-pw" not in html and "old-pw" not in html
        assert _value(page, "s-port") == "x" and "Capacity and use" in html
        db.session.expire_all()
        assert db.session.get(Node, node.id).settings["uri"] == "qemu:///system"

"""The capability rule: an action the service's driver cannot do is never offered, never charged, and refused
with a clear message when requested directly (package change, ISO, console)."""

import pytest

from hostbay.core import billing, console, iso, jobs, ledger, services
from hostbay.core.db import db
from hostbay.core.drivers import VirtDriver
from hostbay.core.errors import ActionNotAllowed
from hostbay.core.hookspecs import hookimpl
from hostbay.testing import fakes
from hostbay.testing.pytest_plugin import login


class BasicDriver(fakes.FakeVirtDriver):
    """The fake driver without any optional capability (its methods stay, it just does not advertise them)."""

    name, label = "basic", "Basic"
    capabilities = frozenset()


class GrowOnlyDriver(fakes.FakeVirtDriver):
    name, label = "growonly", "Grow only"
    capabilities = frozenset({"resize"})


class Plugin:
    @hookimpl
    def hostbay_virt_drivers(self):
        return [BasicDriver, GrowOnlyDriver]


@pytest.fixture
def drivers(app, register_plugin):
    app.config["HOSTBAY_JOBS"] = "manual"
    with register_plugin(Plugin()) as reg:
        yield reg


def _service(driver, make_user, make_package, make_node, make_service, balance=10000):
    user = make_user(balance_cents=balance)
    small = make_package(slug=f"{driver}-small", monthly_cents=1000, disk_gib=20, driver=driver)
    big = make_package(slug=f"{driver}-big", monthly_cents=2000, disk_gib=40, driver=driver)
    tiny = make_package(slug=f"{driver}-tiny", monthly_cents=500, disk_gib=10, driver=driver)
    node = make_node(driver=driver)
    svc = make_service(user, small, node=node, infra_ref={"id": "x"})
    return user, svc, big, tiny


def test_driver_without_resize_is_neither_offered_a_package_change_nor_charged(
        drivers, make_user, make_package, make_node, make_service, client, clock):
    user, svc, big, tiny = _service("basic", make_user, make_package, make_node, make_service)
    clock.advance(days=10)
    assert "change_package" not in svc.actions_for() and "change_package" not in svc.actions_for(staff=True)
    assert billing.change_candidates(svc) == []
    before = ledger.balance_cents(user.id)
    with pytest.raises(ActionNotAllowed, match="cannot be changed"):
        billing.change_package(svc, big, user, key="direct")
    db.session.rollback()
    db.session.refresh(svc)
    assert svc.state == services.ACTIVE and svc.package_id != big.id
    assert ledger.balance_cents(user.id) == before == ledger.ledger_sum_cents(user.id)
    assert db.session.scalar(db.select(jobs.Operation).filter_by(service_id=svc.id)) is None
    # the panel neither links the change nor accepts it
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "change-package" not in page
    listing = client.get(f"/panel/services/{svc.uuid}/change-package").get_data(as_text=True)
    assert big.uuid not in listing and tiny.uuid not in listing
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/review", data={"package": big.uuid})
    assert resp.status_code == 302  # refused with the reason, back to the list
    assert "cannot be changed" in client.get(resp.headers["Location"]).get_data(as_text=True)
    resp = client.post(f"/panel/services/{svc.uuid}/change-package/confirm", data={"package": big.uuid, "key": "k"})
    assert resp.status_code == 404  # not a candidate: nothing to confirm
    assert ledger.balance_cents(user.id) == before


def test_driver_that_only_grows_is_offered_bigger_packages_only(
        drivers, make_user, make_package, make_node, make_service):
    user, svc, big, tiny = _service("growonly", make_user, make_package, make_node, make_service)
    assert "change_package" in svc.actions_for()
    assert billing.change_candidates(svc) == [big]
    with pytest.raises(ActionNotAllowed):
        billing.change_package(svc, tiny, user, confirm=svc.hostname, key="shrink")
    db.session.rollback()
    assert ledger.balance_cents(user.id) == 10000
    op = billing.change_package(svc, big, user, key="grow")
    assert op.kind == "service.resize"


def test_fake_driver_with_every_capability_is_offered_everything(
        app, make_user, make_package, make_node, make_service):
    user, svc, big, tiny = _service("fake", make_user, make_package, make_node, make_service)
    assert {"change_package", "mount_iso", "eject_iso", "console"} <= svc.actions_for()
    assert set(billing.change_candidates(svc)) == {big, tiny}


def test_iso_and_console_are_refused_without_the_capability(drivers, make_user, make_package, make_node,
                                                            make_service):
    user, svc, _, _ = _service("basic", make_user, make_package, make_node, make_service)
    assert not {"mount_iso", "eject_iso", "console"} & svc.actions_for()
    with pytest.raises(ActionNotAllowed, match="ISO images cannot be mounted"):
        iso.request_mount(svc, "any-uuid", actor=user)
    with pytest.raises(ActionNotAllowed, match="ISO images cannot be mounted"):
        iso.request_eject(svc, actor=user)
    with pytest.raises(ActionNotAllowed, match="web console is not available"):
        console.issue(user, svc)


def test_a_service_whose_driver_is_not_loaded_is_offered_no_optional_action(
        app, make_user, make_package, make_node, make_service):
    user, svc, _, _ = _service("gone", make_user, make_package, make_node, make_service)
    assert svc.capabilities == frozenset()
    assert not set(services.ACTION_CAPABILITIES) & svc.actions_for()
    assert {"start", "stop", "restart"} <= svc.actions_for()

"""Dedicated services on the shared state machine, with a BMC simulator speaking RMCP+ on loopback: automated
install (PXE + installer plugin + power cycle), datacenter handling, power actions, and a clock-driven
suspend → recover → remove → wipe → available cycle checked on the simulator's side."""

import re

import pytest
from sqlalchemy import select

from hostbay.core import billing, dctasks, inventory, jobs, ledger, lifecycle, renewals
from hostbay.core.actions import request_action
from hostbay.core.dctasks import DatacenterTask
from hostbay.core.dedicated import InstallRequest
from hostbay.testing.pytest_plugin import login

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEfZQmrHVr2i6OmnFzRzRu8LrbSZrvVdaROzW0DkmHh0 me@laptop"


def _fresh(db, obj):
    db.session.expire_all()
    return db.session.get(type(obj), obj.id)


def _received_since(sim, mark):
    return sim.state()["received"][mark:]


def _order(db, user, pkg, image=None, key="k", host="metal.example.com", keys=()):
    svc = billing.place_order(user, pkg, "monthly", host, image, list(keys), key=key)
    db.session.commit()  # the set-up job runs after the owner's commit
    return _fresh(db, svc)


@pytest.fixture
def ipmi_image(make_image):
    return make_image(driver="ipmi", source="debian-12/amd64", name="Debian 12", slug="debian-12")


def test_automated_install_pxe_cycle_and_single_use_answer_file(db, app, client, sim, make_user, ded_package,
                                                                 add_server, ipmi_image):
    from hostbay.core.accounts import SSHKey

    pkg = ded_package()
    server = add_server(sim, auto_install=True, boot_efi=True)
    user = make_user(balance_cents=20000)
    key = SSHKey(user_id=user.id, name="laptop", public_key=KEY, fingerprint="SHA256:test")
    db.session.add(key)
    db.session.commit()
    sim.control({})
    mark = len(sim.state()["received"])
    svc = _order(db, user, pkg, ipmi_image, keys=[key.id])
    assert svc.state == "active"
    got = _received_since(sim, mark)
    assert "boot_device:pxe:efi" in got
    assert got.index("boot_device:pxe:efi") < max(i for i, x in enumerate(got) if x in ("power_on", "power_cycle"))
    assert sim.state()["power"] == "on" and sim.state()["boot_device"] == "pxe"
    server = _fresh(db, server)
    assert server.state == "in_use" and server.service_id == svc.id
    [req] = db.session.scalars(select(InstallRequest).where(InstallRequest.service_id == svc.id)).all()
    script = (app.config["INSTANCE_PATH"] + f"/pxe/{server.name}.ipxe")
    url = re.search(r"url=(\S+)", open(script).read()).group(1)
    path = url.split("://", 1)[1].split("/", 1)[1]
    assert len(path.split("/")[-1]) >= 40  # 256-bit token
    resp = client.get("/" + path)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "get_hostname string metal" in body and KEY in body
    assert client.get("/" + path).status_code == 404, "the answer file URL is single-use"
    assert client.get("/install/not-a-token").status_code == 404
    # the customer reads outcomes, not BMC details
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "automated operating system installer" in page
    for secret in ("127.0.0.1", server.name, "R1", str(sim.port), "fra1-r1"):
        assert secret not in page


def test_datacenter_install_when_not_automated(db, client, make_user, ded_package, add_server, ipmi_image):
    pkg = ded_package()
    server = add_server()  # no BMC: everything is done by hand
    user, staff = make_user(balance_cents=20000), make_user(role="admin")
    svc = _order(db, user, pkg, ipmi_image)
    assert svc.state == "provisioning"
    [task] = db.session.scalars(select(DatacenterTask).where(DatacenterTask.service_id == svc.id)).all()
    assert task.kind == "install_os" and task.state == "open" and task.params["image"] == "Debian 12"
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "Queued for datacenter handling" in page
    assert server.name not in page and "U01" not in page
    client.post("/logout")
    login(client, staff)
    listing = client.get("/staff/datacenter/").get_data(as_text=True)
    assert server.name in listing and "R1" in listing and "fra1" in listing
    client.post(f"/staff/datacenter/{task.uuid}/start", data={"notes": "on my way"})
    client.post(f"/staff/datacenter/{task.uuid}/done", data={"notes": "installed from USB"})
    task = _fresh(db, task)
    assert task.state == "done" and "installed from USB" in task.notes and "on my way" in task.notes
    svc = _fresh(db, svc)
    assert svc.state == "active" and _fresh(db, server).state == "in_use"
    client.post("/logout")
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "set up by our datacenter team" in page and "Completed" in page
    assert 'id="console-h"' not in page and 'id="iso-h"' not in page and "Open console" not in page
    assert "installed from USB" not in page


def test_failed_datacenter_install_is_told_to_the_customer(db, client, make_user, ded_package, add_server):
    pkg = ded_package()
    add_server()
    user, staff = make_user(balance_cents=20000), make_user(role="admin")
    svc = _order(db, user, pkg)
    task = db.session.scalar(select(DatacenterTask).where(DatacenterTask.service_id == svc.id))
    dctasks.finish(task, staff, ok=False, notes="disk 2 dead")
    db.session.commit()
    login(client, user)
    page = client.get(f"/panel/services/{svc.uuid}").get_data(as_text=True)
    assert "could not set up" in page and "disk 2 dead" not in page
    assert _fresh(db, svc).state == "provisioning"


def test_power_actions_through_the_bmc_and_through_the_datacenter(db, sim, make_user, ded_package, add_server,
                                                                  make_service):
    pkg = ded_package()
    user, staff = make_user(), make_user(role="admin")
    driven = make_service(user, pkg, hostname="a.example.com")
    manual = make_service(user, pkg, hostname="b.example.com")
    add_server(sim, state="in_use", service_id=driven.id)
    hand = add_server(state="in_use", service_id=manual.id)
    sim.control({})
    request_action(driven, "stop", user)
    db.session.commit()
    assert sim.state()["power"] == "off" and sim.state()["received"][-2:] == ["power_soft", "power_status"]
    request_action(driven, "start", user)
    db.session.commit()
    assert sim.state()["power"] == "on"
    request_action(driven, "restart", user)
    db.session.commit()
    assert sim.state()["received"][-2:] == ["power_cycle", "power_status"]

    request_action(manual, "restart", user)
    db.session.commit()
    task = db.session.scalar(select(DatacenterTask).where(DatacenterTask.service_id == manual.id))
    assert task.kind == "power" and task.params == {"action": "cycle"} and task.server_id == hand.id
    assert task.requested_by_id == user.id
    dctasks.finish(task, staff, ok=True)
    db.session.commit()
    msgs = [e["message"] for e in lifecycle.service_history(_fresh(db, manual))]
    assert any("queued for datacenter handling" in m for m in msgs)
    assert any("restarted by our datacenter team" in m for m in msgs)


def test_wrong_bmc_password_fails_the_operation_with_an_admin_reason(db, sim, make_user, ded_package, add_server,
                                                                     make_service):
    pkg = ded_package()
    user = make_user()
    svc = make_service(user, pkg)
    server = add_server(sim, state="in_use", service_id=svc.id)
    server.set_bmc_password("wrong-password")
    db.session.commit()
    op = request_action(svc, "stop", user)
    db.session.commit()
    op = db.session.get(jobs.Operation, op.id)
    db.session.refresh(op)
    assert op.state == "failed" and "wrong user name or password" in op.error
    assert "wrong-password" not in op.error and "127.0.0.1" not in (op.customer_error or "")


def test_reinstall_automated_and_by_hand(db, sim, make_user, ded_package, add_server, make_service, ipmi_image):
    pkg = ded_package()
    user, staff = make_user(), make_user(role="admin")
    a = make_service(user, pkg, image_id=ipmi_image.id)
    b = make_service(user, pkg, image_id=ipmi_image.id)
    add_server(sim, state="in_use", service_id=a.id, auto_install=True)
    add_server(state="in_use", service_id=b.id)
    sim.control({})
    mark = len(sim.state()["received"])
    request_action(a, "reinstall", user)
    db.session.commit()
    got = _received_since(sim, mark)
    assert "boot_device:pxe" in got and ("power_cycle" in got or "power_on" in got)
    assert _fresh(db, a).state == "active"
    assert db.session.scalar(select(InstallRequest).where(InstallRequest.service_id == a.id)) is not None

    request_action(b, "reinstall", user)
    db.session.commit()
    assert _fresh(db, b).state == "reinstalling"
    task = db.session.scalar(select(DatacenterTask).where(DatacenterTask.service_id == b.id))
    assert task.kind == "install_os" and task.params["reinstall"] is True
    dctasks.finish(task, staff, ok=True)
    db.session.commit()
    assert _fresh(db, b).state == "active"


def test_clock_driven_suspend_recover_remove_on_the_simulator(db, app, clock, sim, make_user, ded_package,
                                                              add_server, ipmi_image):
    pkg = ded_package()
    server = add_server(sim, auto_install=True)
    user, staff = make_user(balance_cents=9900), make_user(role="admin")
    sim.control({})
    svc = _order(db, user, pkg, ipmi_image)
    assert svc.state == "active" and sim.state()["power"] == "on"
    assert ledger.balance_cents(user.id) == 0

    # renewal date, empty wallet: suspended, and the server is powered off at the BMC
    clock.set(svc.renews_at)
    assert renewals.renewal_sweep()["suspended"] == 1
    jobs.run_pending()
    svc = _fresh(db, svc)
    assert svc.state == "suspended" and sim.state()["power"] == "off"
    assert sim.state()["received"][-2:] == ["power_off", "power_status"]

    # a top-up inside the retention window renews it, and the server is powered on again
    clock.advance(days=1)
    ledger.credit(user.id, 9900, kind="topup", key="topup-1", description="Top-up")
    db.session.commit()
    jobs.run_pending()
    svc = _fresh(db, svc)
    assert svc.state == "active" and sim.state()["power"] == "on"
    assert ledger.balance_cents(user.id) == 0 == ledger.ledger_sum_cents(user.id)

    # next period unpaid: suspended again; after the retention window it is removed
    clock.set(svc.renews_at)
    renewals.renewal_sweep()
    jobs.run_pending()
    assert _fresh(db, svc).state == "suspended" and sim.state()["power"] == "off"
    clock.advance(days=app.config["HOSTBAY_RETENTION_DAYS"] + 1)
    assert renewals.retention_sweep() == 1
    jobs.run_pending()
    svc = _fresh(db, svc)
    assert svc.state == "terminated"
    server = _fresh(db, server)
    assert server.state == "wiping" and sim.state()["power"] == "off"
    [wipe] = db.session.scalars(select(DatacenterTask).where(DatacenterTask.kind == "wipe")).all()
    assert wipe.server_id == server.id and wipe.state == "open"
    assert inventory.stock(pkg) == 0, "a server being wiped is not for sale"

    dctasks.finish(wipe, staff, ok=True, notes="3-pass wipe")
    db.session.commit()
    server = _fresh(db, server)
    assert server.state == "available" and server.service_id is None
    assert inventory.stock(pkg) == 1

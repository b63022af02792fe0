"""The crawler on a customer with dedicated servers: no page shows a BMC address, port or user, a rack or rack
position, an inventory server's name or id, a datacenter task's notes or id, or a driver's raw error."""

import re
from urllib.parse import urlsplit

from hostbay.core import dctasks, jobs
from hostbay.core.db import db as _db
from hostbay.core.inventory import HardwareServer
from hostbay.testing.pytest_plugin import login

from test_customer_pages import crawl  # noqa: E402 (rootdir-relative test module)

SECRETS = ["10.77.66.55", "bmc-user-q7", "srv-secret-a1", "RACK-Q9", "U-42X", "NOTE-SECRET-5", "6231"]


def test_dedicated_pages_hide_inventory(client, make_user, make_package, make_service, make_image):
    user, staff = make_user(balance_cents=5000), make_user(role="admin")
    pkg = make_package(kind="dedicated", driver="ipmi", name="Metal", ipv4_count=0,
                       hardware={"min_cores": 8, "location": "fra1"})
    make_image(driver="ipmi", source="debian-12", name="Debian 12")
    active = make_service(user, pkg, hostname="metal1.example.com")
    waiting = make_service(user, pkg, state="provisioning", hostname="metal2.example.com")
    servers = []
    for i, svc in enumerate((active, waiting)):
        s = HardwareServer(name=f"{SECRETS[2]}-{i}", cpu_model="Xeon", cpu_cores=8, ram_gib=64, disk_size_gib=960,
                           location="fra1", rack=SECRETS[3], rack_position=SECRETS[4], bmc_host=SECRETS[0],
                           bmc_port=int(SECRETS[6]), bmc_username=SECRETS[1], service_id=svc.id,
                           state="in_use" if i == 0 else "provisioning")
        s.set_bmc_password("pw-secret")
        _db.session.add(s)
        servers.append(s)
    _db.session.flush()
    active.infra_ref = {"server": servers[0].uuid}
    t1 = dctasks.create("install_os", servers[1], service=waiting, params={"image": "Debian 12"},
                        notes=SECRETS[5])
    t2 = dctasks.create("power", servers[0], service=active, params={"action": "cycle"})
    dctasks.finish(t2, staff, ok=True, notes=SECRETS[5])
    op = jobs.Operation(key="x", kind="service.restart", service_id=active.id, user_id=user.id, state=jobs.FAILED,
                        title="Restart server", error=f"FatalDriverError: BMC {SECRETS[0]}:{SECRETS[6]} refused",
                        customer_error="The operation could not be completed. Our staff have been notified.")
    _db.session.add(op)
    _db.session.commit()
    login(client, user)
    pages = crawl(client, "/panel/", f"/panel/services/{active.uuid}", f"/panel/services/{waiting.uuid}",
                  json=True)
    assert f"/panel/services/{waiting.uuid}" in pages
    # the same dashboard and services list as VPS: both dedicated services, with their state and renewal
    for listing in ("/panel/", "/panel/services/"):
        assert "metal1.example.com" in pages[listing] and "metal2.example.com" in pages[listing]
    assert "Queued for datacenter handling" in pages[f"/panel/services/{waiting.uuid}"]
    forbidden = SECRETS + [s.uuid for s in servers] + [t1.uuid, t2.uuid, "pw-secret"]
    for url, body in pages.items():
        for secret in forbidden:
            assert secret not in body, f"{secret} shown on {url}"
        assert not re.search(r"/panel/(?:[a-z-]+/)*\d+(?:/|$)", urlsplit(url).path), url
    # staff pages are where these live, and a customer cannot open them
    for path in ("/staff/inventory/", f"/staff/inventory/{servers[0].uuid}", "/staff/datacenter/",
                 f"/staff/datacenter/{t1.uuid}"):
        assert client.get(path).status_code == 404
    _db.session.rollback()

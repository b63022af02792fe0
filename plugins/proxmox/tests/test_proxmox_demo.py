"""The demo shows the Proxmox plugin: with the stand-in running, ``hostbay proxmox-demo`` adds a Proxmox node,
package and image, and the demo customer's order onto Proxmox becomes active with live progress."""

import json
import re
import time

import pytest
from click.testing import CliRunner

from hostbay.core.db import db
from hostbay.core.demo import DEMO_CUSTOMER, load_demo
from hostbay.core.services import Service


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread"}


def test_demo_order_onto_proxmox_becomes_active(app, client, standin, tmp_path):
    standin.task_delay = 0.3
    load_demo()
    info = tmp_path / "pve.json"
    info.write_text(json.dumps({"url": standin.url, "token_id": standin.token_id,
                                "token_secret": standin.token_secret, "ca_file": standin.ca_file,
                                "node": "pve1", "template": 9000}))
    for _ in range(2):  # idempotent: every demo start refreshes the node's URL and token
        out = CliRunner().invoke(app.cli, ["proxmox-demo", str(info)], catch_exceptions=False)
        assert out.exit_code == 0 and "demo-pve-1" in out.output
    client.post("/login", data={"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]})
    page = client.get("/panel/order").get_data(as_text=True)
    assert "Cloud S (Proxmox)" in page
    from hostbay.core.catalog import Image, Package

    pkg = db.session.scalar(db.select(Package).filter_by(slug="cloud-s-proxmox"))
    image = db.session.scalar(db.select(Image).filter_by(driver="proxmox"))
    page = client.get(f"/panel/order/{pkg.uuid}").get_data(as_text=True)
    assert image.uuid in page and "Debian 12 (Proxmox)" in page
    form = {"cycle": "monthly", "hostname": "pve1.example.com", "image": image.uuid, "key": "demo-pve-order-1"}
    resp = client.post(f"/panel/order/{pkg.uuid}/confirm", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    db.session.rollback()
    uuid = re.search(r"/panel/services/([0-9a-f-]{36})", resp.headers["Location"]).group(1)
    seen, deadline, data = set(), time.time() + 60, None
    while time.time() < deadline:
        data = client.get(f"/panel/services/{uuid}/progress").json
        op = data["operations"][0]
        seen.add((op["pct"], op["text"]))
        assert op["state"] not in ("failed", "retrying"), op
        if data["state"] == "active":
            break
        db.session.rollback()
        time.sleep(0.1)
    assert data["state"] == "active", data
    assert any(0 < pct < 100 for pct, _ in seen)
    svc = db.session.scalar(db.select(Service).filter_by(uuid=uuid))
    assert standin.vms[svc.infra_ref["vmid"]].status == "running"
    page = client.get(f"/panel/services/{uuid}").get_data(as_text=True)
    assert "192.0.2." in page and "demo-pve-1" not in page and str(svc.infra_ref["vmid"]) not in page

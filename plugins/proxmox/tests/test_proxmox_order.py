"""A paid order through the panel onto a Proxmox node reaches Active with its address in the guest's ipset, and the
web console connects through the real console proxy to the stand-in's ``vncwebsocket``: the proxy authenticates
upstream (API token, VNC ticket and password) and the browser sees only an RFB stream."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from pve_testenv import TEMPLATE, settings_for
from sqlalchemy import select
from websockets.sync.client import connect

from hostbay.core import console, ipam
from hostbay.core.db import db
from hostbay.core.services import Service
from hostbay.plugins.proxmox.driver import IPSET
from hostbay.testing.console import running_proxy
from hostbay.testing.pytest_plugin import login

class _Reader:
    """Reads exact byte counts from a websocket's binary messages, keeping what each message carried."""

    def __init__(self, ws, log: Path | None = None):
        self.ws, self.buf, self.seen, self.log = ws, b"", [], log

    def __call__(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                msg = self.ws.recv(timeout=30)
            except TimeoutError:
                log = self.log.read_text() if self.log and self.log.exists() else ""
                raise AssertionError(f"no console data in 30 s after {self.buf!r}; proxy log:\n{log}") from None
            assert isinstance(msg, bytes)
            self.seen.append(msg)
            self.buf += msg
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def test_panel_order_on_proxmox_reaches_active_and_its_console_opens(
        app, client, standin, make_user, make_package, make_image, make_node, database_url, clock, tmp_path):
    import base64

    from hostbay.core.accounts import add_ssh_key

    node = make_node(name="pve-fra1", driver="proxmox", settings=settings_for(standin, node="pve2", vmid_min=48217,
                                                                              vmid_max=48299))
    ipam.create_pool(name="pve-v4", cidr="203.0.113.0/28", gateway="203.0.113.1", nameservers=["203.0.113.53"],
                     node_ids=[node.id])
    pkg = make_package(slug="pve-s", name="Cloud S", driver="proxmox", vcpus=2, memory_mib=2048, disk_gib=25,
                       port_speed_mbit=200, monthly_cents=700)
    image = make_image(driver="proxmox", name="Debian 12", source=str(TEMPLATE))
    user = make_user(balance_cents=700)
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    key = add_ssh_key(user, "laptop", "ssh-ed25519 " + base64.b64encode(blob).decode() + " me@laptop")
    db.session.commit()

    login(client, user)
    page = client.get(f"/panel/order/{pkg.uuid}")
    token = re.search(rb'name="key" value="([^"]+)"', page.data).group(1).decode()
    form = {"cycle": "monthly", "image": image.uuid, "ssh_keys": [key.uuid], "hostname": "shop.example.test",
            "key": token}
    assert client.post(f"/panel/order/{pkg.uuid}/review", data=form).status_code == 200
    done = client.post(f"/panel/order/{pkg.uuid}/confirm", data=form)  # jobs run at commit (sync mode)
    assert done.status_code == 302
    svc = db.session.scalar(select(Service).where(Service.user_id == user.id))
    db.session.refresh(svc)
    assert svc.state == "active", svc.state
    vm = standin.vms[svc.infra_ref["vmid"]]
    address = [a.address for a in ipam.addresses_for(svc)]
    assert address == ["203.0.113.2"] and set(vm.ipsets[IPSET]) == {"203.0.113.2"}
    assert vm.firewall == {"enable": 1, "ipfilter": 1} and vm.node == "pve2" and vm.status == "running"
    assert "rate=25" in vm.config["net0"] and vm.config["ipconfig0"] == "ip=203.0.113.2/28,gw=203.0.113.1"
    detail = client.get(f"/panel/services/{svc.uuid}")
    assert detail.status_code == 200
    for secret in (str(svc.infra_ref["vmid"]), "pve2", standin.token_secret, "local-lvm"):
        assert secret.encode() not in detail.data

    # The console: a single-use token for the browser; the proxy opens the stand-in's vncwebsocket itself.
    page = client.post(f"/panel/services/{svc.uuid}/console")
    assert page.status_code == 200
    for secret in (standin.token_secret, str(standin.port), "PVEVNC", "vncticket"):
        assert secret.encode() not in page.data
    ws_token = console.issue(user, svc)
    db.session.commit()
    db.session.remove()
    with running_proxy(database_url, clock.now(), tmp_path, plugins="proxmox,fake") as proxy:
        with connect(f"{proxy['url']}?token={ws_token}", origin="http://127.0.0.1:5000", open_timeout=15) as ws:
            rx = _Reader(ws, proxy["log"])
            assert rx(12) == b"RFB 003.008\n"
            ws.send(b"RFB 003.008\n")
            assert rx(2) == bytes([1, 1])  # the browser is offered "None": the proxy did the VNC authentication
            ws.send(bytes([1]))
            assert rx(4) == b"\0\0\0\0"
            ws.send(bytes([1]))  # ClientInit
            init = rx(24)
            width, height = struct.unpack(">HH", init[:4])
            name = rx(struct.unpack(">I", init[20:24])[0])
            assert (width, height) == (640, 480) and name == f"VM {vm.vmid}".encode()
            ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, 8, 8))  # FramebufferUpdateRequest
            update = rx(4 + 12 + 8 * 8 * 4)
            assert update[0] == 0 and struct.unpack(">H", update[2:4])[0] == 1
            seen = rx.seen
        stream = b"".join(seen)
        log = proxy["log"].read_text()
    session = standin.vnc_sessions[-1]
    assert session["authenticated"] and session["client_init"] and session["vmid"] == vm.vmid
    ticket, info = next(iter(standin.vnc_tickets.items()))
    assert info["used"]  # the ticket was spent by the proxy's upstream connection
    for secret in (ticket, info["password"], standin.token_secret):
        assert secret.encode() not in stream and secret not in log
    assert ws_token not in log


def test_deleting_an_iso_removes_its_copy_from_the_iso_storage(app, standin, make_user, make_node, tmp_path):
    from hostbay.core import iso as iso_mod
    from hostbay.core.drivers import ServerSpec
    from hostbay.plugins.proxmox import ProxmoxDriver

    make_node(name="pve-a", driver="proxmox", settings=settings_for(standin))
    make_node(name="pve-a-twin", driver="proxmox", settings=settings_for(standin))  # same node and storage
    user = make_user()
    data = b"\0" * 32768 + b"\x01CD001\x01" + b"\0" * 8192
    image = iso_mod.upload_bytes(user, data, "installer.iso")
    db.session.commit()
    drv = ProxmoxDriver(settings_for(standin))
    ref = drv.create(ServerSpec(uuid="6f1c0c9e-0000-4000-8000-000000000001", hostname="iso.example.test", vcpus=1,
                                memory_mib=512, disk_gib=2, image={"name": "t", "source": str(TEMPLATE)},
                                node={}), lambda p, t: None)
    drv.mount_iso(ref, str(image.path))
    drv.eject_iso(ref)
    volid = f"local:iso/hostbay-{image.path.name}"
    assert volid in standin.storages[("pve1", "local")]["volumes"]
    iso_mod.delete_iso(user, image)
    db.session.commit()  # the clean-up job runs after the commit (sync jobs in tests)
    assert volid not in standin.storages[("pve1", "local")]["volumes"]
    from hostbay.core import jobs

    (op,) = db.session.scalars(select(jobs.Operation).where(jobs.Operation.kind == "proxmox.remove_iso")).all()
    assert op.state == "succeeded" and op.result == {"removed": 1}


def test_placement_chooses_the_proxmox_node_with_room_in_one_cluster(
        app, standin, make_user, make_package, make_image, make_node):
    """Two hostbay nodes on one Proxmox cluster (one API URL, nodes pve1 and pve2): placement orders candidates by
    free memory, so pve1 would come first, but its CPUs are all reserved; the order goes to pve2, is cloned there
    from pve1's template (``target``), and reaches Active. Once pve1 has room again the next order lands on it.
    Both VMIDs come from the cluster's one scope."""
    from hostbay.core import billing, numbering
    from hostbay.core.accounts import SSHKey, add_ssh_key
    from hostbay.core.catalog import Node
    from hostbay.plugins.proxmox import ProxmoxDriver
    from hostbay.testing.conformance import TEST_KEY

    shared = dict(vmid_min=48300, vmid_max=48399)
    first = make_node(name="pve-fra1-a", driver="proxmox", settings=settings_for(standin, node="pve1", **shared),
                      vcpus=8, memory_mib=65536, used_vcpus=8)  # most free memory, but no free CPU
    second = make_node(name="pve-fra1-b", driver="proxmox", settings=settings_for(standin, node="pve2", **shared),
                       vcpus=8, memory_mib=32768)
    ipam.create_pool(name="pve-v4", cidr="203.0.113.16/28", gateway="203.0.113.17", nameservers=["203.0.113.53"],
                     node_ids=[first.id, second.id])
    pkg = make_package(slug="pve-m", name="Cloud M", driver="proxmox", vcpus=2, memory_mib=2048, disk_gib=4,
                       monthly_cents=900)
    image = make_image(driver="proxmox", name="Debian 12", source=str(TEMPLATE))
    user = make_user(balance_cents=1800)
    add_ssh_key(user, "laptop", TEST_KEY)
    db.session.commit()
    key = db.session.scalar(select(SSHKey).where(SSHKey.user_id == user.id))

    def order(i):
        svc = billing.place_order(user, pkg, "monthly", f"app{i}.example.test", image=image, ssh_key_ids=[key.id],
                                  key=f"pve-cluster-order-{i}")
        db.session.commit()  # the provisioning job runs after the commit (sync jobs in tests)
        db.session.expire_all()
        return db.session.get(Service, svc.id)

    svc = order(1)
    assert svc.state == "active", svc.state
    assert svc.node_id == second.id and svc.infra_ref["node"] == "pve2"
    vmid = svc.infra_ref["vmid"]
    vm = standin.vms[vmid]
    assert vm.node == "pve2" and vm.status == "running"
    (clone,) = [r for r in standin.requests if r["template"] == "/nodes/{node}/qemu/{vmid}/clone"]
    assert clone["path"] == f"/nodes/pve1/qemu/{TEMPLATE}/clone"  # the template lives on pve1
    assert clone["params"]["target"] == "pve2" and clone["params"]["newid"] == str(vmid)
    assert db.session.get(Node, second.id).used_vcpus == 2 and db.session.get(Node, first.id).used_vcpus == 8

    db.session.get(Node, first.id).used_vcpus = 0  # pve1 has room again: it has the most free memory
    db.session.commit()
    other = order(2)
    assert other.state == "active" and other.node_id == first.id and other.infra_ref["node"] == "pve1"
    assert standin.vms[other.infra_ref["vmid"]].node == "pve1"
    clones = [r for r in standin.requests if r["template"] == "/nodes/{node}/qemu/{vmid}/clone"]
    assert len(clones) == 2 and "target" not in clones[1]["params"]  # same node as the template

    scope = ProxmoxDriver(first.settings).scope
    assert scope == ProxmoxDriver(second.settings).scope
    assert numbering.lookup(scope, svc.uuid) == vmid and numbering.lookup(scope, other.uuid) == other.infra_ref["vmid"]
    assert vmid != other.infra_ref["vmid"] and {vmid, other.infra_ref["vmid"]} <= set(range(48300, 48400))
    assert set(numbering.held_in(scope)) == {vmid, other.infra_ref["vmid"]}

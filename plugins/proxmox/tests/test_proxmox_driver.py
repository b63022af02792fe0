"""The Proxmox driver against the HTTPS API stand-in: the conformance suites, failures Proxmox really produces
(failed tasks, locks, slow tasks and calls, lost connections), validation, ISOs, clusters, and the check that
replays every test's stand-in requests against the official schema (conftest)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from pve_testenv import TEMPLATE, check_against_the_schema, deliberate_requests, settings_for

from hostbay.core import numbering
from hostbay.core.drivers import Address, PowerState
from hostbay.core.errors import FatalDriverError, SettingsError, TransientDriverError
from hostbay.plugins.proxmox import ProxmoxDriver, ProxmoxNetworkFilter
from hostbay.plugins.proxmox.driver import IPSET, MARKER
from hostbay.plugins.proxmox.standin import VM, ProxmoxStandin, _size_gib
from hostbay.testing.conformance import TEST_KEY, NetworkFilterConformance, VirtDriverConformance

SECOND_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+/x+y== second key"


def _noop(_p, _t):
    pass


def _spec(**kw):
    kw.setdefault("image", {"name": "Debian 12", "source": str(TEMPLATE)})
    return VirtDriverConformance.make_spec(VirtDriverConformance(), **kw)


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _guests(standin):
    return [v for v in standin.vms.values() if not v.template]


class TestProxmoxConformance(VirtDriverConformance):
    @pytest.fixture(autouse=True)
    def _env(self, app, standin, pve_settings):
        self.settings = pve_settings
        self.standin = standin

    def make_driver(self):
        return ProxmoxDriver(self.settings)

    def make_spec(self, **overrides):
        overrides.setdefault("image", {"name": "Debian 12", "source": str(TEMPLATE)})
        return super().make_spec(**overrides)

    def make_unreachable_driver(self):
        return ProxmoxDriver(settings_for(self.standin, api_url=f"https://127.0.0.1:{_closed_port()}", timeout=2))

    def iso_path(self, tmp_path):
        path = super().iso_path(tmp_path)
        self._isos = {**getattr(self, "_isos", {}), hashlib.sha256(Path(path).read_bytes()).hexdigest(): path}
        return path

    def observed(self, drv, ref):
        """The guest as the stand-in cluster holds it (its config and its storages), not as the driver says."""
        vm = self.standin.vms[ref["vmid"]]
        cfg = vm.config
        disk = cfg["scsi0"]
        volid = disk.split(",")[0]
        volume = self.standin.storages[(vm.node, volid.split(":", 1)[0])]["volumes"][volid]
        iso = None
        cdrom = (cfg.get("ide2") or "").split(",")[0]
        if cdrom not in ("", "none", "cdrom"):
            store = self.standin.storages[(vm.node, cdrom.split(":", 1)[0])]["volumes"][cdrom]
            iso = getattr(self, "_isos", {}).get(store.get("sha256"), cdrom)
        return {"vcpus": int(cfg["cores"]), "memory_mib": int(cfg["memory"]), "disk_gib": _size_gib(disk),
                "system_disk": (volid, volume["serial"]), "iso": iso, "node": vm.node}

    def make_move_target(self):
        return settings_for(self.standin, node="pve2")

    def test_delete_purges_disks(self):
        drv = self.make_driver()
        ref = drv.create(self.make_spec(), _noop)
        volumes = self.standin.storages[("pve1", "local-lvm")]["volumes"]
        assert f"local-lvm:vm-{ref['vmid']}-disk-0" in volumes
        drv.delete(ref)
        assert ref["vmid"] not in self.standin.vms
        assert not [v for v in volumes if f"vm-{ref['vmid']}-" in v]
        assert numbering.lookup(drv.scope, ref["service"]) is None  # the VMID is given back


class TestProxmoxFilterConformance(NetworkFilterConformance):
    @pytest.fixture(autouse=True)
    def _env(self, app, standin, pve_settings):
        self.settings = pve_settings
        self.standin = standin

    def make_driver(self):
        return ProxmoxNetworkFilter(self.settings)

    def make_unreachable_driver(self):
        return None  # it acts through the Proxmox driver's connection and has none of its own

    def make_server(self):
        virt = ProxmoxDriver(self.settings)
        return virt, virt.create(_spec(), _noop)

    def applied_addresses(self, virt, ref):
        vm = self.standin.vms[ref["vmid"]]
        assert vm.firewall.get("enable") == 1 and vm.firewall.get("ipfilter") == 1
        assert "firewall=1" in vm.config["net0"].split(",")
        return set(vm.ipsets[IPSET])


# ------------------------------------------------------------------------------------------------------------
# provisioning details
# ------------------------------------------------------------------------------------------------------------

def test_create_configures_the_guest(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec(vcpus=2, memory_mib=2048, disk_gib=20, hostname="web1.example.test",
                 ssh_keys=(TEST_KEY, SECOND_KEY), port_speed_mbit=1000, nameservers=("192.0.2.53", "192.0.2.54"),
                 addresses=(Address("192.0.2.10", 24, "192.0.2.1"), Address("2001:db8::10", 64, "2001:db8::1")))
    steps = []
    ref = drv.create(spec, lambda p, t: steps.append((p, t)))
    vm = standin.vms[ref["vmid"]]
    cfg = vm.config
    assert 100 <= ref["vmid"] <= 199 and vm.status == "running" and vm.node == "pve1"
    assert (cfg["cores"], cfg["memory"], cfg["name"], cfg["ciuser"]) == ("2", "2048", "web1.example.test", "root")
    assert cfg["sshkeys"] == quote(f"{TEST_KEY}\n{SECOND_KEY}", safe="")
    assert "%20" in cfg["sshkeys"] and "+" not in cfg["sshkeys"] and "%2B" in cfg["sshkeys"]
    assert cfg["ipconfig0"] == "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64,gw6=2001:db8::1"
    assert cfg["nameserver"] == "192.0.2.53 192.0.2.54"
    net = cfg["net0"].split(",")
    assert net[0].startswith("virtio=") and {"bridge=vmbr0", "firewall=1", "rate=125"} <= set(net)
    assert cfg["scsi0"].endswith("size=20G") and cfg["scsi0"].startswith("local-lvm:vm-")
    assert f"{MARKER}{spec.uuid}" in cfg["description"]
    assert set(vm.ipsets[IPSET]) == {"192.0.2.10", "2001:db8::10"}
    assert vm.firewall == {"enable": 1, "ipfilter": 1}
    assert steps[-1] == (100, "Server is running")
    for _pct, text in steps:  # customer-safe: no VMID, node, storage or template id
        assert str(ref["vmid"]) not in text and "pve1" not in text and "local-lvm" not in text
        assert str(TEMPLATE) not in text


def test_linked_clone_when_full_clone_is_off(app, standin):
    drv = ProxmoxDriver(settings_for(standin, full_clone=False))
    drv.create(_spec(), _noop)
    clone = next(r for r in standin.requests if r["path"].endswith("/clone"))
    assert clone["params"]["full"] == "0" and "storage" not in clone["params"]
    full = ProxmoxDriver(settings_for(standin))
    full.create(_spec(), _noop)
    clone = [r for r in standin.requests if r["path"].endswith("/clone")][-1]
    assert clone["params"]["full"] == "1" and clone["params"]["storage"] == "local-lvm"


def test_foreign_vmid_is_skipped(app, standin, pve_settings):
    standin.vms[100] = VM(100, "pve1", {"name": "someone-else", "scsi0": "local-lvm:vm-100-disk-0,size=1G"})
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    assert ref["vmid"] == 101
    assert standin.vms[100].config["name"] == "someone-else"
    assert numbering.held_in(drv.scope)[100].startswith(numbering.FOREIGN)
    ref2 = drv.create(_spec(), _noop)
    assert ref2["vmid"] == 102


def test_already_exists_moves_to_the_next_vmid(app, standin, pve_settings):
    standin.vms[100] = VM(100, "pve2", {"name": "racing-guest"})
    standin.hidden.add(100)  # created elsewhere after hostbay looked at /cluster/resources
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    assert ref["vmid"] == 101 and standin.vms[100].config == {"name": "racing-guest"}
    clones = [r for r in standin.requests if r["path"].endswith("/clone")]
    assert [c["params"]["newid"] for c in clones] == ["100", "101"] and clones[0]["status"] == 500
    assert numbering.held_in(drv.scope)[100] == f"{numbering.FOREIGN}100"


def test_failed_task_raises_and_a_retry_makes_one_vm(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec()
    standin.fail_task("qmclone", "clone failed: storage 'local-lvm' full")
    with pytest.raises(FatalDriverError) as err:
        drv.create(spec, _noop)
    assert "storage 'local-lvm' full" in str(err.value)
    assert _guests(standin) == []
    standin.fail_task("qmresize", "storage 'local-lvm' full")
    with pytest.raises(FatalDriverError):
        drv.create(replace(spec, disk_gib=5), _noop)
    ref = drv.create(replace(spec, disk_gib=5), _noop)
    assert len(_guests(standin)) == 1 and standin.vms[ref["vmid"]].config["scsi0"].endswith("size=5G")


def test_lock_timeout_is_transient_and_retried(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec()
    standin.fail_task("qmclone", "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout")
    with pytest.raises(TransientDriverError):
        drv.create(spec, _noop)
    ref = drv.create(spec, _noop)
    assert [v.vmid for v in _guests(standin)] == [ref["vmid"]]


def test_locked_vm_is_refused(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    standin.lock_vm(ref["vmid"], "backup")
    with pytest.raises(FatalDriverError) as err:
        drv.stop(ref, timeout=0)
    assert "locked" in str(err.value)
    standin.lock_vm(ref["vmid"], None)
    drv.stop(ref, timeout=0)
    assert drv.status(ref) == PowerState.STOPPED


def test_task_slower_than_its_timeout_is_transient_then_resumed(app, standin):
    drv = ProxmoxDriver(settings_for(standin, task_timeout=1))
    spec = _spec()
    standin.task_delay = 2.5
    with pytest.raises(TransientDriverError) as err:
        drv.create(spec, _noop)
    assert "still running" in str(err.value)
    standin.task_delay = 0.05
    time.sleep(0.8)
    ref = drv.create(spec, _noop)  # the clone is still under way: the retry waits for it, clones nothing new
    assert [v.vmid for v in _guests(standin)] == [ref["vmid"]]
    assert len([r for r in standin.requests if r["path"].endswith("/clone")]) == 1


def test_call_slower_than_the_timeout_is_transient(app, standin):
    drv = ProxmoxDriver(settings_for(standin, timeout=1))
    ref = drv.create(_spec(), _noop)
    standin.stall_next("GET", r"/status/current$", 2.5)
    t0 = time.monotonic()
    with pytest.raises(TransientDriverError):
        drv.status(ref)
    assert time.monotonic() - t0 < 2.4
    assert drv.status(ref) == PowerState.RUNNING


def test_connection_lost_mid_call(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec()
    standin.drop_next("GET", r"/cluster/resources$")  # a read is retried at once
    standin.drop_next("POST", r"/clone$", after=True)  # the clone happened, its answer was lost
    with pytest.raises(TransientDriverError):
        drv.create(spec, _noop)
    ref = drv.create(spec, _noop)
    assert [v.vmid for v in _guests(standin)] == [ref["vmid"]]
    assert [r["status"] for r in standin.requests if r["path"].endswith("/clone")] == ["dropped"]


def test_validate(app, standin, pve_settings):
    ProxmoxDriver(pve_settings).validate()
    with pytest.raises(FatalDriverError) as err:
        ProxmoxDriver({**pve_settings, "token_secret": "wrong"}).validate()
    assert "token" in str(err.value) and "refused" in str(err.value)
    with pytest.raises(FatalDriverError) as err:
        ProxmoxDriver({**pve_settings, "node": "pve9"}).validate()
    assert "node 'pve9' is not in the cluster" in str(err.value)
    with pytest.raises(FatalDriverError) as err:
        ProxmoxDriver({**pve_settings, "storage": "ceph-vm"}).validate()
    assert "storage 'ceph-vm' (storage) does not exist" in str(err.value)
    with pytest.raises(FatalDriverError) as err:
        ProxmoxDriver({**pve_settings, "iso_storage": "local-lvm"}).validate()
    assert "does not hold iso content" in str(err.value)
    with pytest.raises(FatalDriverError) as err:  # the stand-in's certificate is not trusted without ca_bundle
        ProxmoxDriver({**pve_settings, "ca_bundle": None}).validate()
    assert "TLS" in str(err.value)
    ProxmoxDriver({**pve_settings, "ca_bundle": None, "verify_tls": False}).validate()


def test_settings_are_checked():
    base = {"api_url": "https://pve.example.net:8006", "token_id": "hostbay@pve!hosting", "token_secret": "s",
            "node": "pve1", "storage": "local-lvm"}
    assert ProxmoxDriver(base).config["timeout"] == 30
    assert ProxmoxDriver(base).config["iso_storage"] == "local" and ProxmoxDriver(base).config["bridge"] == "vmbr0"
    for bad, key in (({"token_id": "hostbay@pve"}, "token_id"), ({"api_url": "http://pve:8006"}, "api_url"),
                     ({"vmid_min": 500, "vmid_max": 400}, "vmid_max"), ({"ca_bundle": "ca.pem"}, "ca_bundle")):
        with pytest.raises(SettingsError) as err:
            ProxmoxDriver({**base, **bad})
        assert key in err.value.errors


# ------------------------------------------------------------------------------------------------------------
# actions
# ------------------------------------------------------------------------------------------------------------

def test_reinstall_keeps_vmid_mac_keys_and_addresses(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec(addresses=(Address("192.0.2.20", 24, "192.0.2.1"),))
    ref = drv.create(spec, _noop)
    before = dict(standin.vms[ref["vmid"]].config)
    standin.vms[ref["vmid"]].config["scsi0"] += ",customer-data"  # marks the old disk
    new = drv.reinstall(ref, spec, _noop)
    after = standin.vms[new["vmid"]].config
    assert new == ref and drv.status(new) == PowerState.RUNNING
    assert "customer-data" not in after["scsi0"]
    for key in ("net0", "sshkeys", "ipconfig0", "name"):
        assert after[key] == before[key], key
    assert set(standin.vms[ref["vmid"]].ipsets[IPSET]) == {"192.0.2.20"}
    assert len(_guests(standin)) == 1


def test_resize_up_and_rebuild_smaller(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    spec = _spec(disk_gib=10)
    ref = drv.create(spec, _noop)
    mac = standin.vms[ref["vmid"]].config["net0"].split(",")[0]
    drv.resize(ref, replace(spec, vcpus=4, memory_mib=4096, disk_gib=30), _noop)
    cfg = standin.vms[ref["vmid"]].config
    assert (cfg["cores"], cfg["memory"]) == ("4", "4096") and cfg["scsi0"].endswith("size=30G")
    assert cfg["net0"].split(",")[0] == mac and standin.vms[ref["vmid"]].status == "running"
    with pytest.raises(FatalDriverError) as err:
        drv.resize(ref, replace(spec, disk_gib=20), _noop)
    assert err.value.customer_message == "A disk cannot be made smaller this way."
    drv.rebuild(ref, replace(spec, disk_gib=5), _noop)
    cfg = standin.vms[ref["vmid"]].config
    assert cfg["scsi0"].endswith("size=5G") and cfg["net0"].split(",")[0] == mac


def test_shutdown_then_stop(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    standin.fail_task("qmshutdown", "VM quit/powerdown failed - got timeout")
    drv.stop(ref, timeout=1)
    assert drv.status(ref) == PowerState.STOPPED
    kinds = [r["path"].rsplit("/", 1)[1] for r in standin.requests if "/status/" in r["path"]
             and r["method"] == "POST"]
    assert kinds[-2:] == ["shutdown", "stop"]
    shutdown = [r for r in standin.requests if r["path"].endswith("/status/shutdown")][-1]
    assert shutdown["params"]["timeout"] == "1"


def test_iso_upload_mount_eject_remove(app, standin, tmp_path):
    drv = ProxmoxDriver(settings_for(standin, timeout=1))
    ref = drv.create(_spec(), _noop)
    iso = tmp_path / "0123456789abcdef0123456789abcdef.iso"
    iso.write_bytes(b"\0" * 32769 + b"CD001" + b"x" * 4096)
    standin.stall_next("POST", r"/upload$", 2)  # slower than the 1 s call timeout: uploads get their own
    drv.mount_iso(ref, str(iso))
    volid = "local:iso/hostbay-0123456789abcdef0123456789abcdef.iso"
    assert volid in standin.storages[("pve1", "local")]["volumes"]
    cfg = standin.vms[ref["vmid"]].config
    assert cfg["ide2"] == f"{volid},media=cdrom" and cfg["boot"] == "order=ide2;scsi0"
    assert drv.mounted_iso(ref) == volid
    drv.mount_iso(ref, str(iso))  # already on the storage: not uploaded again
    assert len([r for r in standin.requests if r["path"].endswith("/upload")]) == 1
    drv.eject_iso(ref)
    cfg = standin.vms[ref["vmid"]].config
    assert cfg["ide2"] == "none,media=cdrom" and cfg["boot"] == "order=scsi0" and drv.mounted_iso(ref) is None
    assert drv.remove_iso(str(iso)) is True
    assert volid not in standin.storages[("pve1", "local")]["volumes"]
    assert drv.remove_iso(str(iso)) is False


def test_console_target_is_a_websocket_upstream(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    target = drv.console_target(ref)
    assert target.protocol == "websocket" and target.port == standin.port
    assert target.path.startswith(f"/api2/json/nodes/pve1/qemu/{ref['vmid']}/vncwebsocket?port=59")
    assert target.extra["headers"]["Authorization"].startswith("PVEAPIToken=hostbay@pve!hosting=")
    assert target.extra["verify"] == standin.ca_file and target.password
    proxy = next(r for r in standin.requests if r["path"].endswith("/vncproxy"))
    assert proxy["params"]["websocket"] == "1"
    drv.stop(ref, timeout=0)
    with pytest.raises(FatalDriverError) as err:
        drv.console_target(ref)
    assert err.value.customer_message == "The server is not running."


def test_two_nodes_of_one_cluster_share_the_vmid_range(app, standin):
    a = ProxmoxDriver(settings_for(standin, node="pve1"))
    b = ProxmoxDriver(settings_for(standin, node="pve2"))
    assert a.scope == b.scope
    refs = []
    def order(d):
        with app.app_context():
            refs.append(d.create(_spec(), _noop))
    threads = [threading.Thread(target=order, args=(d,)) for d in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refs) == 4 and len({r["vmid"] for r in refs}) == 4
    nodes = sorted(standin.vms[r["vmid"]].node for r in refs)
    assert nodes == ["pve1", "pve1", "pve2", "pve2"]
    b_clone = [r for r in standin.requests if r["path"].endswith("/clone") and r["params"].get("target")]
    assert len(b_clone) == 2 and all(r["params"]["target"] == "pve2" for r in b_clone)


def test_delete_of_a_missing_vm_is_not_an_error(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    drv.delete({"vmid": 150, "node": "pve1", "service": "00000000-0000-0000-0000-000000000000"})


def test_delete_refuses_a_guest_without_the_marker(app, standin, pve_settings):
    standin.vms[120] = VM(120, "pve1", {"name": "not-ours"})
    with pytest.raises(FatalDriverError):
        ProxmoxDriver(pve_settings).delete({"vmid": 120, "node": "pve1", "service": "x"})
    assert 120 in standin.vms


# ------------------------------------------------------------------------------------------------------------
# the stand-in is strict; the driver's requests all follow the schema
# ------------------------------------------------------------------------------------------------------------

def test_standin_is_strict_to_the_schema(standin):
    import requests

    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override the session's CA
    s.verify = standin.ca_file
    s.headers["Authorization"] = f"PVEAPIToken={standin.token_id}={standin.token_secret}"
    base = standin.url + "/api2/json"
    assert s.get(base + "/nodes/pve1/nonsense").status_code == 501
    assert s.delete(base + "/version").status_code == 501
    r = s.post(base + f"/nodes/pve1/qemu/{TEMPLATE}/clone", data={"newid": 150, "fast": 1})
    assert r.status_code == 400 and r.json()["data"] is None and set(r.json()["errors"]) == {"fast"}
    r = s.post(base + f"/nodes/pve1/qemu/{TEMPLATE}/clone", data={"name": "x"})
    assert r.status_code == 400 and set(r.json()["errors"]) == {"newid"}
    r = s.post(base + f"/nodes/pve1/qemu/{TEMPLATE}/clone", data={"newid": "abc"})
    assert r.status_code == 400 and "integer" in r.json()["errors"]["newid"]
    r = s.put(base + f"/nodes/pve1/qemu/{TEMPLATE}/config", data={"net0": "virtio,bridge=vmbr0", "netz0": "x"})
    assert r.status_code == 400 and set(r.json()["errors"]) == {"netz0"}
    r = s.put(base + f"/nodes/pve1/qemu/{TEMPLATE}/config", data={"sshkeys": "ssh-ed25519 AAAA+x"})
    assert r.status_code == 400  # not percent-encoded
    assert requests.get(base + "/version", verify=standin.ca_file).status_code == 401
    bad = requests.get(base + "/version", verify=standin.ca_file,
                       headers={"Authorization": f"PVEAPIToken={standin.token_id}=wrong"})
    assert bad.status_code == 401
    upid = s.post(base + f"/nodes/pve1/qemu/{TEMPLATE}/clone", data={"newid": 150}).json()["data"]
    assert upid.startswith("UPID:pve1:") and ":qmclone:150:" in upid
    assert s.get(base + f"/nodes/pve1/tasks/{upid}/status").json()["data"]["status"] == "running"
    time.sleep(0.2)
    done = s.get(base + f"/nodes/pve1/tasks/{upid}/status").json()["data"]
    assert done["status"] == "stopped" and done["exitstatus"] == "OK"
    standin.requests.clear()  # made by hand to be refused: keep them out of the replay at the end of this test


def test_the_replay_checks_this_tests_requests_and_refuses_what_the_schema_does_not_allow(
        app, standin, pve_settings, standins_checked_against_the_schema, pve_requests):
    """The check every test's stand-in requests go through at its end (conftest): here it sees this test's own
    provisioning, with SSH keys, and it refuses requests the schema does not allow."""
    before = len(pve_requests)
    drv = ProxmoxDriver(pve_settings)
    drv.create(_spec(ssh_keys=[TEST_KEY, SECOND_KEY]), _noop)
    assert standins_checked_against_the_schema == [standin]
    ours = list(standin.requests)
    assert len(ours) > 10 and len(pve_requests) == before  # added to the session's log when this test ends
    check_against_the_schema(ours)
    keys = [r["params"]["sshkeys"] for r in ours if "sshkeys" in r["params"]]
    assert keys and all("%20" in k and " " not in k and "+" not in k for k in keys)
    assert all(k == quote(unquote(k), safe="") for k in keys)
    clone = next(r for r in ours if r["template"] == "/nodes/{node}/qemu/{vmid}/clone")
    config = next(r for r in ours if r["template"] == "/nodes/{node}/qemu/{vmid}/config" and "sshkeys" in r["params"])
    wrong = [
        {**clone, "params": {**clone["params"], "fast": "1"}},  # an undeclared parameter
        {**clone, "params": {k: v for k, v in clone["params"].items() if k != "newid"}},  # a required one missing
        {**clone, "method": "PUT"},  # a method the path does not have
        {**clone, "template": "/nodes/{node}/qemu/{vmid}/config"},  # the path is not that template
        {**clone, "status": 400},  # refused as malformed
        {**config, "params": {**config["params"], "sshkeys": config["params"]["sshkeys"].replace("%20", "+")}},
    ]
    for bad in wrong:
        with pytest.raises(AssertionError):
            check_against_the_schema([bad])


# --- move (qm migrate) -----------------------------------------------------------------------------------------

def test_move_migrates_a_running_guest_live_and_its_disk_follows(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    vmid = ref["vmid"]
    before = dict(standin.storages[("pve1", "local-lvm")]["volumes"][f"local-lvm:vm-{vmid}-disk-0"])
    steps = []
    new_ref = drv.move(ref, _spec(), settings_for(standin, node="pve2"), lambda p, t: steps.append(t))
    assert new_ref == {**ref, "node": "pve2"}
    vm = standin.vms[vmid]
    assert vm.node == "pve2" and vm.status == "running" and "lock" not in vm.config
    assert standin.storages[("pve2", "local-lvm")]["volumes"][f"local-lvm:vm-{vmid}-disk-0"] == before
    assert f"local-lvm:vm-{vmid}-disk-0" not in standin.storages[("pve1", "local-lvm")]["volumes"]
    (call,) = [r for r in standin.requests if r["template"] == "/nodes/{node}/qemu/{vmid}/migrate"]
    assert call["method"] == "POST" and call["path"] == f"/nodes/pve1/qemu/{vmid}/migrate"
    assert call["params"] == {"target": "pve2", "online": "1", "with-local-disks": "1"}
    assert ProxmoxDriver(settings_for(standin, node="pve2")).status(new_ref) == PowerState.RUNNING
    assert drv.status(ref) == PowerState.MISSING  # not on pve1 any more
    assert "Moving the server to its new host" in steps
    # a retry after the task finished migrates nothing again
    assert drv.move(ref, _spec(), settings_for(standin, node="pve2"), _noop) == new_ref
    assert len([r for r in standin.requests if r["template"].endswith("/migrate")]) == 1
    ProxmoxDriver(settings_for(standin, node="pve2")).delete(new_ref)


def test_move_of_a_stopped_guest_is_offline_and_maps_the_storage(app, tmp_path):
    with ProxmoxStandin(nodes=("pve1", "pve2"), task_delay=0.05, workdir=tmp_path / "pve",
                        storages=({"name": "local", "content": "iso,vztmpl,backup"},
                                  {"name": "local-lvm", "content": "images,rootdir"},
                                  {"name": "fast", "content": "images"}),
                        templates={TEMPLATE: {"node": "pve1", "disk_gib": 1}}) as standin:
        drv = ProxmoxDriver(settings_for(standin))
        ref = drv.create(_spec(), _noop)
        drv.stop(ref, timeout=0)
        new_ref = drv.move(ref, _spec(), settings_for(standin, node="pve2", storage="fast"), _noop)
        vm = standin.vms[ref["vmid"]]
        assert vm.node == "pve2" and vm.config["scsi0"].startswith(f"fast:vm-{ref['vmid']}-disk-0")
        (call,) = [r for r in standin.requests if r["template"].endswith("/migrate")]
        assert call["params"] == {"target": "pve2", "targetstorage": "fast"}  # offline: no online flag
        assert vm.status == "running"  # the move leaves it running on the target
        assert new_ref["node"] == "pve2"


def test_the_standin_migrate_follows_the_schema(app, standin, pve_settings):
    """What Proxmox refuses, the stand-in refuses: no target (parameter check), a running guest without online,
    a live migration of local disks without with-local-disks, the local node as target."""
    from hostbay.plugins.proxmox.client import PveError

    drv = ProxmoxDriver(pve_settings)
    ref = drv.create(_spec(), _noop)
    path = f"nodes/pve1/qemu/{ref['vmid']}/migrate"
    with deliberate_requests(standin):
        with pytest.raises(PveError) as err:
            drv.pve.post(path)
        assert err.value.status == 400 and "target" in str(err.value)
        for params, message in (({"target": "pve2"}, "without --online"),
                                ({"target": "pve2", "online": 1}, "without with-local-disks"),
                                ({"target": "pve1", "online": 1, "with-local-disks": 1}, "target is local node"),
                                ({"target": "pve2", "online": 1, "with-local-disks": 1, "bogus": 1}, "bogus")):
            with pytest.raises(PveError) as err:
                drv.pve.post(path, **params)
            assert message in str(err.value), (params, str(err.value))
    assert standin.vms[ref["vmid"]].node == "pve1"
    drv.delete(ref)


def test_move_refuses_another_cluster(app, standin, pve_settings):
    drv = ProxmoxDriver(pve_settings)
    with pytest.raises(FatalDriverError, match="another Proxmox cluster"):
        drv.move({"vmid": 1, "node": "pve1"}, _spec(), settings_for(standin, api_url="https://127.0.0.2:8006"),
                 _noop)

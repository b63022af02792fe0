"""The KVM driver against a real libvirtd with QEMU: the shared conformance suites plus read-backs from libvirt
of what matters (running domain, disk size, seed contents, nwfilter binding, bandwidth, CD-ROM, cleanup)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import replace

import pytest

from hostbay.core.drivers import Address, PowerState
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.testing import NetworkFilterConformance, VirtDriverConformance
from hostbay.testing.conformance import TEST_KEY

from kvm_testhost import PREFIX, TEMPLATE

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]
GIB = 1024 ** 3
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyNotSelectedForThisServerxxxxxxxxxx other"


def _noop(_p, _t):
    pass


def _spec(**overrides):
    spec = VirtDriverConformance().make_spec(image={"name": "blank", "source": TEMPLATE}, memory_mib=96)
    return replace(spec, **overrides)


def _driver(kvm_host, **settings):
    from hostbay.plugins.kvm import KvmDriver

    return KvmDriver(kvm_host.settings(**settings))


def _xml(dom, inactive=False):
    import libvirt

    from hostbay.plugins.kvm import xml as X

    return X.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))


def _virtual_size(path: str) -> int:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, check=True,
                         text=True).stdout
    return json.loads(out)["virtual-size"]


def _iso_file(path: str, name: str) -> str:
    """Read one file of an ISO image with isoinfo (Rock Ridge names), independently of the driver's writer."""
    if shutil.which("isoinfo"):
        return subprocess.run(["isoinfo", "-R", "-i", path, "-x", f"/{name}"], capture_output=True, check=True,
                              text=True).stdout
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(path)
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
    iso.close()
    return out.getvalue().decode()


def _iso_label(path: str) -> str:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        return iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()


@pytest.fixture
def made(kvm_host):
    """Create servers with ``made(spec, **settings)``; every one is deleted afterwards."""
    created = []

    def make(spec=None, **settings):
        drv = _driver(kvm_host, **settings)
        spec = spec or _spec()
        created.append((drv, {"domain": drv.domain_name(spec.uuid)}))
        ref = drv.create(spec, _noop)
        return drv, spec, ref

    yield make
    for drv, ref in created:
        drv.delete(ref)


# ---------------------------------------------------------------------------------------------------------------
# shared contracts
# ---------------------------------------------------------------------------------------------------------------

class TestKvmConformance(VirtDriverConformance):
    @pytest.fixture(autouse=True)
    def _host(self, kvm_host):
        self.host = kvm_host

    def make_driver(self):
        from hostbay.plugins.kvm import KvmDriver

        return KvmDriver(self.host.settings())

    def make_spec(self, **overrides):
        overrides.setdefault("image", {"name": "blank", "source": TEMPLATE})
        overrides.setdefault("memory_mib", 96)
        return super().make_spec(**overrides)

    def make_unreachable_driver(self):
        from hostbay.plugins.kvm import KvmDriver

        return KvmDriver(self.host.settings(uri="qemu+tcp://127.0.0.1:1/system"))  # nothing listens there

    def iso_path(self, tmp_path):
        path = self.host.isos / "conformance.iso"
        path.write_bytes(b"\0" * 32768)
        return str(path)

    def observed(self, drv, ref):
        """Read the domain and its system disk from libvirt and qemu-img, not through the driver."""
        from hostbay.plugins.kvm import xml as X

        conn = self.host.conn()
        dom = conn.lookupByName(ref["domain"])
        root = _xml(dom, inactive=True)
        disk = X.disk_source(root, X.DISK_TARGET)
        vol_xml = conn.storageVolLookupByPath(disk).XMLDesc(0)
        ctime = X.parse(vol_xml).findtext("./target/timestamps/ctime")
        return {"vcpus": int(root.findtext("vcpu")), "memory_mib": int(root.findtext("memory")) // 1024
                if root.find("memory").get("unit", "KiB") == "KiB" else int(root.findtext("memory")),
                "disk_gib": _virtual_size(disk) // GIB, "system_disk": (disk, ctime),
                "iso": X.disk_source(_xml(dom), X.ISO_TARGET), "node": os.path.dirname(disk)}

    def make_move_target(self):
        """A second node on the same libvirtd: its own storage directory and domain name prefix."""
        return self.host.settings(storage=str(self.host.disks.parent / "disks-b"), name_prefix=f"{PREFIX}b-")


class TestKvmNetworkFilterConformance(NetworkFilterConformance):
    """On libvirt's nwfilter (read back from libvirt's binding of the port)."""

    antispoof = "nwfilter"

    @pytest.fixture(autouse=True)
    def _host(self, kvm_host):
        self.host = kvm_host
        self.servers = []
        yield
        for virt, ref in self.servers:
            virt.delete(ref)

    def make_driver(self):
        from hostbay.plugins.kvm import KvmNetworkFilter

        return KvmNetworkFilter({})

    def make_unreachable_driver(self):
        return None  # the filter reaches its host through the virtualization driver it is given

    def make_server(self):
        virt = _driver(self.host, antispoof=self.antispoof)
        spec = _spec()
        self.servers.append((virt, {"domain": virt.domain_name(spec.uuid)}))
        return virt, virt.create(spec, _noop)

    def applied_addresses(self, virt, ref):
        from hostbay.plugins.kvm import nft as N
        from hostbay.plugins.kvm.netfilter import binding_addresses

        dom = virt.conn.lookupByName(ref["domain"])
        port = _xml(dom).find("./devices/interface/target").get("dev")
        if self.antispoof == "nftables":
            assert N.is_port(port), port
            found = N.Nft().port_addresses(port)
        else:
            found = binding_addresses(virt.conn, port)
        assert found is not None, f"no {self.antispoof} rules for {port}"
        return found


@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed (Debian package nftables)")
class TestKvmNftNetworkFilterConformance(TestKvmNetworkFilterConformance):
    """On hostbay's nftables port (read back from the kernel's ruleset with ``nft -j``)."""

    antispoof = "nftables"


# ---------------------------------------------------------------------------------------------------------------
# read-backs
# ---------------------------------------------------------------------------------------------------------------

def test_create_reads_back_from_libvirt(made, kvm_host):
    import libvirt

    from hostbay.plugins.kvm.netfilter import binding_addresses

    spec = _spec(disk_gib=2, ssh_keys=(TEST_KEY,), addresses=(Address("198.51.100.7", 24, "198.51.100.1"),),
                 nameservers=("198.51.100.53",), hostname="web1.example.test")
    drv, spec, ref = made(spec, antispoof="nwfilter")
    dom = drv.conn.lookupByName(ref["domain"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    live = _xml(dom)

    # disk: a qcow2 overlay on the template, as large as the package's disk
    disk = live.find("./devices/disk[@device='disk']")
    path = disk.find("source").get("file")
    assert path == ref["disk"] and os.path.exists(path)
    assert disk.find("target").get("bus") == "virtio"
    assert _virtual_size(path) == 2 * GIB
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True,
                                     check=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(kvm_host.templates / TEMPLATE)

    # shape
    assert int(live.findtext("vcpu")) == 1
    assert int(live.find("memory").text) == 96 * 1024  # KiB

    # seed: label cidata, the selected key and only it, the hostname, the static address
    seed = live.find("./devices/disk[@device='cdrom']/target[@dev='hdc']/..").find("source").get("file")
    assert _iso_label(seed) == "cidata"
    user_data = _iso_file(seed, "user-data")
    assert user_data.startswith("#cloud-config")
    assert TEST_KEY in user_data and OTHER_KEY not in user_data
    assert "web1.example.test" in user_data
    net = _iso_file(seed, "network-config")
    assert "198.51.100.7/24" in net and "198.51.100.1" in net and "198.51.100.53" in net
    assert spec.uuid in _iso_file(seed, "meta-data")

    # anti-spoofing: a binding on the domain's port with the allocated address
    iface = live.find("./devices/interface")
    assert iface.get("type") == "ethernet"
    port = iface.find("target").get("dev")
    assert binding_addresses(drv.conn, port) == {"198.51.100.7"}
    params = {(p.get("name"), p.get("value")) for p in iface.iterfind("filterref/parameter")}
    assert ("CTRL_IP_LEARNING", "none") in params

    # console: VNC on loopback with a websocket port; the raw port speaks RFB
    gfx = live.find("./devices/graphics[@type='vnc']")
    assert gfx.get("listen") == "127.0.0.1" and int(gfx.get("websocket")) > 0
    target = drv.console_target(ref)
    assert target.host == "127.0.0.1" and target.port == int(gfx.get("port")) and target.protocol == "vnc"
    assert target.extra["websocket_port"] == int(gfx.get("websocket"))
    with socket.create_connection((target.host, target.port), timeout=5) as s:
        assert s.recv(12).startswith(b"RFB ")


def test_bandwidth_matches_port_speed(kvm_host):
    """With shaping on, the interface carries <bandwidth> at the port speed (KiB/s). On a kernel without the tc
    modules libvirt needs, starting fails with an admin-readable reason instead of running unshaped."""
    from hostbay.plugins.kvm import xml as X

    drv = _driver(kvm_host, shaping="libvirt")
    spec = _spec(port_speed_mbit=250)
    ref = {"domain": drv.domain_name(spec.uuid)}
    try:
        if kvm_host.can_shape:
            ref = drv.create(spec, _noop)
            root = _xml(drv.conn.lookupByName(ref["domain"]))
        else:
            with pytest.raises(FatalDriverError) as err:
                drv.create(spec, _noop)
            assert "sch_sfq" in str(err.value) and "Port speed enforcement" in str(err.value)
            assert "host" not in err.value.customer_message.lower()
            root = _xml(drv.conn.lookupByName(ref["domain"]), inactive=True)
        bw = root.find("./devices/interface/bandwidth")
        expected = str(250 * 1_000_000 // 8 // 1024)
        assert bw.find("inbound").get("average") == expected == str(X.kib_per_s(250))
        assert bw.find("outbound").get("average") == expected
    finally:
        drv.delete(ref)


def test_failed_start_is_retried_with_current_settings(kvm_host):
    """A create that could not start (here: no shaping support, or forced) is finished by a retry once the node's
    settings are fixed; the retry reuses the defined domain."""
    drv = _driver(kvm_host, network="bridge", bridge="hbtestnobr0")
    spec = _spec()
    ref = {"domain": drv.domain_name(spec.uuid)}
    try:
        with pytest.raises(FatalDriverError) as err:
            drv.create(spec, _noop)  # a bridge that does not exist is a node setting problem: no retry
        assert "hbtestnobr0" in str(err.value)
        assert drv.status(ref) == PowerState.STOPPED
        fixed = _driver(kvm_host, shaping="off")
        dom = fixed.conn.lookupByName(ref["domain"])
        # the admin fixes the bridge by hand; the retry then starts the same domain
        import libvirt

        from hostbay.plugins.kvm import xml as X

        root = _xml(dom, inactive=True)
        iface = root.find("./devices/interface")
        iface.set("type", "ethernet")
        iface.remove(iface.find("source"))
        fixed.conn.defineXML(X.to_string(root))
        assert fixed.create(spec, _noop)["domain"] == ref["domain"]
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert _xml(dom).find("./devices/interface/bandwidth") is None
    finally:
        drv.delete(ref)


def test_shaping_off_records_speed_without_bandwidth(made):
    drv, _spec_, ref = made(_spec(port_speed_mbit=100), shaping="off")
    root = _xml(drv.conn.lookupByName(ref["domain"]))
    assert root.find("./devices/interface/bandwidth") is None
    from hostbay.plugins.kvm import xml as X

    assert root.find(f"./metadata/{{{X.NS}}}server").get("port-speed-mbit") == "100"


def test_ipv6_guest_gets_dualstack_filter(made):
    from hostbay.plugins.kvm import xml as X
    from hostbay.plugins.kvm.netfilter import binding_addresses

    drv, _s, ref = made(_spec(addresses=(Address("192.0.2.44", 24, "192.0.2.1"),
                                         Address("2001:db8:44::10", 64, "2001:db8:44::1"))), antispoof="nwfilter")
    assert drv.conn.nwfilterLookupByName(X.DUALSTACK_FILTER)
    live = _xml(drv.conn.lookupByName(ref["domain"]))
    port = live.find("./devices/interface/target").get("dev")
    assert live.find("./devices/interface/filterref").get("filter") == X.DUALSTACK_FILTER
    assert binding_addresses(drv.conn, port) == {"192.0.2.44", "2001:db8:44::10"}
    binding = next(b for b in drv.conn.listAllNWFilterBindings(0) if b.portDev() == port)
    assert binding.filterName() == X.DUALSTACK_FILTER


def test_filter_follows_address_changes_on_a_running_server(made):
    from hostbay.plugins.kvm import KvmNetworkFilter
    from hostbay.plugins.kvm import xml as X
    from hostbay.plugins.kvm.netfilter import binding_addresses

    drv, _s, ref = made(_spec(addresses=(Address("192.0.2.60", 24, "192.0.2.1"),)), antispoof="nwfilter")
    dom = drv.conn.lookupByName(ref["domain"])
    port = _xml(dom).find("./devices/interface/target").get("dev")

    def binding_filter():
        return next(b.filterName() for b in drv.conn.listAllNWFilterBindings(0) if b.portDev() == port)

    assert binding_filter() == X.V4_FILTER
    flt = KvmNetworkFilter({})
    flt.apply(drv, ref, [Address("192.0.2.60", 24), Address("2001:db8:60::1", 64)])
    assert binding_filter() == X.DUALSTACK_FILTER
    assert binding_addresses(drv.conn, port) == {"192.0.2.60", "2001:db8:60::1"}
    inactive = _xml(dom, inactive=True).find("./devices/interface/filterref")
    assert inactive.get("filter") == X.DUALSTACK_FILTER  # survives a cold start
    flt.apply(drv, ref, [Address("192.0.2.61", 24)])
    assert binding_filter() == X.V4_FILTER
    assert binding_addresses(drv.conn, port) == {"192.0.2.61"}
    drv.stop(ref, timeout=0)
    flt.apply(drv, ref, [Address("192.0.2.62", 24)])  # a stopped server: its definition only
    drv.start(ref)
    port = _xml(dom).find("./devices/interface/target").get("dev")
    assert binding_addresses(drv.conn, port) == {"192.0.2.62"}


@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed (Debian package nftables)")
def test_nftables_port_follows_the_server_from_create_to_delete(made):
    """hostbay's nftables filter on a real domain: the tap carries hostbay's port name and no nwfilter, the
    kernel's ruleset (read back with ``nft -j``) holds the allocated addresses before and after a cold start and
    after each address change, and nothing of the port is left once the server is deleted."""
    from hostbay.plugins.kvm import KvmNetworkFilter
    from hostbay.plugins.kvm import nft as N
    from hostbay.plugins.kvm import xml as X

    drv, _s, ref = made(_spec(addresses=(Address("192.0.2.80", 24, "192.0.2.1"),
                                         Address("2001:db8:80::10", 64, "2001:db8:80::1"))), antispoof="nftables")
    assert drv.antispoof == "nftables"
    dom = drv.conn.lookupByName(ref["domain"])
    live = _xml(dom)
    port = live.find("./devices/interface/target").get("dev")
    assert port == N.port_name(ref["domain"])
    assert live.find("./devices/interface/filterref") is None
    assert not [b for b in drv.conn.listAllNWFilterBindings(0) if b.portDev() == port]
    nft = N.Nft()
    assert nft.port_addresses(port) == {"192.0.2.80", "2001:db8:80::10"}

    nft.remove(port)  # the ruleset emptied under a running server (nft flush ruleset): the periodic re-apply
    assert nft.port_addresses(port) is None
    assert drv.resync_antispoof() >= 1
    assert nft.port_addresses(port) == {"192.0.2.80", "2001:db8:80::10"}

    flt = KvmNetworkFilter({})
    flt.apply(drv, ref, [Address("192.0.2.81", 24)])
    assert nft.port_addresses(port) == {"192.0.2.81"}
    assert [a.address for a in X.addresses(_xml(dom, inactive=True))] == ["192.0.2.81"]  # survives a cold start
    drv.stop(ref, timeout=0)
    flt.apply(drv, ref, [Address("192.0.2.82", 24)])  # a stopped server: its definition only
    assert nft.port_addresses(port) == {"192.0.2.81"}
    nft.remove(port)  # as after a host reboot: the ruleset is gone, the start writes it again
    drv.start(ref)
    assert nft.port_addresses(port) == {"192.0.2.82"}
    drv.delete(ref)
    assert nft.port_addresses(port) is None
    drv.delete(ref)  # a retried delete finds nothing and is no error


def test_mount_and_eject_iso(made, kvm_host):
    from hostbay.plugins.kvm import xml as X

    drv, _s, ref = made()
    iso = str(kvm_host.isos / "hbtest-install.iso")
    dom = drv.conn.lookupByName(ref["domain"])
    drv.mount_iso(ref, iso)
    for root in (_xml(dom), _xml(dom, inactive=True)):
        drive = X.find_disk(root, X.ISO_TARGET)
        assert drive.find("source").get("file") == iso
        assert drive.find("boot").get("order") == "1"
        assert X.find_disk(root, X.DISK_TARGET).find("boot").get("order") == "2"
    assert drv.mounted_iso(ref) == iso
    drv.eject_iso(ref)
    for root in (_xml(dom), _xml(dom, inactive=True)):
        source = X.find_disk(root, X.ISO_TARGET).find("source")  # the live XML keeps an empty <source index>
        assert source is None or source.get("file") is None
    assert drv.mounted_iso(ref) is None
    assert os.path.exists(iso), "ejecting never deletes the customer's image"
    # the seed stays where it was
    assert X.disk_source(_xml(dom), X.SEED_TARGET)


def test_missing_iso_is_fatal_with_a_plain_message(made, kvm_host):
    drv, _s, ref = made()
    missing = str(kvm_host.isos / "hbtest-missing.iso")
    with pytest.raises(FatalDriverError) as err:
        drv.mount_iso(ref, missing)
    assert not isinstance(err.value, TransientDriverError)
    assert "hbtest-missing.iso" in str(err.value)
    assert err.value.customer_message == "The ISO image could not be inserted. Our staff have been notified."
    assert drv.mounted_iso(ref) is None
    with pytest.raises(FatalDriverError):
        drv.mount_iso(ref, "relative.iso")


def test_delete_removes_every_volume(kvm_host):
    drv = _driver(kvm_host)
    spec = _spec()
    ref = drv.create(spec, _noop)
    drv.mount_iso(ref, str(kvm_host.isos / "hbtest-install.iso"))
    owned = sorted(p for p in os.listdir(kvm_host.disks) if p.startswith(ref["domain"]))
    assert len(owned) == 2  # disk and seed
    drv.delete(ref)
    assert drv.status(ref) == PowerState.MISSING
    assert not [p for p in os.listdir(kvm_host.disks) if p.startswith(ref["domain"])]
    assert not [v for v in drv.owned_volumes(ref["domain"])]
    assert (kvm_host.isos / "hbtest-install.iso").exists()
    assert not [b for b in drv.conn.listAllNWFilterBindings(0) if ref["domain"] in b.XMLDesc(0)]


def test_resize_grows_and_never_shrinks(made, kvm_host):
    drv, spec, ref = made(_spec(disk_gib=1, port_speed_mbit=100), shaping="off")
    new = drv.resize(ref, replace(spec, vcpus=2, memory_mib=128, disk_gib=3, port_speed_mbit=1000), _noop)
    dom = drv.conn.lookupByName(new["domain"])
    assert drv.status(new) == PowerState.RUNNING
    root = _xml(dom)
    assert int(root.findtext("vcpu")) == 2 and int(root.find("memory").text) == 128 * 1024
    assert _virtual_size(new["disk"]) == 3 * GIB
    with_shaping = _driver(kvm_host, shaping="libvirt")  # the new port speed lands in the definition
    with_shaping._redefine(dom, port_speed_mbit=1000)
    bw = _xml(dom, inactive=True).find("./devices/interface/bandwidth/inbound")
    assert bw.get("average") == str(1000 * 1_000_000 // 8 // 1024)
    with pytest.raises(FatalDriverError) as err:
        drv.resize(new, replace(spec, disk_gib=2), _noop)
    assert "smaller" in err.value.customer_message
    assert _virtual_size(new["disk"]) == 3 * GIB


def test_rebuild_to_a_smaller_disk(made):
    drv, spec, ref = made(_spec(disk_gib=3))
    steps = []
    new = drv.rebuild(ref, replace(spec, disk_gib=1), lambda p, t: steps.append(p))
    assert drv.status(new) == PowerState.RUNNING
    assert _virtual_size(new["disk"]) == 1 * GIB
    assert steps and steps[-1] == 100


def test_reinstall_writes_a_fresh_disk_and_keeps_the_keys(made):
    drv, spec, ref = made()
    dom = drv.conn.lookupByName(ref["domain"])
    from hostbay.plugins.kvm import xml as X

    seed = X.disk_source(_xml(dom), X.SEED_TARGET)
    first_id = _iso_file(seed, "meta-data")
    inode = os.stat(ref["disk"]).st_ino
    os.utime(ref["disk"], ns=(1, 1))  # mark the old disk
    marked = os.stat(ref["disk"]).st_mtime_ns
    new = drv.reinstall(ref, spec, _noop)
    assert drv.status(new) == PowerState.RUNNING
    seed = X.disk_source(_xml(dom), X.SEED_TARGET)
    assert TEST_KEY in _iso_file(seed, "user-data")
    assert _iso_file(seed, "meta-data") != first_id, "a new instance id makes cloud-init run again"
    assert _virtual_size(new["disk"]) == spec.disk_gib * GIB
    assert os.stat(new["disk"]).st_ino != inode or os.stat(new["disk"]).st_mtime_ns != marked


def test_template_by_absolute_path(made, kvm_host):
    drv, _s, ref = made(_spec(image={"name": "blank", "source": str(kvm_host.templates / TEMPLATE)}))
    assert drv.status(ref) == PowerState.RUNNING
    backing = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", ref["disk"]],
                                        capture_output=True, check=True, text=True).stdout)["backing-filename"]
    assert backing == str(kvm_host.templates / TEMPLATE)


def test_missing_template_is_fatal_and_creates_nothing(kvm_host):
    drv = _driver(kvm_host)
    spec = _spec(image={"name": "Gone OS", "source": "hbtest-missing.qcow2"})
    with pytest.raises(FatalDriverError) as err:
        drv.create(spec, _noop)
    assert "hbtest-missing.qcow2" in str(err.value) and "not found in" in str(err.value)
    assert "hbtest-missing" not in err.value.customer_message
    assert drv.status({"domain": drv.domain_name(spec.uuid)}) == PowerState.MISSING
    assert not drv.owned_volumes(drv.domain_name(spec.uuid))


def test_unreachable_host_is_transient(kvm_host):
    drv = _driver(kvm_host, uri="qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(TransientDriverError):
        drv.status({"domain": PREFIX + str(uuid.uuid4())})


def test_bad_pool_name_is_fatal(kvm_host):
    drv = _driver(kvm_host, storage="hbtest-no-such-pool")
    with pytest.raises(FatalDriverError) as err:
        drv.create(_spec(), _noop)
    assert "hbtest-no-such-pool" in str(err.value)


def test_stop_falls_back_to_destroy_and_create_restarts(made):
    drv, spec, ref = made()
    drv.stop(ref, timeout=1)  # no OS answers ACPI
    assert drv.status(ref) == PowerState.STOPPED
    assert drv.create(spec, _noop) == ref  # a retried create finishes the job
    assert drv.status(ref) == PowerState.RUNNING


def test_validate(kvm_host):
    _driver(kvm_host).validate()
    with pytest.raises(FatalDriverError):
        _driver(kvm_host, templates="hbtest-no-such-pool").validate()


# ---------------------------------------------------------------------------------------------------------------
# move between nodes
# ---------------------------------------------------------------------------------------------------------------

def _domains(conn, service_uuid):
    return sorted(d.name() for d in conn.listAllDomains(0) if d.name().endswith(service_uuid))


def test_move_over_streams_between_two_connections_and_a_retry_after_a_crash(kvm_host, monkeypatch):
    """Two node records on the test libvirtd: the target reached through another URI (qemu+unix://), so the
    volumes go over download/upload streams. The first attempt dies when the target domain would start; the retry
    finishes it: one domain at the end, on the target, with copied volumes, and the source's volumes gone."""
    from hostbay.plugins.kvm import KvmDriver
    from hostbay.plugins.kvm import xml as X

    if kvm_host.uri != "qemu:///system":
        pytest.skip("needs the local system libvirtd, reachable as qemu+unix:///system too")
    src = _driver(kvm_host)
    target = kvm_host.settings(uri="qemu+unix:///system", storage=str(kvm_host.disks.parent / "disks-c"),
                               name_prefix=f"{PREFIX}c-")
    spec = _spec()
    ref = src.create(spec, _noop)
    conn = kvm_host.conn()
    old_volumes = sorted(v.name() for v in src.owned_volumes(ref["domain"]))
    assert old_volumes == [f"{ref['domain']}-disk.qcow2", f"{ref['domain']}-seed.iso"]
    real_start = KvmDriver._ensure_running
    calls = []

    def dies_once(self, dom):
        if dom.name().startswith(f"{PREFIX}c-") and not calls:
            calls.append(dom.name())
            raise TransientDriverError("worker died")
        return real_start(self, dom)

    monkeypatch.setattr(KvmDriver, "_ensure_running", dies_once)
    steps = []
    try:
        with pytest.raises(TransientDriverError):
            src.move(ref, spec, target, lambda p, t: steps.append(t))
        assert "Copying the disk" in steps
        # both domains exist now (the source stopped): the retry must end with one
        assert len(_domains(conn, spec.uuid)) == 2
        new_ref = src.move(ref, spec, target, _noop)
        other = KvmDriver(target)
        assert _domains(conn, spec.uuid) == [other.domain_name(spec.uuid)]
        assert other.status(new_ref) == PowerState.RUNNING and src.status(ref) == PowerState.MISSING
        disk = X.disk_source(_xml(conn.lookupByName(new_ref["domain"]), inactive=True), X.DISK_TARGET)
        assert disk == new_ref["disk"] and disk.startswith(str(kvm_host.disks.parent / "disks-c"))
        assert _virtual_size(disk) == spec.disk_gib * GIB
        assert src.owned_volumes(ref["domain"]) == []
        assert sorted(v.name() for v in other.owned_volumes(new_ref["domain"])) == [
            f"{new_ref['domain']}-disk.qcow2", f"{new_ref['domain']}-seed.iso"]
        assert src.move(ref, spec, target, _noop) == new_ref  # retried once more: nothing changes
    finally:
        monkeypatch.undo()
        for drv, r in ((src, ref), (KvmDriver(target), {"domain": KvmDriver(target).domain_name(spec.uuid)})):
            drv.delete(r)

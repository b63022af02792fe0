"""Fast tests of the KVM plugin's XML, seed and settings logic (no libvirtd; ``test:///default`` where a
connection helps)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

from hostbay.core.drivers import Address, PowerState, ServerSpec
from hostbay.core.errors import FatalDriverError, SettingsError, TransientDriverError
from hostbay.plugins.kvm import KvmDriver, KvmNetworkFilter
from hostbay.plugins.kvm import seed as S
from hostbay.plugins.kvm import xml as X

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEfZQmrHVr2i6OmnFzRzRu8LrbSZrvVdaROzW0DkmHh0 me@example"


def spec(**kw):
    values = dict(uuid="0b0e6a0e-7a39-4a8e-9d2b-6f0a0c5f1d11", hostname="web1.example.test", vcpus=2,
                  memory_mib=2048, disk_gib=20, image={"name": "Debian 12", "source": "debian-12.qcow2"}, node={},
                  ssh_keys=(KEY,), addresses=(Address("203.0.113.5", 24, "203.0.113.1"),
                                              Address("203.0.113.6", 24)),
                  nameservers=("203.0.113.53",), port_speed_mbit=100)
    values.update(kw)
    return ServerSpec(**values)


def domain_xml(s=None, **kw):
    s = s or spec()
    args = dict(name="hostbay-" + s.uuid, service_uuid=s.uuid, virt_type="kvm", vcpus=s.vcpus,
                memory_mib=s.memory_mib, disk_path="/srv/disks/d.qcow2", seed_path="/srv/disks/s.iso",
                mac=X.mac_for(s.uuid), net=X.Network(), addresses=s.addresses, port_speed_mbit=s.port_speed_mbit)
    args.update(kw)
    return X.parse(X.domain(**args))


def test_domain_xml_shape():
    root = domain_xml()
    assert root.get("type") == "kvm"
    assert root.findtext("vcpu") == "2"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "2048"
    assert X.service_uuid(root) == spec().uuid
    disk = X.find_disk(root, X.DISK_TARGET)
    assert disk.get("device") == "disk" and disk.find("target").get("bus") == "virtio"
    assert disk.find("driver").get("type") == "qcow2" and disk.find("boot").get("order") == "2"
    assert X.disk_source(root, X.SEED_TARGET) == "/srv/disks/s.iso"
    assert X.find_disk(root, X.SEED_TARGET).find("boot") is None
    iso = X.find_disk(root, X.ISO_TARGET)
    assert iso.get("device") == "cdrom" and iso.find("source") is None and iso.find("boot").get("order") == "1"
    gfx = root.find("./devices/graphics")
    assert gfx.get("type") == "vnc" and gfx.get("listen") == "127.0.0.1" and gfx.get("autoport") == "yes"
    assert gfx.get("websocket") == "-1"
    assert root.find("cpu") is None  # QEMU's portable model unless the node asks otherwise


def test_interface_filter_and_bandwidth():
    iface = domain_xml().find("./devices/interface")
    assert iface.get("type") == "ethernet" and iface.find("source") is None
    assert iface.find("mac").get("address") == X.mac_for(spec().uuid)
    ref = iface.find("filterref")
    assert ref.get("filter") == X.V4_FILTER
    params = [(p.get("name"), p.get("value")) for p in ref.iterfind("parameter")]
    assert params == [("IP", "203.0.113.5"), ("IP", "203.0.113.6"), ("CTRL_IP_LEARNING", "none")]
    bw = iface.find("bandwidth")
    assert bw.find("inbound").get("average") == bw.find("outbound").get("average") == "12207"


def test_bandwidth_units():
    assert X.kib_per_s(100) == 12207  # 100 Mbit/s = 12.5 MB/s = 12207 KiB/s
    assert X.kib_per_s(1000) == 122070
    assert X.kib_per_s(1) == 122


def test_bridge_and_network_modes():
    br = domain_xml(net=X.Network("bridge", "br0")).find("./devices/interface")
    assert br.get("type") == "bridge" and br.find("source").get("bridge") == "br0"
    nw = domain_xml(net=X.Network("network", "public")).find("./devices/interface")
    assert nw.get("type") == "network" and nw.find("source").get("network") == "public"


def test_shaping_off_keeps_speed_in_metadata_only():
    root = domain_xml(shaping=False)
    assert root.find("./devices/interface/bandwidth") is None
    assert root.find(f"./metadata/{{{X.NS}}}server").get("port-speed-mbit") == "100"
    X.set_bandwidth(root, 200)
    assert root.find("./devices/interface/bandwidth/inbound").get("average") == str(X.kib_per_s(200))
    X.set_bandwidth(root, None)
    assert root.find("./devices/interface/bandwidth") is None


def test_ipv6_uses_the_dualstack_filter():
    s = spec(addresses=(Address("203.0.113.5", 24, "203.0.113.1"), Address("2001:db8::5", 64, "2001:db8::1")))
    ref = domain_xml(s).find("./devices/interface/filterref")
    assert ref.get("filter") == X.DUALSTACK_FILTER
    assert ("IPV6", "2001:db8::5") in {(p.get("name"), p.get("value")) for p in ref.iterfind("parameter")}
    names = [X.parse(f).get("name") for f in X.host_filters()]
    assert names == [X.V4_FILTER, X.DUALSTACK_FILTER]  # the dual-stack filter includes the IPv4 one: defined first
    only6 = X.filterref([Address("2001:db8::5", 64)])
    assert [(p.get("name"), p.get("value")) for p in only6.iterfind("parameter")][:2] == \
        [("IP", X.NO_IPV4), ("IPV6", "2001:db8::5")]


def test_host_filters_keep_every_rule_in_the_root_chain():
    """Sub-chains are what makes libvirt's clean-traffic slow to instantiate (each is created, filled, renamed and
    removed by its own ebtables runs); hostbay's filters put every rule in the root chain, pin every outgoing
    rule that accepts to the NIC's MAC, and end with a drop of everything else in both directions."""
    v4, dual = (X.parse(f) for f in X.host_filters())
    for flt in (v4, dual):
        assert flt.get("chain") == "root"
        for rule in flt.iterfind("rule"):
            (match,) = list(rule)
            if rule.get("action") == "accept" and rule.get("direction") == "out":
                assert match.get("srcmacaddr") == "$MAC[@1]", X.ET.tostring(rule)
    assert [r.get("filter") for r in dual.iterfind("filterref")] == [X.V4_FILTER]
    last = max(v4.iterfind("rule"), key=lambda r: int(r.get("priority")))
    assert (last.get("action"), last.get("direction"), last[0].tag, last[0].attrib) == ("drop", "inout", "mac", {})
    out4 = {(r[0].tag, r[0].get("srcipaddr"), r[0].get("arpsrcipaddr")) for r in v4.iterfind("rule[@action='accept']")
            if r.get("direction") == "out"}
    assert ("ip", "$IP[@2]", None) in out4 and ("arp", None, "$IP[@2]") in out4
    out6 = {r[0].get("srcipaddr") for r in dual.iterfind("rule[@direction='out']") if r[0].tag == "ipv6"}
    assert out6 == {"$IPV6[@2]", "fe80::", "::"}
    assert len(X.HOST_FILTERS_DIGEST) == 16


def test_mac_is_stable_and_local():
    a = X.mac_for("11111111-1111-1111-1111-111111111111")
    assert a == X.mac_for("11111111-1111-1111-1111-111111111111")
    assert a != X.mac_for("22222222-2222-2222-2222-222222222222")
    assert a.startswith("52:54:00:") and len(a) == 17


def test_set_shape_edits_memory_and_vcpus():
    root = domain_xml()
    X.set_shape(root, 4, 4096)
    assert root.findtext("vcpu") == "4" and root.findtext("memory") == "4096"
    assert root.findtext("currentMemory") == "4096"


def test_volume_xml_has_backing_store():
    vol = X.parse(X.volume("d.qcow2", 2 * 1024 ** 3, "qcow2", ("/tpl/debian.qcow2", "qcow2")))
    assert vol.findtext("capacity") == str(2 * 1024 ** 3)
    assert vol.find("./target/format").get("type") == "qcow2"
    assert vol.findtext("./backingStore/path") == "/tpl/debian.qcow2"


def test_seed_documents():
    docs = S.documents(spec(), "52:54:00:aa:bb:cc", "iid-1")
    assert docs["user-data"].startswith("#cloud-config\n")
    user = json.loads(docs["user-data"].split("\n", 1)[1])
    assert user["ssh_authorized_keys"] == [KEY] and user["hostname"] == "web1"
    assert user["fqdn"] == "web1.example.test" and user["disable_root"] is False
    assert "chpasswd" not in user and user["ssh_pwauth"] is False
    meta = json.loads(docs["meta-data"])
    assert meta == {"instance-id": "iid-1", "local-hostname": "web1"}
    net = json.loads(docs["network-config"])
    eth = net["ethernets"]["eth0"]
    assert net["version"] == 2 and eth["match"] == {"macaddress": "52:54:00:aa:bb:cc"}
    assert eth["addresses"] == ["203.0.113.5/24", "203.0.113.6/24"]
    # gateway4, not a v2 default route: ifupdown renders routes as `route add` (net-tools), which fails silently
    assert eth["gateway4"] == "203.0.113.1" and "routes" not in eth
    assert eth["nameservers"] == {"addresses": ["203.0.113.53"]}
    # the resolver also reaches /etc/resolv.conf on images without resolvconf or systemd-resolved
    script = user["bootcmd"][0][2]
    assert "nameserver 203.0.113.53" in script and "! -L /etc/resolv.conf" in script
    assert "phone_home" not in user  # no readiness URL: no report


def test_seed_resolv_conf_script_runs(tmp_path):
    """The bootcmd line does what it says in a shell: a plain resolv.conf is written, a symlink is left alone."""
    import subprocess

    script = S.resolv_conf_script(("192.0.2.53", "2001:db8::53"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "resolv.conf").write_text("nameserver 10.9.9.9\n")
    subprocess.run(["sh", "-c", script.replace("/etc/resolv.conf", str(plain / "resolv.conf"))], check=True,
                   env={"PATH": "/usr/bin:/bin"})
    assert (plain / "resolv.conf").read_text() == "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "stub").write_text("nameserver 127.0.0.53\n")
    (linked / "resolv.conf").symlink_to(linked / "stub")
    subprocess.run(["sh", "-c", script.replace("/etc/resolv.conf", str(linked / "resolv.conf"))], check=True,
                   env={"PATH": "/usr/bin:/bin"})
    assert (linked / "stub").read_text() == "nameserver 127.0.0.53\n"
    with pytest.raises(ValueError):
        S.resolv_conf_script(("192.0.2.53'; rm -rf /; '",))


def test_seed_phone_home_when_ready_url():
    s = spec(ready_url="http://panel.example.test/guest/abc/ready/tok")
    user = json.loads(S.documents(s, "52:54:00:aa:bb:cc", "iid")["user-data"].split("\n", 1)[1])
    assert user["phone_home"]["url"] == "http://panel.example.test/guest/abc/ready/tok"
    assert "instance_id" in user["phone_home"]["post"]
    assert "sport = :22" in user["runcmd"][0][2]


def test_seed_ipv6_and_password():
    s = spec(addresses=(Address("2001:db8::5", 64, "2001:db8::1"),), root_password="s3cret-Pass")
    docs = S.documents(s, "52:54:00:aa:bb:cc", "iid")
    eth = json.loads(docs["network-config"])["ethernets"]["eth0"]
    assert eth["gateway6"] == "2001:db8::1" and eth["accept-ra"] is False and "gateway4" not in eth
    user = json.loads(docs["user-data"].split("\n", 1)[1])
    assert user["chpasswd"]["users"][0]["password"] == "s3cret-Pass" and user["ssh_pwauth"] is True


def test_seed_rejects_bad_addresses():
    with pytest.raises(ValueError):
        S.documents(spec(addresses=(Address("not-an-ip", 24),)), "52:54:00:aa:bb:cc", "iid")


def test_seed_iso_reads_back():
    import pycdlib

    data = S.build_iso(S.documents(spec(), "52:54:00:aa:bb:cc", "iid-1"))
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/user-data")
        assert KEY in out.getvalue().decode()
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, joliet_path="/network-config")
        assert "203.0.113.5/24" in out.getvalue().decode()
    finally:
        iso.close()


def test_settings_defaults_and_validation():
    drv = KvmDriver({})
    assert drv.config["uri"] == "qemu:///system" and drv.config["network"] == "ethernet"
    assert drv.config["virt_type"] == "auto" and drv.config["shaping"] == "libvirt"
    assert drv.capabilities == {"resize", "rebuild", "iso", "console", "suspend", "readiness", "move"}
    assert drv.config["probe_timeout"] == 15
    with pytest.raises(SettingsError) as err:
        KvmDriver({"network": "bridge"})
    assert "bridge" in err.value.errors
    with pytest.raises(SettingsError) as err:
        KvmDriver({"virt_type": "xen", "stop_timeout": "soon"})
    assert set(err.value.errors) == {"virt_type", "stop_timeout"}
    with pytest.raises(SettingsError):
        KvmDriver({"storage": "relative/dir"})
    assert KvmDriver({"network": "network", "bridge": "public"}).config["bridge"] == "public"
    assert KvmDriver({"storage": "default"}).config["storage"] == "default"


def test_registered_through_hooks():
    from hostbay.core.plugins import build_registry

    registry = build_registry(enabled=["kvm"])
    assert registry.drivers["virt"]["kvm"] is KvmDriver
    assert registry.drivers["network_filter"]["kvm"] is KvmNetworkFilter
    assert "kvm" in KvmNetworkFilter.drivers


def test_plugin_loads_without_libvirt_python():
    code = textwrap.dedent("""
        import sys
        sys.modules["libvirt"] = None  # as if libvirt-python were not installed
        from hostbay.core.plugins import build_registry
        from hostbay.core.errors import FatalDriverError
        registry = build_registry(enabled=["kvm"])
        info = [p for p in registry.plugins if p.name == "kvm"][0]
        assert info.state == "loaded", info.error
        drv = registry.driver("virt", "kvm", {})
        try:
            drv.status({"domain": "x"})
        except FatalDriverError as exc:
            print("FATAL", exc, "|", exc.customer_message)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "FATAL libvirt-python is not installed" in out.stdout and "hostbay[kvm]" in out.stdout
    assert "libvirt" not in out.stdout.split("|", 1)[1]  # the customer's message stays plain


def _libvirt_error(code: int, message: str):
    libvirt = pytest.importorskip("libvirt")
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, 2, None, None, None, 0, 0)
    return exc


def test_error_translation():
    libvirt = pytest.importorskip("libvirt")
    from hostbay.plugins.kvm.connection import translate

    for code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC,
                 libvirt.VIR_ERR_OPERATION_TIMEOUT):
        assert isinstance(translate(_libvirt_error(code, "Connection refused"), "x"), TransientDriverError)
    for code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_AUTH_FAILED,
                 libvirt.VIR_ERR_INTERNAL_ERROR):
        assert isinstance(translate(_libvirt_error(code, "bad"), "x"), FatalDriverError)
    missing_bridge = _libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Cannot get interface MTU on 'br9': No such device")
    err = translate(missing_bridge, "starting")
    assert isinstance(err, FatalDriverError) and not isinstance(err, TransientDriverError)
    assert "br9" in str(err) and "br9" not in err.customer_message
    no_socket = _libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect socket: No such file or directory")
    assert isinstance(translate(no_socket, "connecting", connecting=True), TransientDriverError)


# --- test:///default: the state logic against libvirt's built-in test hypervisor ---------------------------------

@pytest.fixture
def test_driver():
    pytest.importorskip("libvirt")
    drv = KvmDriver({"uri": "test:///default", "name_prefix": ""})
    yield drv
    from hostbay.plugins.kvm.connection import forget

    forget("test:///default")


def test_state_mapping_on_the_test_hypervisor(test_driver):
    ref = {"domain": "test"}  # the test hypervisor's predefined running domain
    assert test_driver.status(ref) == PowerState.RUNNING
    test_driver.suspend(ref)
    assert test_driver.status(ref) == PowerState.PAUSED
    test_driver.unsuspend(ref)
    assert test_driver.status(ref) == PowerState.RUNNING
    test_driver.stop(ref, timeout=0)
    assert test_driver.status(ref) == PowerState.STOPPED
    test_driver.stop(ref, timeout=0)
    test_driver.start(ref)
    assert test_driver.status(ref) == PowerState.RUNNING
    assert test_driver.status({"domain": "no-such-domain"}) == PowerState.MISSING


def test_graceful_stop_on_the_test_hypervisor(test_driver):
    ref = {"domain": "test"}
    test_driver.start(ref)
    test_driver.stop(ref, timeout=5)  # the test hypervisor honours the ACPI shutdown at once
    assert test_driver.status(ref) == PowerState.STOPPED
    test_driver.start(ref)


def test_virt_type_auto_and_forced(test_driver):
    caps = X.parse(test_driver.conn.getCapabilities())
    types = {d.get("type") for d in caps.iterfind("./guest/arch[@name='x86_64']/domain")}
    assert test_driver.virt_type() == ("kvm" if "kvm" in types else "qemu")
    forced = KvmDriver({"uri": "test:///default", "virt_type": "kvm"})
    if "kvm" in types:
        assert forced.virt_type() == "kvm"
    else:
        with pytest.raises(FatalDriverError) as err:
            forced.virt_type()
        assert "does not offer kvm" in str(err.value)


def test_missing_domain_is_fatal_with_a_plain_message(test_driver):
    with pytest.raises(FatalDriverError) as err:
        test_driver.start({"domain": "hostbay-gone"})
    assert "hostbay-gone" in str(err.value) and "hostbay-gone" not in err.value.customer_message


def test_connections_are_not_shared_across_fork(test_driver):
    import os

    from hostbay.plugins.kvm import connection

    parent = test_driver.conn
    assert test_driver.conn is parent  # cached within a process
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh connection, the parent's left alone
        try:
            os.write(w, b"1" if connection.connect("test:///default") is not parent else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert parent.isAlive()


def test_cdrom_change_retries_while_the_tray_is_still_opening(monkeypatch):
    """QEMU refuses a medium change while the tray is still opening (a busy host): the driver tries again, and
    after its retries a transient error (the job layer retries later), never a fatal one."""
    libvirt = pytest.importorskip("libvirt")
    from hostbay.core.drivers import PowerState
    from hostbay.core.errors import TransientDriverError
    from hostbay.plugins.kvm import driver as kvm_driver

    monkeypatch.setattr(kvm_driver, "TRAY_RETRY_SECONDS", (0, 0))

    class TrayError(libvirt.libvirtError):
        def get_error_message(self):
            return "internal error: unable to execute QEMU command 'blockdev-remove-medium': Tray of device " \
                   "'ide0-1-1' is not open"

    class Dom:
        def __init__(self, failures):
            self.failures, self.calls = failures, 0

        def updateDeviceFlags(self, xml, flags):
            self.calls += 1
            if self.calls <= self.failures:
                raise TrayError("tray")

    drv = kvm_driver.KvmDriver.__new__(kvm_driver.KvmDriver)
    for failures, ok in ((2, True), (3, False)):
        dom = Dom(failures)
        monkeypatch.setattr(drv, "_domain", lambda ref, dom=dom: dom, raising=False)
        monkeypatch.setattr(drv, "_state", lambda d: PowerState.RUNNING, raising=False)
        if ok:
            drv.eject_iso({"domain": "x"})
            assert dom.calls == 3
        else:
            with pytest.raises(TransientDriverError):
                drv.eject_iso({"domain": "x"})
            assert dom.calls == 3


def test_test_connection_warns_that_a_routed_tap_is_not_filtered():
    from hostbay.plugins.kvm.driver import network_protection_note

    routed = network_protection_note(KvmDriver.clean_settings({}))
    assert KvmDriver.clean_settings({})["network"] == "ethernet" and "not filtered against spoofing" in routed
    assert network_protection_note(KvmDriver.clean_settings({"network": "bridge", "bridge": "br0"})) == ""
    assert network_protection_note(KvmDriver.clean_settings({"network": "network", "bridge": "default"})) == ""
    assert "not filtered" not in network_protection_note(KvmDriver.clean_settings({}), "nftables")
    assert "nftables" in network_protection_note(KvmDriver.clean_settings({}), "nftables")


def test_a_domain_on_an_nftables_port_names_its_tap_and_keeps_its_addresses():
    from hostbay.plugins.kvm import nft as N

    port = N.port_name("hostbay-" + spec().uuid)
    root = domain_xml(port=port)
    iface = root.find("./devices/interface")
    assert iface.find("target").get("dev") == port and iface.find("filterref") is None
    assert X.nft_port(root) == port
    assert [(a.address, a.prefix) for a in X.addresses(root)] == [("203.0.113.5", 24), ("203.0.113.6", 24)]
    # the same server on libvirt's nwfilter: no hostbay port, the addresses are the filter's parameters
    assert X.nft_port(domain_xml()) is None
    X.set_antispoof(iface, spec().addresses, None)
    assert X.nft_port(root) is None and iface.find("filterref").get("filter") == X.V4_FILTER
    X.set_antispoof(iface, spec().addresses, port)
    assert X.nft_port(root) == port and iface.find("filterref") is None
    X.set_addresses(root, [Address("2001:db8::7", 64)])
    assert [a.address for a in X.addresses(X.parse(X.to_string(root)))] == ["2001:db8::7"]


def test_nftables_antispoofing_needs_this_machines_libvirt(monkeypatch):
    from hostbay.plugins.kvm import driver as D

    assert D.is_local_uri("qemu:///system") and D.is_local_uri("qemu:///session")
    assert not D.is_local_uri("qemu+ssh://root@hv1/system") and not D.is_local_uri("qemu+tls://hv1/system")
    assert not D.is_local_uri("test:///default")
    with pytest.raises(SettingsError) as err:
        KvmDriver(KvmDriver.clean_settings({"uri": "qemu+ssh://root@hv1/system", "antispoof": "nftables"}))
    assert "antispoof" in err.value.errors
    remote = KvmDriver(KvmDriver.clean_settings({"uri": "qemu+ssh://root@hv1/system"}))
    assert remote.antispoof == "nwfilter"  # auto: a remote host keeps libvirt's filter
    local = KvmDriver(KvmDriver.clean_settings({}))
    monkeypatch.setattr(D.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(D.os, "geteuid", lambda: 0)
    assert local.antispoof == "nftables"
    monkeypatch.setattr(D.os, "geteuid", lambda: 1000)
    assert local.antispoof == "nwfilter"  # nft needs root: not chosen for a worker that is not
    monkeypatch.setattr(D.os, "geteuid", lambda: 0)
    monkeypatch.setattr(D.shutil, "which", lambda name: None)
    assert local.antispoof == "nwfilter"
    assert KvmDriver(KvmDriver.clean_settings({"antispoof": "nwfilter"})).antispoof == "nwfilter"


def test_nft_errors_are_clear(monkeypatch):
    from hostbay.plugins.kvm import nft as N

    missing = N.Nft(["/nonexistent/nft"])
    with pytest.raises(FatalDriverError, match="not installed"):
        missing.apply(N.port_name("a"), "52:54:00:00:00:01", [Address("192.0.2.1", 24)])
    refusing = N.Nft([sys.executable, "-c", "import sys; sys.stderr.write('Error: Operation not permitted\\n'); "
                                            "sys.exit(1)", "--"])
    with pytest.raises(FatalDriverError, match="needs root"):
        refusing.ensure()

"""KvmDriver: virtual servers on a libvirt/QEMU host.

A server is a libvirt domain named ``<prefix><service uuid>`` with
- a qcow2 overlay ``<domain>-disk.qcow2`` whose backing file is the image's template, grown to the package's disk,
- a cloud-init NoCloud seed ``<domain>-seed-<n>.iso`` in an IDE CD-ROM (SSH keys, hostname, static addresses),
- an empty IDE CD-ROM for the customer's installation ISO, first in the boot order (an empty drive is skipped),
- a virtio NIC with ``<bandwidth>`` at the port speed, pinned to the allocated addresses by hostbay's nftables
  rules (``nft.py``, on a local host) or by libvirt's nwfilter (``antispoof``: a remote host, bridged ports only),
- VNC on 127.0.0.1 (autoport) with a websocket port, for the console proxy.

Every volume lives in the node's storage pool (a directory is exposed as a libvirt ``dir`` pool), so the driver
works the same on a local ``qemu:///system`` and on a remote ``qemu+ssh://`` or ``qemu+tls://`` host.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import time
from typing import Any
from urllib.parse import urlsplit

from hostbay.core.drivers import (ConsoleTarget, PowerState, Progress, ServerSpec, Setting, VirtDriver)
from hostbay.core.errors import FatalDriverError, TransientDriverError

from . import nft as nftmod
from . import probe as probemod
from . import seed as seedmod
from . import xml as X
from .connection import connect, libvirt, translate, translated

GIB = 1024 ** 3

NOT_RUNNING = "The server is not running."
PROBE_TTL = 3600  # seconds an ``auto`` probe result is trusted
_AUTO_CHOICES: dict[tuple[str, str], tuple[float, str, str]] = {}  # (uri, storage) -> (until, virt_type, reason)
_FILTERS_DEFINED: set[tuple[str, str]] = set()  # (uri, digest of X.host_filters()) defined by this process


def _is_path(value: str) -> bool:
    return value.startswith("/")


class KvmDriver(VirtDriver):
    name = "kvm"
    label = "KVM (libvirt)"
    settings = [
        Setting("uri", "libvirt URI", default="qemu:///system",
                help="qemu:///system for this machine, qemu+ssh://root@host/system or qemu+tls://host/system."),
        Setting("storage", "Storage directory or pool", default="/var/lib/libvirt/images/hostbay",
                help="An absolute directory (exposed as a libvirt dir pool) or the name of an existing pool. "
                     "Server disks and seed images are created there."),
        Setting("templates", "Template directory or pool", default="/var/lib/libvirt/images/templates",
                help="Where OS templates live. An image's source is a file name in it, or an absolute path."),
        Setting("network", "Network mode", type="choice", default="ethernet",
                choices=("ethernet", "bridge", "network"),
                help="ethernet: a routed tap device; bridge: attach to a host bridge; network: a libvirt network."),
        Setting("bridge", "Bridge or network name", required=False, default=None,
                help="The host bridge (mode bridge) or libvirt network (mode network)."),
        Setting("shaping", "Port speed enforcement", type="choice", default="libvirt", choices=("libvirt", "off"),
                help="libvirt: <bandwidth> on the interface (the host kernel needs the sch_htb, sch_sfq and "
                     "act_police modules); off: the port speed is recorded but not enforced by this driver."),
        Setting("virt_type", "Virtualization", type="choice", default="auto", choices=("auto", "kvm", "qemu"),
                help="auto uses KVM only when a probe guest runs under it (checked at Test connection and "
                     "once an hour), otherwise QEMU emulation (TCG)."),
        Setting("cpu_mode", "CPU model", type="choice", default="default",
                choices=("default", "host-model", "host-passthrough"),
                help="default: QEMU's portable model; host-model/host-passthrough expose the host CPU (KVM only)."),
        Setting("stop_timeout", "Seconds to wait for a clean shutdown", type="int", default=60,
                help="After this the server is powered off."),
        Setting("probe_timeout", "Seconds a probe guest may take", type="int", default=15,
                help="How long Test connection (and virt_type auto) waits for the probe guest's serial line."),
        Setting("name_prefix", "Domain name prefix", default="hostbay-",
                help="libvirt domains are named prefix + service UUID."),
        Setting("antispoof", "Anti-spoofing", type="choice", default="auto",
                choices=("auto", "nftables", "nwfilter"),
                help="nftables: hostbay's own rules on this machine (bridged and routed ports, one nft run per "
                     "start; the libvirt URI must be this machine's and the worker root); nwfilter: libvirt's "
                     "filters (bridged ports only, any host); auto: nftables for a local URI when nft is "
                     "installed and the worker is root, nwfilter otherwise."),
    ]
    capabilities = frozenset({"resize", "rebuild", "iso", "console", "suspend", "readiness", "move"})

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        if cfg["network"] in ("bridge", "network") and not cfg["bridge"]:
            from hostbay.core.errors import SettingsError

            raise SettingsError({"bridge": f"Bridge or network name is required in {cfg['network']} mode"})
        for key in ("storage", "templates"):
            if cfg[key].startswith(".") or "/" in cfg[key] and not _is_path(cfg[key]):
                from hostbay.core.errors import SettingsError

                raise SettingsError({key: "must be an absolute directory or a pool name"})
        if cfg["stop_timeout"] < 0:
            from hostbay.core.errors import SettingsError

            raise SettingsError({"stop_timeout": "must not be negative"})
        if cfg.get("antispoof") == "nftables" and not is_local_uri(cfg["uri"]):
            from hostbay.core.errors import SettingsError

            raise SettingsError({"antispoof": "nftables needs the libvirt URI of this machine (qemu:///system): "
                                              "the rules go into the ruleset of the host the worker runs on"})

    @property
    def antispoof(self) -> str:
        """The filter new servers get: ``nftables`` or ``nwfilter`` (``auto`` resolved)."""
        wanted = self.config.get("antispoof") or "auto"
        if wanted != "auto":
            return wanted
        usable = (is_local_uri(self.config["uri"]) and shutil.which("nft") is not None and os.geteuid() == 0)
        return "nftables" if usable else "nwfilter"

    @property
    def nft(self) -> nftmod.Nft:
        return nftmod.Nft()

    def _nft_port(self, name: str) -> str | None:
        return nftmod.port_name(name) if self.antispoof == "nftables" else None

    # connection and lookups ------------------------------------------------------------------------------------
    @property
    def conn(self):
        return connect(self.config["uri"])

    def domain_name(self, service_uuid: str) -> str:
        return f"{self.config['name_prefix']}{service_uuid}"

    def _lookup(self, name: str):
        lv = libvirt()
        try:
            return self.conn.lookupByName(name)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(exc, f"looking up domain {name}") from exc

    def _domain(self, ref: dict[str, Any]):
        dom = self._lookup(ref.get("domain", ""))
        if dom is None:
            raise FatalDriverError(f"libvirt domain {ref.get('domain')!r} does not exist on {self.config['uri']}",
                                   customer_message="This server no longer exists on its host. Our staff have "
                                                    "been notified.")
        return dom

    def virt_type(self) -> str:
        wanted = self.config["virt_type"]
        with translated("reading host capabilities"):
            caps = X.parse(self.conn.getCapabilities())
        types = {d.get("type") for d in caps.iterfind("./guest/arch[@name='x86_64']/domain")}
        if wanted == "auto":
            return self._auto_choice(types)[0]
        if wanted not in types:
            raise FatalDriverError(f"the host at {self.config['uri']} does not offer {wanted} virtualization "
                                   f"(offers: {', '.join(sorted(t for t in types if t)) or 'none'})")
        return wanted

    # probe guest -----------------------------------------------------------------------------------------------
    def probe_image(self, virt_type: str) -> bytes:
        """The boot sector the probe runs under ``virt_type`` (tests replace it to force a failing probe)."""
        return probemod.BOOT_SECTOR

    def probe(self, virt_type: str) -> probemod.ProbeResult:
        """Boot the probe guest under ``virt_type`` on this node (see probe.py)."""
        return probemod.run(self.conn, self._pool("storage", create=True), virt_type, self.config["name_prefix"],
                            timeout=self.config["probe_timeout"], image=self.probe_image(virt_type))

    def _auto_choice(self, types: set, fresh: bool = False) -> tuple[str, str]:
        """``auto``: KVM only when a probe guest really runs under KVM; the answer (and why) is kept per libvirt
        URI for ``PROBE_TTL`` seconds, so creating servers does not boot a probe each time."""
        if "kvm" not in types:
            return "qemu", "auto chose QEMU emulation (TCG): the host does not offer KVM"
        key = (self.config["uri"], self.config["storage"])
        cached = _AUTO_CHOICES.get(key)
        if cached and not fresh and cached[0] > time.monotonic():
            return cached[1], cached[2]
        result = self.probe("kvm")
        if result.ok:
            choice = ("kvm", f"auto chose KVM: {result.summary}")
        else:
            choice = ("qemu", f"auto chose QEMU emulation (TCG): the host offers KVM, but {result.summary}")
        _AUTO_CHOICES[key] = (time.monotonic() + PROBE_TTL, *choice)
        return choice

    def _pool(self, setting: str, create: bool):
        """The storage pool behind ``storage`` or ``templates``: an existing pool by name, or a dir pool for the
        directory (found by its target path, or defined, built and started when ``create``)."""
        lv = libvirt()
        value = self.config[setting]
        conn = self.conn
        if not _is_path(value):
            try:
                pool = conn.storagePoolLookupByName(value)
            except lv.libvirtError as exc:
                if exc.get_error_code() == lv.VIR_ERR_NO_STORAGE_POOL:
                    raise FatalDriverError(f"storage pool {value!r} ({setting}) does not exist on "
                                           f"{self.config['uri']}") from exc
                raise translate(exc, f"looking up pool {value}") from exc
        else:
            path = posixpath.normpath(value)
            pool = None
            with translated("listing storage pools"):
                for candidate in conn.listAllStoragePools():
                    target = X.parse(candidate.XMLDesc()).findtext("./target/path")
                    if target and posixpath.normpath(target) == path:
                        pool = candidate
                        break
            if pool is None:
                if not create:
                    raise FatalDriverError(f"{setting} directory {path} is not known to libvirt on "
                                           f"{self.config['uri']}")
                name = "hostbay-" + hashlib.sha1(path.encode()).hexdigest()[:12]
                with translated(f"defining a storage pool for {path}"):
                    try:
                        pool = conn.storagePoolLookupByName(name)
                    except lv.libvirtError:
                        try:
                            pool = conn.storagePoolDefineXML(X.dir_pool(name, path), 0)
                        except lv.libvirtError:  # another worker defined it in the meantime
                            pool = conn.storagePoolLookupByName(name)
                    if not pool.isActive():
                        pool.build(0)
                    pool.setAutostart(1)
        if not pool.isActive():
            with translated(f"starting storage pool {pool.name()}"):
                try:
                    pool.create(0)
                except lv.libvirtError as exc:
                    if not pool.isActive():  # started by another worker meanwhile is fine
                        raise FatalDriverError(f"storage pool {pool.name()} ({setting}) cannot start: "
                                               f"{exc.get_error_message()}") from exc
        return pool

    def _volume(self, pool, name: str):
        lv = libvirt()
        try:
            return pool.storageVolLookupByName(name)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise translate(exc, f"looking up volume {name}") from exc

    def _template(self, image: dict[str, Any]):
        """(path, format, virtual size) of the image's template; a missing template is fatal."""
        lv = libvirt()
        source = (image or {}).get("source") or ""
        if not source:
            raise FatalDriverError(f"image {image.get('name')!r} has no template (source) for the KVM driver")
        vol = None
        if _is_path(source):
            try:
                vol = self.conn.storageVolLookupByPath(source)
            except lv.libvirtError:
                vol = None
            if vol is None and _is_path(self.config["templates"]) and \
                    posixpath.dirname(posixpath.normpath(source)) == posixpath.normpath(self.config["templates"]):
                source = posixpath.basename(source)
        if vol is None and not _is_path(source):
            pool = self._pool("templates", create=True)
            vol = self._volume(pool, source)
            if vol is None:
                with translated("refreshing the template pool"):
                    pool.refresh(0)
                vol = self._volume(pool, source)
        if vol is None:
            where = ("it is not in a libvirt storage pool" if _is_path(source)
                     else f"not found in {self.config['templates']}")
            raise FatalDriverError(f"template {image.get('source')!r} of image {image.get('name')!r} was not found "
                                   f"on {self.config['uri']}: {where}")
        with translated("reading the template"):
            root = X.parse(vol.XMLDesc(0))
            fmt = root.find("./target/format")
            return vol.path(), (fmt.get("type") if fmt is not None else "raw"), vol.info()[1]

    # create ----------------------------------------------------------------------------------------------------
    def create(self, spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        name = self.domain_name(spec.uuid)
        progress(5, "Preparing the server")
        dom = self._lookup(name)
        if dom is not None:
            ref = self._ref_of(dom, spec.uuid)
            if self._state(dom) == PowerState.STOPPED:  # an earlier attempt did not start it: apply today's settings
                dom = self._redefine(dom, port_speed_mbit=spec.port_speed_mbit or 0)
            self._ensure_running(dom)
            progress(100, "Server is running")
            return ref
        virt_type = self.virt_type()
        pool = self._pool("storage", create=True)
        progress(15, "Creating the disk")
        disk_path = self._new_disk(pool, name, spec)
        progress(45, "Writing the first-boot configuration")
        seed_path = self._new_seed(pool, name, spec)
        port = self._nft_port(name)
        if not port:
            self._ensure_filters()
        progress(65, "Defining the server")
        xml = X.domain(name=name, service_uuid=spec.uuid, virt_type=virt_type, vcpus=spec.vcpus,
                       memory_mib=spec.memory_mib, disk_path=disk_path, seed_path=seed_path, mac=X.mac_for(spec.uuid),
                       net=self._network(), addresses=spec.addresses, port_speed_mbit=spec.port_speed_mbit,
                       shaping=self.config["shaping"] == "libvirt", cpu_mode=self.config["cpu_mode"], port=port)
        with translated(f"defining domain {name}"):
            dom = self.conn.defineXML(xml)
        progress(80, "Starting the server")
        self._ensure_running(dom)
        progress(100, "Server is running")
        return {"domain": name, "service": spec.uuid, "disk": disk_path}

    def _ref_of(self, dom, service_uuid: str) -> dict[str, Any]:
        with translated("reading the domain"):
            root = X.parse(dom.XMLDesc(libvirt().VIR_DOMAIN_XML_INACTIVE))
        return {"domain": dom.name(), "service": service_uuid, "disk": X.disk_source(root, X.DISK_TARGET)}

    def _network(self) -> X.Network:
        return X.Network(self.config["network"], self.config["bridge"])

    def _new_disk(self, pool, name: str, spec: ServerSpec) -> str:
        tpl_path, tpl_format, tpl_size = self._template(spec.image)
        size = spec.disk_gib * GIB
        if tpl_size > size:
            raise FatalDriverError(f"template {tpl_path} ({tpl_size} bytes) is larger than the {spec.disk_gib} GiB "
                                   f"disk of the package")
        vol_name = f"{name}-disk.qcow2"
        old = self._volume(pool, vol_name)
        if old is not None:  # left by an interrupted attempt or replaced by a reinstall: never reused
            with translated(f"removing {vol_name}"):
                old.delete(0)
        with translated(f"creating disk {vol_name}"):
            vol = pool.createXML(X.volume(vol_name, size, "qcow2", (tpl_path, tpl_format)), 0)
            return vol.path()

    def _new_seed(self, pool, name: str, spec: ServerSpec) -> str:
        instance_id = f"{spec.uuid}-{int(time.time() * 1000)}"
        data = seedmod.build_iso(seedmod.documents(spec, X.mac_for(spec.uuid), instance_id))
        vol_name = f"{name}-seed.iso"
        old = self._volume(pool, vol_name)
        if old is not None:
            with translated(f"removing {vol_name}"):
                old.delete(0)
        with translated(f"uploading seed {vol_name}"):
            vol = pool.createXML(X.volume(vol_name, len(data), "raw"), 0)
            stream = self.conn.newStream(0)
            vol.upload(stream, 0, len(data), 0)
            try:
                view = memoryview(data)
                for offset in range(0, len(data), 256 * 1024):
                    chunk = view[offset:offset + 256 * 1024]
                    while chunk:
                        sent = stream.send(bytes(chunk))
                        chunk = chunk[sent:]
                stream.finish()
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.abort()
                raise
            return vol.path()

    def _ensure_filters(self, fresh: bool = False) -> None:
        """Define hostbay's anti-spoofing filters on the host (``X.host_filters``) once per worker process and
        libvirt URI: each domain only passes parameters. Defining an unchanged filter is a no-op for libvirt (it
        re-instantiates the bindings that use a filter only when its rules change), so a new hostbay version's
        rules replace an older one's at its first use; an existing filter keeps its UUID."""
        key = (self.config["uri"], X.HOST_FILTERS_DIGEST)
        if key in _FILTERS_DEFINED and not fresh:
            return
        for xml in X.host_filters():
            self._define_filter(xml, retry=True)
        _FILTERS_DEFINED.add(key)

    def _define_filter(self, xml: str, retry: bool) -> None:
        lv = libvirt()
        root = X.parse(xml)
        fname = root.get("name")
        try:
            uuid = self.conn.nwfilterLookupByName(fname).UUIDString()
        except lv.libvirtError as exc:
            if exc.get_error_code() != lv.VIR_ERR_NO_NWFILTER:
                raise translate(exc, f"looking up nwfilter {fname}") from exc
            uuid = None
        if uuid:
            X.ET.SubElement(root, "uuid").text = uuid
        try:
            self.conn.nwfilterDefineXML(X.ET.tostring(root, encoding="unicode"))
        except lv.libvirtError as exc:
            if uuid or not retry:
                raise translate(exc, f"defining nwfilter {fname}") from exc
            self._define_filter(xml, retry=False)  # another worker defined it meanwhile: update it by its UUID

    # power -----------------------------------------------------------------------------------------------------
    def _state(self, dom) -> PowerState:
        lv = libvirt()
        try:
            state, _reason = dom.state()
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return PowerState.MISSING
            raise translate(exc, "reading the domain state") from exc
        if state in (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_BLOCKED, lv.VIR_DOMAIN_SHUTDOWN):
            return PowerState.RUNNING
        if state in (lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PMSUSPENDED):
            return PowerState.PAUSED
        if state in (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_CRASHED):
            return PowerState.STOPPED
        return PowerState.UNKNOWN

    def _ensure_running(self, dom, _refiltered: bool = False) -> None:
        lv = libvirt()
        state = self._state(dom)
        try:
            if state == PowerState.PAUSED:
                dom.resume()
            elif state != PowerState.RUNNING:
                self._nft_before_start(dom)
                dom.create()
        except lv.libvirtError as exc:
            message = exc.get_error_message() or ""
            if not _refiltered and "is missing" in message and any(
                    f"referenced filter '{X.parse(f).get('name')}'" in message for f in X.host_filters()):
                # removed from the host since this worker defined it: define it again, then start
                self._ensure_filters(fresh=True)
                return self._ensure_running(dom, _refiltered=True)
            if "tc " in message and ("qdisc" in message or "TC action" in message or "police" in message):
                raise FatalDriverError(
                    f"{dom.name()} cannot start: the host kernel cannot shape its port speed ({message.strip()}). "
                    f"Load the sch_htb, sch_sfq and act_police kernel modules on the host, or set the node's "
                    f"'Port speed enforcement' to off.") from exc
            raise translate(exc, f"starting {dom.name()}") from exc

    def _nft_before_start(self, dom) -> None:
        """A server on hostbay's nftables port: write its port's rules from the addresses in its definition before
        the tap exists (the ruleset does not survive a host reboot; each start writes it again)."""
        with nftmod.host_lock():
            with translated("reading the domain"):
                root = X.parse(dom.XMLDesc(libvirt().VIR_DOMAIN_XML_INACTIVE))
            port = X.nft_port(root)
            if port:
                iface = root.find("./devices/interface")
                self.nft.apply(port, iface.find("mac").get("address"), X.addresses(root))

    def resync_antispoof(self) -> int:
        """Write the chains of every running server of this node that is on hostbay's nftables port again, in one
        ``nft`` run (the scheduled ``kvm.antispoof_resync``): a ruleset emptied under running servers (``nft flush
        ruleset``, a restart of the host's ``nftables`` service, whose configuration starts with that) would
        otherwise leave their ports unfiltered until their next start. Returns how many ports were written."""
        if self.antispoof != "nftables":
            return 0
        lv = libvirt()
        ports = []
        with nftmod.host_lock(), translated("listing running domains"):
            for dom in self.conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if not dom.name().startswith(self.config["name_prefix"]):
                    continue
                try:
                    root = X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
                except lv.libvirtError:  # stopped and undefined meanwhile
                    continue
                port = X.nft_port(root)
                if port:
                    ports.append((port, root.find("./devices/interface/mac").get("address"), X.addresses(root)))
            if ports:
                self.nft.apply_many(ports)
        return len(ports)

    def status(self, ref: dict[str, Any]) -> PowerState:
        dom = self._lookup(ref.get("domain", ""))
        return PowerState.MISSING if dom is None else self._state(dom)

    def start(self, ref: dict[str, Any]) -> None:
        self._ensure_running(self._domain(ref))

    def stop(self, ref: dict[str, Any], timeout: float | None = None) -> None:
        self._stop(self._domain(ref), self.config["stop_timeout"] if timeout is None else timeout)

    def _stop(self, dom, timeout: float) -> None:
        lv = libvirt()
        if self._state(dom) in (PowerState.STOPPED, PowerState.MISSING):
            return
        if self._state(dom) == PowerState.PAUSED:
            with translated("powering off"):
                dom.destroy()
            return
        if timeout > 0:
            try:
                try:
                    dom.shutdownFlags(lv.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                except lv.libvirtError as exc:
                    if exc.get_error_code() not in (lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_NO_SUPPORT):
                        raise
                    dom.shutdown()  # a hypervisor without the ACPI flag picks its own (ACPI for QEMU sans agent)
            except lv.libvirtError as exc:
                if exc.get_error_code() != lv.VIR_ERR_OPERATION_INVALID:  # already shutting off
                    raise translate(exc, "sending the ACPI shutdown") from exc
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._state(dom) in (PowerState.STOPPED, PowerState.MISSING):
                    return
                time.sleep(0.2)
        try:
            dom.destroy()
        except lv.libvirtError as exc:
            if self._state(dom) not in (PowerState.STOPPED, PowerState.MISSING):
                raise translate(exc, "powering off") from exc

    def restart(self, ref: dict[str, Any]) -> None:
        lv = libvirt()
        dom = self._domain(ref)
        if self._state(dom) != PowerState.RUNNING:
            self._ensure_running(dom)
            return
        try:
            dom.reboot(lv.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        except lv.libvirtError:
            with translated("resetting"):
                dom.reset(0)

    def suspend(self, ref: dict[str, Any]) -> None:
        dom = self._domain(ref)
        if self._state(dom) == PowerState.RUNNING:
            with translated("pausing"):
                dom.suspend()

    def unsuspend(self, ref: dict[str, Any]) -> None:
        self._ensure_running(self._domain(ref))

    # disks -----------------------------------------------------------------------------------------------------
    def _redefine(self, dom, vcpus: int | None = None, memory_mib: int | None = None,
                  disk_path: str | None = None, seed_path: str | None = None, port_speed_mbit: int | None = None):
        lv = libvirt()
        with translated("reading the domain"):
            root = X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE))
        if vcpus is not None:
            X.set_shape(root, vcpus, memory_mib)
        if port_speed_mbit is not None:
            X.set_bandwidth(root, port_speed_mbit if self.config["shaping"] == "libvirt" else None)
        for target, path in ((X.DISK_TARGET, disk_path), (X.SEED_TARGET, seed_path)):
            if path:
                disk = X.find_disk(root, target)
                disk.find("source").set("file", path)
        with translated("updating the domain definition"):
            return self.conn.defineXML(X.to_string(root))

    def reinstall(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        return self._recreate(ref, spec, progress, "Reinstalling")

    def rebuild(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        return self._recreate(ref, spec, progress, "Rebuilding")

    def _recreate(self, ref, spec: ServerSpec, progress: Progress, verb: str) -> dict[str, Any]:
        dom = self._domain(ref)
        name = dom.name()
        progress(5, f"{verb}: stopping the server")
        self._stop(dom, 0)  # the disk is replaced: no point waiting for a clean shutdown
        pool = self._pool("storage", create=True)
        progress(30, f"{verb}: writing a fresh disk")
        disk_path = self._new_disk(pool, name, spec)
        progress(55, f"{verb}: writing the first-boot configuration")
        seed_path = self._new_seed(pool, name, spec)
        if self._nft_port(name) is None:
            self._ensure_filters()
        dom = self._redefine(dom, spec.vcpus, spec.memory_mib, disk_path, seed_path,
                             port_speed_mbit=spec.port_speed_mbit or 0)
        progress(80, f"{verb}: starting the server")
        self._ensure_running(dom)
        progress(100, "Server is running")
        return {**ref, "disk": disk_path}

    def resize(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        lv = libvirt()
        dom = self._domain(ref)
        disk_path = ref.get("disk")
        with translated("reading the domain"):
            root = X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
            disk_path = X.disk_source(root, X.DISK_TARGET) or disk_path
            vol = self.conn.storageVolLookupByPath(disk_path)
            current = vol.info()[1]
        new_size = spec.disk_gib * GIB
        if new_size < current:
            raise FatalDriverError(f"disk of {dom.name()} is {current} bytes; {new_size} would shrink it "
                                   f"(use rebuild)", customer_message="A disk cannot be made smaller this way.")
        was_running = self._state(dom) != PowerState.STOPPED
        progress(10, "Stopping the server")
        self._stop(dom, self.config["stop_timeout"])
        progress(40, "Applying the new resources")
        dom = self._redefine(dom, spec.vcpus, spec.memory_mib, port_speed_mbit=spec.port_speed_mbit or 0)
        if new_size > current:
            progress(60, "Growing the disk")
            with translated("growing the disk"):
                vol.resize(new_size, 0)
        if was_running:
            progress(85, "Starting the server")
            self._ensure_running(dom)
        progress(100, "Resize complete")
        return {**ref, "disk": disk_path}

    # ISO -------------------------------------------------------------------------------------------------------
    def _set_iso(self, ref, iso_path: str | None) -> None:
        lv = libvirt()
        dom = self._domain(ref)
        flags = lv.VIR_DOMAIN_AFFECT_CONFIG
        if self._state(dom) in (PowerState.RUNNING, PowerState.PAUSED):
            flags |= lv.VIR_DOMAIN_AFFECT_LIVE
        xml = X.ET.tostring(X.cdrom(X.ISO_TARGET, iso_path, boot_order=1), encoding="unicode")
        for attempt in range(len(TRAY_RETRY_SECONDS) + 1):
            try:
                dom.updateDeviceFlags(xml, flags)
                return
            except lv.libvirtError as exc:
                if _tray_not_open_yet(exc):
                    # libvirt opens the CD-ROM tray and waits for QEMU's event; on a busy host the event can come
                    # after libvirt gave up, and QEMU then refuses to swap the medium: the tray is opening, try again
                    if attempt < len(TRAY_RETRY_SECONDS):
                        time.sleep(TRAY_RETRY_SECONDS[attempt])
                        continue
                    raise TransientDriverError(f"libvirt: changing the CD-ROM: {exc.get_error_message()}",
                                               customer_message="The ISO image could not be changed yet; we try "
                                                                "again shortly.") from exc
                err = translate(exc, "changing the CD-ROM")
                if iso_path and isinstance(err, FatalDriverError):
                    err.customer_message = "The ISO image could not be inserted. Our staff have been notified."
                raise err from exc

    def mount_iso(self, ref: dict[str, Any], iso_path: str) -> None:
        if not iso_path or not _is_path(iso_path):
            raise FatalDriverError(f"ISO path {iso_path!r} is not an absolute path on the host")
        self._set_iso(ref, iso_path)

    def eject_iso(self, ref: dict[str, Any]) -> None:
        self._set_iso(ref, None)

    def mounted_iso(self, ref: dict[str, Any]) -> str | None:
        dom = self._domain(ref)
        with translated("reading the domain"):
            return X.disk_source(X.parse(dom.XMLDesc(0)), X.ISO_TARGET)

    # console ---------------------------------------------------------------------------------------------------
    def console_target(self, ref: dict[str, Any]) -> ConsoleTarget:
        dom = self._domain(ref)
        if self._state(dom) != PowerState.RUNNING:
            raise FatalDriverError(f"{dom.name()} is not running", customer_message=NOT_RUNNING)
        with translated("reading the console port"):
            port, websocket = X.vnc_ports(X.parse(dom.XMLDesc(0)))
        if port <= 0:
            raise TransientDriverError(f"{dom.name()} has no VNC port yet")
        return ConsoleTarget(host="127.0.0.1", port=port, protocol="vnc", extra={"websocket_port": websocket})

    # delete ----------------------------------------------------------------------------------------------------
    # move ------------------------------------------------------------------------------------------------------
    def move(self, ref: dict[str, Any], spec: ServerSpec, target: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Move the server to the node ``target`` (another libvirt URI, or the same libvirtd with another storage
        directory and name prefix). The server is shut down cleanly (powered off after ``stop_timeout``), its disk
        and seed volumes are copied into the target's storage (``virStorageVolCreateXMLFrom`` on the same libvirtd,
        which also flattens the disk off its template; a download/upload stream pair across hosts, which keeps the
        template as backing file, so the target needs the same template path), the domain is defined on the target
        with the copied volumes, started, and then removed from the source with its volumes.

        Idempotent: each retry looks at both sides first. Source gone and target defined: finish (start it, remove
        leftover source volumes). Target defined and running while the source still exists: remove the source.
        Otherwise the copy starts over from the (stopped) source. At the end one domain exists, on the target."""
        other = type(self)(target)
        name, tname = ref.get("domain", ""), other.domain_name(spec.uuid)
        if self.config["uri"] == other.config["uri"] and name == tname:
            raise FatalDriverError(f"the target node names its domains like the source ({tname} on "
                                   f"{other.config['uri']}): it is the same place")
        src, dst = self._lookup(name) if name else None, other._lookup(tname)
        if src is None and dst is None:
            raise FatalDriverError(f"domain {name!r} is on neither {self.config['uri']} nor {other.config['uri']}",
                                   customer_message="This server no longer exists on its host. Our staff have "
                                                    "been notified.")
        if dst is not None and (src is None or other._state(dst) == PowerState.RUNNING):
            progress(85, "Starting the server on its new host")
            other._ensure_running(dst)
            progress(95, "Cleaning up the old host")
            self.delete({**ref, "domain": name})
            progress(100, "Server is running")
            return other._ref_of(dst, spec.uuid)
        progress(5, "Stopping the server")
        self._stop(src, self.config["stop_timeout"])
        lv = libvirt()
        with translated("reading the domain"):
            root = X.parse(src.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE))
        if dst is not None:  # an earlier attempt defined it but did not finish: define it again from the source
            with translated(f"undefining the unfinished {tname}"):
                dst.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM | lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        pool = other._pool("storage", create=True)
        for target_dev, suffix, pct in ((X.DISK_TARGET, "disk.qcow2", 20), (X.SEED_TARGET, "seed.iso", 70)):
            disk = X.find_disk(root, target_dev)
            path = X.disk_source(root, target_dev)
            if disk is None or not path:
                continue
            progress(pct, "Copying the disk" if target_dev == X.DISK_TARGET else "Copying the configuration")
            with translated(f"finding volume {path}"):
                vol = self.conn.storageVolLookupByPath(path)
            disk.find("source").set("file", other._copy_volume(vol, pool, f"{tname}-{suffix}", self))
        root.find("name").text = tname
        uuid_el = root.find("uuid")
        if uuid_el is not None:  # libvirt gives the new domain its own UUID (both may live on one libvirtd)
            root.remove(uuid_el)
        port = other._nft_port(tname)
        for iface in root.iterfind("./devices/interface"):  # the target host's filter, and its tap name
            X.set_antispoof(iface, spec.addresses, port)
        X.set_addresses(root, spec.addresses)
        progress(80, "Defining the server on its new host")
        if not port:
            other._ensure_filters()
        with translated(f"defining domain {tname}"):
            dst = other.conn.defineXML(X.to_string(root))
        progress(85, "Starting the server on its new host")
        other._ensure_running(dst)
        progress(95, "Cleaning up the old host")
        self.delete({**ref, "domain": name})
        progress(100, "Server is running")
        return other._ref_of(dst, spec.uuid)

    def _copy_volume(self, vol, pool, vol_name: str, source: "KvmDriver") -> str:
        """Copy ``vol`` (of ``source``'s libvirtd) into ``pool`` (of this driver's) as ``vol_name``; an older copy
        of that name (an interrupted attempt) is replaced. Returns the new volume's path."""
        lv = libvirt()
        with translated("reading the volume"):
            vroot = X.parse(vol.XMLDesc(0))
            fmt_el = vroot.find("./target/format")
            fmt = fmt_el.get("type") if fmt_el is not None else "raw"
            capacity = vol.info()[1]
        old = self._volume(pool, vol_name)
        if old is not None:
            with translated(f"removing {vol_name}"):
                old.delete(0)
        if source.conn is self.conn:
            with translated(f"copying {vol.name()} to {vol_name}"):
                return pool.createXMLFrom(X.volume(vol_name, capacity, fmt), vol, 0).path()
        backing = vroot.find("./backingStore/path")
        bfmt = vroot.find("./backingStore/format")
        with translated(f"copying {vol.name()} to {vol_name} over streams"):
            new = pool.createXML(X.volume(vol_name, capacity, fmt, (backing.text, bfmt.get("type") if bfmt is not
                                                                     None else "raw") if backing is not None
                                          else None), 0)
            down, up = source.conn.newStream(0), self.conn.newStream(0)
            vol.download(down, 0, 0, 0)
            new.upload(up, 0, 0, 0)
            try:
                while True:
                    chunk = down.recv(256 * 1024)
                    if chunk in (-2, None) or not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        sent = up.send(bytes(view))
                        view = view[sent:]
                down.finish()
                up.finish()
            except BaseException:
                for stream in (down, up):
                    with contextlib.suppress(Exception):
                        stream.abort()
                raise
            return new.path()

    def owned_volumes(self, name: str) -> list:
        """Every volume in the storage pool this driver created for the domain ``name``."""
        pool = self._pool("storage", create=True)
        with translated("listing volumes"):
            pool.refresh(0)
            return [v for v in pool.listAllVolumes(0) if v.name().startswith(f"{name}-")]

    def delete(self, ref: dict[str, Any]) -> None:
        lv = libvirt()
        name = ref.get("domain", "")
        if not name:
            raise FatalDriverError(f"reference {ref!r} names no domain")
        dom = self._lookup(name)
        port = self._nft_port(name)
        if dom is not None:
            with translated("reading the domain"):
                port = X.nft_port(X.parse(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))) or port
            if self._state(dom) != PowerState.STOPPED:
                self._stop(dom, 0)
            flags = (lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | lv.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(lv, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0))
            try:
                dom.undefineFlags(flags)
            except lv.libvirtError as exc:
                if exc.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                    raise translate(exc, f"undefining {name}") from exc
        for vol in self.owned_volumes(name):
            try:
                vol.delete(0)
            except lv.libvirtError as exc:
                if exc.get_error_code() != lv.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(exc, f"deleting volume {vol.name()}") from exc
        if port:  # after the domain is gone: a retry after a failure here finds no domain and still removes it
            with nftmod.host_lock():
                self.nft.remove(port)

    # admin -----------------------------------------------------------------------------------------------------
    def validate(self) -> str:
        """Test connection: the pools exist, the anti-spoofing filters are defined, and a probe guest runs under
        the configured ``virt_type`` (``auto`` probes KVM and falls back to QEMU emulation). Returns what was
        chosen and why; raises when nothing runs."""
        self._pool("storage", create=True)
        self._pool("templates", create=True)
        if self.antispoof == "nftables":
            self.nft.ensure()
        else:
            self._ensure_filters(fresh=True)
        with translated("reading host capabilities"):
            caps = X.parse(self.conn.getCapabilities())
        types = {d.get("type") for d in caps.iterfind("./guest/arch[@name='x86_64']/domain")}
        wanted = self.config["virt_type"]
        if wanted == "auto":
            chosen, why = self._auto_choice(types, fresh=True)
        else:
            chosen, why = self.virt_type(), f"virt_type is set to {wanted}"
        note = network_protection_note(self.config, self.antispoof)
        if chosen == "kvm" and wanted == "auto":
            return why + note
        result = self.probe(chosen)
        if not result.ok:
            raise FatalDriverError(f"this node cannot run guests: {why}; {result.summary}")
        return (why if wanted == "auto" else f"{why}: {result.summary}") + note


TRAY_RETRY_SECONDS = (0.5, 1.0, 2.0)


def is_local_uri(uri: str) -> bool:
    """A libvirt URI of this machine (``qemu:///system``): no host part."""
    parts = urlsplit(uri)
    return parts.scheme.startswith("qemu") and "+" not in parts.scheme and not parts.netloc


def network_protection_note(config, antispoof: str = "nwfilter") -> str:
    """What Test connection adds about anti-spoofing: hostbay's nftables rules cover bridged and routed ports;
    libvirt's nwfilter acts on bridged ports only (``bridge``, ``network``), so on a routed tap (``ethernet``) no
    rule ever sees the guest's frames, and staff are told instead of being left to believe the servers are
    filtered."""
    if antispoof == "nftables":
        return (f"; anti-spoofing: hostbay's nftables table {nftmod.TABLE} on this host (bridged and routed "
                f"ports)")
    if config.get("network") == "ethernet":
        return ("; warning: network mode 'ethernet' (routed tap) is not filtered against spoofing by libvirt, whose "
                "filters act on bridged ports only: use 'bridge' or 'network', or stop foreign source addresses in "
                "the host's routing (strict reverse-path filtering with a route per server address)")
    return ""


def _tray_not_open_yet(exc) -> bool:
    """QEMU's "Tray of device … is not open": the tray is still opening (a race, not a lasting fault)."""
    return "Tray of device" in (exc.get_error_message() or "") and "is not open" in (exc.get_error_message() or "")


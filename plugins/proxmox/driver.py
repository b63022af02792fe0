"""ProxmoxDriver: virtual servers on a Proxmox VE node, cloned from a cloud-init template.

A server is a QEMU guest with a VMID reserved in hostbay's database inside the node's ``vmid_min``..``vmid_max``
(``hostbay.core.numbering``, scope = the cluster's API URL, owner = the service UUID), so concurrent orders never
race on ``/cluster/nextid`` and a retried job finds the VMID it used before. Its description carries
``hostbay-service:<uuid>``; a VMID that Proxmox reports as used by a guest without that marker is recorded as
foreign and the next free one is taken.

Provisioning: clone the template (``full`` per setting) → wait for the task → configure cores, memory, name,
cloud-init user, SSH keys (percent-encoded with ``%20``), ``ipconfig0``/``nameserver``, ``net0`` with bridge,
``firewall=1``, ``rate=`` (MB/s from the port speed) and the guest's MAC → grow the system disk to the package
size → firewall ipset ``ipfilter-net0`` with the allocated addresses and options ``enable=1, ipfilter=1`` → start →
wait until running. Each step is idempotent; a retry after a crash between any two calls finishes the same guest.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import quote

from hostbay.core.drivers import (Address, ConsoleTarget, PowerState, Progress, ServerSpec, Setting, VirtDriver)
from hostbay.core.errors import FatalDriverError, SettingsError, TransientDriverError

from .client import PveClient, PveError, host_port, split_token

MARKER = "hostbay-service:"
IPSET = "ipfilter-net0"
NOT_RUNNING = "The server is not running."
GONE = "This server no longer exists on its host. Our staff have been notified."
DISK_KEYS = ("scsi0", "virtio0", "sata0", "ide0")


def _size_gib(disk: str) -> float:
    m = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", disk or "")
    if not m:
        return 0.0
    return float(m.group(1)) * {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024 ** 3}[m.group(2)]


def _mac_of(net: str) -> str | None:
    m = re.search(r"(?:virtio|e1000|rtl8139|vmxnet3)=([0-9A-Fa-f:]{17})", net or "")
    return m.group(1).upper() if m else None


def iso_filename(iso_path: str) -> str:
    """The name an ISO gets on the ISO storage: ``hostbay-`` + hostbay's stored (random) file name."""
    base = os.path.basename(iso_path)
    return base if base.startswith("hostbay-") else f"hostbay-{base}"


class ProxmoxDriver(VirtDriver):
    name = "proxmox"
    label = "Proxmox VE"
    settings = [
        Setting("api_url", "API URL", type="url", help="https://pve1.example.net:8006 (any node of the cluster)."),
        Setting("token_id", "API token ID", help="user@realm!name, e.g. hostbay@pve!hosting (see docs/proxmox.md "
                                                  "for the role it needs)."),
        Setting("token_secret", "API token secret", type="secret", help="The token's UUID secret."),
        Setting("verify_tls", "Verify the TLS certificate", type="bool", default=True,
                help="Leave on. Use the CA bundle below for Proxmox's self-signed certificate."),
        Setting("ca_bundle", "CA bundle", required=False, default=None,
                help="Path of a PEM file with the CA that signed the API certificate (/etc/pve/pve-root-ca.pem "
                     "copied to each worker)."),
        Setting("node", "Proxmox node name", help="The PVE node this hostbay node places guests on (pvecm nodes)."),
        Setting("storage", "Disk storage", help="Storage for guest disks (e.g. local-lvm, ceph-vm)."),
        Setting("iso_storage", "ISO storage", default="local", help="Storage with content type ISO image."),
        Setting("bridge", "Bridge", default="vmbr0", help="The bridge the guest's net0 joins."),
        Setting("vmid_min", "Lowest VMID", type="int", default=10000,
                help="hostbay reserves VMIDs in vmid_min..vmid_max; keep the range free of other guests."),
        Setting("vmid_max", "Highest VMID", type="int", default=19999),
        Setting("full_clone", "Full clone", type="bool", default=True,
                help="Full copy of the template (independent of it); off: a linked clone (the template stays "
                     "needed and the storage must support it)."),
        Setting("timeout", "Seconds per API call", type="int", default=30,
                help="A call without an answer within this time is retried later."),
        Setting("task_timeout", "Seconds per task", type="int", default=900,
                help="A clone, resize, start, stop or upload task still running after this is checked again "
                     "when the job is retried."),
        Setting("ciuser", "cloud-init user", default="root", help="The user cloud-init gives the SSH keys."),
        Setting("stop_timeout", "Seconds to wait for a clean shutdown", type="int", default=60,
                help="After this the guest is stopped."),
    ]
    capabilities = frozenset({"resize", "rebuild", "iso", "console", "suspend", "move"})

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        errors = {}
        try:
            host_port(cfg["api_url"])
        except ValueError as exc:
            errors["api_url"] = f"API URL {exc}"
        try:
            split_token(cfg["token_id"])
        except ValueError as exc:
            errors["token_id"] = f"API token ID {exc}"
        if not 100 <= cfg["vmid_min"] <= cfg["vmid_max"] <= 999999999:
            errors["vmid_max"] = "VMID range must satisfy 100 <= lowest <= highest <= 999999999"
        if cfg["timeout"] <= 0:
            errors["timeout"] = "Seconds per API call must be positive"
        if cfg["ca_bundle"] and not os.path.isabs(cfg["ca_bundle"]):
            errors["ca_bundle"] = "CA bundle must be an absolute path"
        if errors:
            raise SettingsError(errors)
        self._client: PveClient | None = None

    # -- plumbing -------------------------------------------------------------------------------------------
    @property
    def verify(self):
        if not self.config["verify_tls"]:
            return False
        return self.config["ca_bundle"] or True

    @property
    def pve(self) -> PveClient:
        if self._client is None:
            self._client = PveClient(self.config["api_url"], self.config["token_id"], self.config["token_secret"],
                                     self.verify, float(self.config["timeout"]))
        return self._client

    @property
    def node(self) -> str:
        return self.config["node"]

    @property
    def scope(self) -> str:
        host, port = host_port(self.config["api_url"])
        return f"proxmox:{host}:{port}"

    def _vm_path(self, ref_or_vmid, node: str | None = None) -> str:
        if isinstance(ref_or_vmid, dict):
            node, vmid = ref_or_vmid.get("node") or self.node, ref_or_vmid["vmid"]
        else:
            vmid = ref_or_vmid
        return f"nodes/{node or self.node}/qemu/{int(vmid)}"

    def _wait(self, upid, what: str) -> None:
        self.pve.wait(upid, what, float(self.config["task_timeout"]))

    def _numbering(self):
        try:
            from flask import has_app_context

            from hostbay.core import numbering
        except ImportError:  # pragma: no cover
            raise FatalDriverError("hostbay core is not importable") from None
        if not has_app_context():
            raise FatalDriverError("the Proxmox driver reserves VMIDs in hostbay's database: call it inside "
                                   "the hostbay application (a job or a request)")
        return numbering

    def _vms(self) -> dict[int, dict]:
        return {int(r["vmid"]): r for r in self.pve.get("cluster/resources", type="vm") or []
                if r.get("type") == "qemu"}

    def _config(self, ref) -> dict | None:
        try:
            return self.pve.get(f"{self._vm_path(ref)}/config")
        except PveError as exc:
            if exc.status == 500 and "does not exist" in str(exc):
                return None
            raise

    def _exists(self, ref) -> dict:
        cfg = self._config(ref)
        if cfg is None:
            raise FatalDriverError(f"VM {ref.get('vmid')} does not exist on node {ref.get('node')}",
                                   customer_message=GONE)
        return cfg

    # -- create ---------------------------------------------------------------------------------------------
    def _template(self, image: dict, vms: dict) -> tuple[int, str]:
        source = str((image or {}).get("source") or "").strip()
        if not source.isdigit():
            raise FatalDriverError(f"image {image.get('name')!r} needs the template's VMID as its source for the "
                                   f"Proxmox driver (got {source!r})")
        vmid = int(source)
        found = vms.get(vmid)
        if found is None:
            raise FatalDriverError(f"template VM {vmid} of image {image.get('name')!r} was not found in the "
                                   f"cluster at {self.config['api_url']}")
        if not found.get("template"):
            raise FatalDriverError(f"VM {vmid} (image {image.get('name')!r}) is not a template")
        return vmid, found["node"]

    def _claim_vmid(self, spec: ServerSpec, progress: Progress) -> tuple[int, dict | None, dict]:
        """(vmid, existing config or None, the cluster's guests). The VMID is reserved (durably) before anything
        is created."""
        numbering = self._numbering()
        for _ in range(100):
            vmid = numbering.reserve(self.scope, self.config["vmid_min"], self.config["vmid_max"], spec.uuid)
            vms = self._vms()
            if vmid not in vms:
                return vmid, None, vms
            where = vms[vmid]["node"]
            cfg = self.pve.get(f"nodes/{where}/qemu/{vmid}/config")
            if f"{MARKER}{spec.uuid}" in (cfg.get("description") or ""):
                if where != self.node:
                    raise FatalDriverError(f"VM {vmid} of service {spec.uuid} is on node {where}, not {self.node}")
                return vmid, cfg, vms
            numbering.mark_foreign(self.scope, vmid, spec.uuid)  # someone else's guest: take the next VMID
        raise FatalDriverError(f"no free VMID in {self.config['vmid_min']}..{self.config['vmid_max']}")

    def create(self, spec: ServerSpec, progress: Progress, mac: str | None = None) -> dict[str, Any]:
        progress(5, "Preparing the server")
        for _ in range(20):
            vmid, cfg, vms = self._claim_vmid(spec, progress)
            ref = {"vmid": vmid, "node": self.node, "service": spec.uuid}
            fresh = cfg is None
            if fresh:
                progress(10, "Copying the system image")
                template, tnode = self._template(spec.image, vms)
                params = {"newid": vmid, "name": self._name(spec), "full": int(bool(self.config["full_clone"])),
                          "description": f"{MARKER}{spec.uuid}"}
                if self.config["full_clone"]:
                    params["storage"] = self.config["storage"]
                if tnode != self.node:
                    params["target"] = self.node
                try:
                    upid = self.pve.post(f"nodes/{tnode}/qemu/{template}/clone", **params)
                except PveError as exc:
                    if "already exists" not in str(exc):
                        raise
                    # a guest appeared under this VMID since we looked (or an earlier attempt's clone did)
                    cfg = self._config(ref)
                    if cfg is None or f"{MARKER}{spec.uuid}" not in (cfg.get("description") or ""):
                        self._numbering().mark_foreign(self.scope, vmid, spec.uuid)
                        continue  # someone else's: the next VMID
                    cfg = self._wait_unlocked(ref, cfg)
                    return self._finish(ref, cfg, spec, progress, mac)
                self._wait(upid, f"cloning template {template} to VM {vmid}")
                cfg = self._exists(ref)
            else:
                cfg = self._wait_unlocked(ref, cfg)
            return self._finish(ref, cfg, spec, progress, mac, fresh)
        raise TransientDriverError(f"VMIDs kept being taken while creating service {spec.uuid}")

    def _wait_unlocked(self, ref, cfg: dict) -> dict:
        """A guest left by an interrupted attempt may still be cloning: wait for its lock to go."""
        deadline = time.monotonic() + float(self.config["task_timeout"])
        while cfg.get("lock") == "clone":
            if time.monotonic() > deadline:
                raise TransientDriverError(f"VM {ref['vmid']} is still being cloned")
            time.sleep(0.1)
            cfg = self._exists(ref)
        return cfg

    def _name(self, spec: ServerSpec) -> str:
        name = re.sub(r"[^A-Za-z0-9.-]", "-", spec.hostname or "").strip("-.")[:63]
        return name or f"vm-{spec.uuid[:8]}"

    def _net0(self, mac: str | None, port_speed_mbit: int | None) -> str:
        net = f"virtio={mac}," if mac else "virtio,"
        net += f"bridge={self.config['bridge']},firewall=1"
        if port_speed_mbit:
            rate = port_speed_mbit / 8
            net += f",rate={rate:g}"
        return net

    def _settings_for(self, spec: ServerSpec, mac: str | None) -> dict[str, Any]:
        v4 = [a for a in spec.addresses if a.version == 4]
        v6 = [a for a in spec.addresses if a.version == 6]
        ip = []
        if v4:
            ip.append(f"ip={v4[0].address}/{v4[0].prefix}" + (f",gw={v4[0].gateway}" if v4[0].gateway else ""))
        if v6:
            ip.append(f"ip6={v6[0].address}/{v6[0].prefix}" + (f",gw6={v6[0].gateway}" if v6[0].gateway else ""))
        params: dict[str, Any] = {
            "cores": spec.vcpus, "memory": spec.memory_mib, "name": self._name(spec),
            "ciuser": self.config["ciuser"], "net0": self._net0(mac, spec.port_speed_mbit),
            "ipconfig0": ",".join(ip) or "ip=dhcp",
            "description": f"{MARKER}{spec.uuid}",
        }
        if spec.ssh_keys:
            params["sshkeys"] = quote("\n".join(spec.ssh_keys), safe="")
        if spec.nameservers:
            params["nameserver"] = " ".join(spec.nameservers)
        if spec.root_password:
            params["cipassword"] = spec.root_password
        return params

    def _disk_key(self, cfg: dict) -> str:
        boot = re.search(r"order=([^;,\s]+)", cfg.get("boot") or "")
        for key in ((boot.group(1),) if boot else ()) + DISK_KEYS:
            if key in cfg and "media=cdrom" not in cfg[key]:
                return key
        raise FatalDriverError(f"VM has no system disk among {', '.join(DISK_KEYS)}")

    def _grow(self, ref, cfg: dict, disk_gib: int) -> None:
        key = self._disk_key(cfg)
        current = _size_gib(cfg[key])
        if current > disk_gib + 1e-9:
            raise FatalDriverError(f"the template's disk ({current:g} GiB) is larger than the package's "
                                   f"{disk_gib} GiB", customer_message="This system image does not fit the "
                                   "package's disk.")
        if current < disk_gib:
            upid = self.pve.put(f"{self._vm_path(ref)}/resize", disk=key, size=f"{disk_gib}G")
            self._wait(upid, f"growing the disk of VM {ref['vmid']}")

    def _status(self, ref) -> PowerState:
        try:
            cur = self.pve.get(f"{self._vm_path(ref)}/status/current")
        except PveError as exc:
            if exc.status == 500 and "does not exist" in str(exc):
                return PowerState.MISSING
            raise
        if cur.get("qmpstatus") in ("paused", "suspended", "prelaunch"):
            return PowerState.PAUSED
        return {"running": PowerState.RUNNING, "stopped": PowerState.STOPPED}.get(cur.get("status"),
                                                                                   PowerState.UNKNOWN)

    def _finish(self, ref, cfg: dict, spec: ServerSpec, progress: Progress, mac: str | None,
                fresh: bool = False) -> dict:
        state = PowerState.STOPPED if fresh else self._status(ref)  # a clone we just made is stopped
        if state != PowerState.RUNNING:  # configured before the first start; a running guest was done before
            progress(40, "Applying your settings")
            mac = mac or _mac_of(cfg.get("net0", ""))
            self.pve.put(f"{self._vm_path(ref)}/config", **self._settings_for(spec, mac))
            progress(55, "Sizing the disk")
            self._grow(ref, cfg, spec.disk_gib)
            progress(70, "Applying network protection")
            apply_filter(self, ref, list(spec.addresses))
            progress(80, "Starting the server")
            self._ensure_running(ref, known=state)
        progress(100, "Server is running")
        return ref

    def _ensure_running(self, ref, known: PowerState | None = None) -> None:
        state = known or self._status(ref)
        if state == PowerState.MISSING:
            raise FatalDriverError(f"VM {ref['vmid']} does not exist", customer_message=GONE)
        if state == PowerState.PAUSED:
            self._wait(self.pve.post(f"{self._vm_path(ref)}/status/resume"), f"resuming VM {ref['vmid']}")
        elif state != PowerState.RUNNING:
            self._wait(self.pve.post(f"{self._vm_path(ref)}/status/start"), f"starting VM {ref['vmid']}")
        deadline = time.monotonic() + float(self.config["task_timeout"])
        while self._status(ref) != PowerState.RUNNING:
            if time.monotonic() > deadline:
                raise TransientDriverError(f"VM {ref['vmid']} did not reach running")
            time.sleep(0.1)

    # -- power ----------------------------------------------------------------------------------------------
    def status(self, ref: dict[str, Any]) -> PowerState:
        return self._status(ref)

    def start(self, ref: dict[str, Any]) -> None:
        self._ensure_running(ref)

    def stop(self, ref: dict[str, Any], timeout: float | None = None) -> None:
        timeout = self.config["stop_timeout"] if timeout is None else timeout
        state = self._status(ref)
        if state in (PowerState.STOPPED, PowerState.MISSING):
            return
        path = self._vm_path(ref)
        if timeout > 0 and state == PowerState.RUNNING:
            try:
                self._wait(self.pve.post(f"{path}/status/shutdown", timeout=int(timeout)),
                           f"shutting down VM {ref['vmid']}")
            except (PveError, TransientDriverError):
                pass  # no clean shutdown in time: stop it below
            if self._status(ref) in (PowerState.STOPPED, PowerState.MISSING):
                return
        self._wait(self.pve.post(f"{path}/status/stop"), f"stopping VM {ref['vmid']}")

    def restart(self, ref: dict[str, Any]) -> None:
        if self._status(ref) != PowerState.RUNNING:
            self._ensure_running(ref)
            return
        self._wait(self.pve.post(f"{self._vm_path(ref)}/status/reboot"), f"rebooting VM {ref['vmid']}")

    def suspend(self, ref: dict[str, Any]) -> None:
        if self._status(ref) == PowerState.RUNNING:
            self._wait(self.pve.post(f"{self._vm_path(ref)}/status/suspend"), f"pausing VM {ref['vmid']}")

    def unsuspend(self, ref: dict[str, Any]) -> None:
        self._ensure_running(ref)

    # -- reinstall / rebuild / resize -----------------------------------------------------------------------
    def reinstall(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        return self._recreate(ref, spec, progress, "Reinstalling")

    def rebuild(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        return self._recreate(ref, spec, progress, "Rebuilding")

    def _recreate(self, ref, spec: ServerSpec, progress: Progress, verb: str) -> dict[str, Any]:
        """A fresh guest from the template under the same VMID, with the same MAC, keys and addresses."""
        cfg = self._config(ref)
        if cfg is None and not self._interrupted_recreate(ref):
            raise FatalDriverError(f"VM {ref.get('vmid')} does not exist on node {ref.get('node')}",
                                   customer_message=GONE)
        mac = _mac_of(cfg.get("net0", "")) if cfg else ref.get("mac")
        if cfg is not None:
            progress(5, f"{verb}: stopping the server")
            self.stop(ref, timeout=0)
            progress(20, f"{verb}: removing the old disk")
            self._destroy(ref)
        return self.create(spec, lambda pct, text: progress(30 + pct * 70 // 100, text), mac=mac)

    def _interrupted_recreate(self, ref) -> bool:
        """A guest that is gone while its service still holds its VMID was destroyed by a reinstall or rebuild
        that did not get to clone it again: the retry finishes it. Without the reservation (deleted, or never
        made by hostbay) the server is missing."""
        if not ref.get("service") or "vmid" not in ref:
            return False
        return self._numbering().lookup(self.scope, ref["service"]) == int(ref["vmid"])

    def resize(self, ref: dict[str, Any], spec: ServerSpec, progress: Progress) -> dict[str, Any]:
        cfg = self._exists(ref)
        key = self._disk_key(cfg)
        current = _size_gib(cfg[key])
        if spec.disk_gib < current - 1e-9:
            raise FatalDriverError(f"disk of VM {ref['vmid']} is {current:g} GiB; {spec.disk_gib} would shrink it "
                                   f"(use rebuild)", customer_message="A disk cannot be made smaller this way.")
        was_running = self._status(ref) != PowerState.STOPPED
        progress(10, "Stopping the server")
        self.stop(ref)
        progress(40, "Applying the new resources")
        self.pve.put(f"{self._vm_path(ref)}/config", cores=spec.vcpus, memory=spec.memory_mib,
                     net0=self._net0(_mac_of(cfg.get("net0", "")), spec.port_speed_mbit))
        if spec.disk_gib > current:
            progress(60, "Growing the disk")
            self._grow(ref, cfg, spec.disk_gib)
        if was_running:
            progress(85, "Starting the server")
            self._ensure_running(ref)
        progress(100, "Resize complete")
        return ref

    # -- ISO ------------------------------------------------------------------------------------------------
    def _iso_volumes(self) -> set[str]:
        st = self.config["iso_storage"]
        return {c["volid"] for c in self.pve.get(f"nodes/{self.node}/storage/{st}/content", content="iso") or []}

    def mount_iso(self, ref: dict[str, Any], iso_path: str) -> None:
        if not iso_path or not os.path.isfile(iso_path):
            raise FatalDriverError(f"ISO file {iso_path!r} is not readable on this worker")
        self._exists(ref)
        st = self.config["iso_storage"]
        name = iso_filename(iso_path)
        volid = f"{st}:iso/{name}"
        if volid not in self._iso_volumes():
            upid = self.pve.upload(self.node, st, iso_path, name, "iso", size=os.path.getsize(iso_path))
            self._wait(upid, f"uploading {name} to {st}")
        self.pve.put(f"{self._vm_path(ref)}/config", ide2=f"{volid},media=cdrom", boot="order=ide2;scsi0")

    def eject_iso(self, ref: dict[str, Any]) -> None:
        cfg = self._exists(ref)
        disk = self._disk_key({k: v for k, v in cfg.items() if k != "ide2"})
        self.pve.put(f"{self._vm_path(ref)}/config", ide2="none,media=cdrom", boot=f"order={disk}")

    def mounted_iso(self, ref: dict[str, Any]) -> str | None:
        ide2 = (self._exists(ref).get("ide2") or "").split(",")[0]
        return None if ide2 in ("", "none", "cdrom") else ide2

    def remove_iso(self, iso_path: str) -> bool:
        """Delete the uploaded copy of ``iso_path`` from the ISO storage (no error when it is not there)."""
        st = self.config["iso_storage"]
        volid = f"{st}:iso/{iso_filename(iso_path)}"
        if volid not in self._iso_volumes():
            return False
        self._wait(self.pve.delete(f"nodes/{self.node}/storage/{st}/content/{quote(volid, safe='')}"), f"removing {volid}")
        return True

    # -- console --------------------------------------------------------------------------------------------
    def console_target(self, ref: dict[str, Any]) -> ConsoleTarget:
        if self._status(ref) != PowerState.RUNNING:
            raise FatalDriverError(f"VM {ref['vmid']} is not running", customer_message=NOT_RUNNING)
        proxy = self.pve.post(f"{self._vm_path(ref)}/vncproxy", websocket=1)
        ticket = proxy["ticket"]
        password = proxy.get("password") or ticket.split(":", 1)[0]
        query = f"port={int(proxy['port'])}&vncticket={quote(ticket, safe='')}"
        host, port = host_port(self.config["api_url"])
        return ConsoleTarget(host=host, port=port, protocol="websocket", password=password,
                             path=f"/api2/json/{self._vm_path(ref)}/vncwebsocket?{query}",
                             extra={"tls": True, "verify": self.verify, "headers": self.pve.auth_headers(),
                                    "subprotocols": ["binary"]})

    # -- delete ---------------------------------------------------------------------------------------------
    def _destroy(self, ref) -> None:
        try:
            upid = self.pve.delete(self._vm_path(ref), purge=1, **{"destroy-unreferenced-disks": 1})
        except PveError as exc:
            if exc.status == 500 and "does not exist" in str(exc):
                return
            raise
        self._wait(upid, f"destroying VM {ref['vmid']}")

    def delete(self, ref: dict[str, Any]) -> None:
        if not ref or "vmid" not in ref:
            raise FatalDriverError(f"reference {ref!r} names no VMID")
        state = self._status(ref)
        if state != PowerState.MISSING:
            cfg = self._config(ref) or {}
            if ref.get("service") and f"{MARKER}{ref['service']}" not in (cfg.get("description") or ""):
                raise FatalDriverError(f"VM {ref['vmid']} on {ref.get('node')} does not carry the marker of "
                                       f"service {ref['service']}; refusing to destroy it")
            if state != PowerState.STOPPED:
                self.stop(ref, timeout=0)
            self._destroy(ref)
        if ref.get("service"):
            try:
                self._numbering().release(self.scope, ref["service"])
            except FatalDriverError:
                pass

    # -- move -----------------------------------------------------------------------------------------------
    def move(self, ref: dict[str, Any], spec: ServerSpec, target: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Migrate the guest to the target node of the same cluster (``POST /nodes/{node}/qemu/{vmid}/migrate``
        with ``target``; live, with ``online=1`` and ``with-local-disks=1``, when it runs; ``targetstorage`` when the
        target node's disk storage has another name), waiting for the ``qmigrate`` task. Idempotent: the guest is
        looked up in ``/cluster/resources`` first, so a retry after the task finished only makes sure it runs."""
        other = type(self)(target)
        if host_port(other.config["api_url"]) != host_port(self.config["api_url"]):
            raise FatalDriverError("the target node is in another Proxmox cluster (another API URL); hostbay moves "
                                   "guests only within one cluster")
        vmid, tnode = int(ref["vmid"]), other.node
        new_ref = {**ref, "node": tnode}
        for _ in range(3):
            where = self._vms().get(vmid)
            if where is None:
                raise FatalDriverError(f"VM {vmid} is not in the cluster", customer_message=GONE)
            if where.get("node") == tnode:
                cfg = other._exists(new_ref)
                if ref.get("service") and f"{MARKER}{ref['service']}" not in (cfg.get("description") or ""):
                    raise FatalDriverError(f"VM {vmid} on {tnode} does not carry the marker of service "
                                           f"{ref['service']}")
                progress(90, "Starting the server on its new host")
                other._ensure_running(new_ref)
                progress(100, "Server is running")
                return new_ref
            cfg = self._exists({**ref, "node": where["node"]})
            if cfg.get("lock") == "migrate":  # an earlier attempt's migration still runs: wait for it to end
                deadline = time.monotonic() + float(self.config["task_timeout"])
                while (self._config({**ref, "node": where["node"]}) or {}).get("lock") == "migrate":
                    if time.monotonic() > deadline:
                        raise TransientDriverError(f"VM {vmid} is still being migrated")
                    time.sleep(0.2)
                continue
            running = self._status({**ref, "node": where["node"]}) == PowerState.RUNNING
            params: dict[str, Any] = {"target": tnode}
            if running:
                params.update({"online": 1, "with-local-disks": 1})
            if other.config["storage"] != self.config["storage"]:
                params["targetstorage"] = other.config["storage"]
            progress(20, "Moving the server to its new host")
            upid = self.pve.post(f"nodes/{where['node']}/qemu/{vmid}/migrate", **params)
            self._wait(upid, f"migrating VM {vmid} to {tnode}")
        raise TransientDriverError(f"VM {vmid} did not arrive on {tnode}")

    # -- admin ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """One clear message per failure: token, node, disk storage, ISO storage."""
        problems = []
        try:
            self.pve.get("version")
        except PveError as exc:
            if exc.status == 401:
                raise FatalDriverError(f"the API token {self.config['token_id']} was refused by "
                                       f"{self.config['api_url']} (check the token ID and secret)") from None
            raise FatalDriverError(f"the Proxmox API at {self.config['api_url']} answered: {exc}") from None
        except TransientDriverError as exc:
            raise FatalDriverError(f"the Proxmox API at {self.config['api_url']} cannot be reached: {exc}") \
                from None
        nodes = {n["node"] for n in self.pve.get("nodes") or []}
        if self.node not in nodes:
            raise FatalDriverError(f"node {self.node!r} is not in the cluster (nodes: "
                                   f"{', '.join(sorted(nodes)) or 'none'})")
        storages = {s["storage"]: s for s in self.pve.get(f"nodes/{self.node}/storage") or []}
        for key, content in (("storage", "images"), ("iso_storage", "iso")):
            name = self.config[key]
            st = storages.get(name)
            if st is None:
                problems.append(f"storage {name!r} ({key}) does not exist on node {self.node}")
            elif content not in str(st.get("content", "")).split(","):
                problems.append(f"storage {name!r} ({key}) does not hold {content} content")
        if problems:
            raise FatalDriverError("; ".join(problems))


def apply_filter(driver: ProxmoxDriver, ref: dict, addresses: list[Address]) -> None:
    """ipset ``ipfilter-net0`` = exactly ``addresses``; firewall options enable=1, ipfilter=1. Idempotent."""
    pve, path = driver.pve, driver._vm_path(ref)
    wanted = {a.address for a in addresses}
    sets = {s["name"] for s in pve.get(f"{path}/firewall/ipset") or []}
    if IPSET not in sets:
        pve.post(f"{path}/firewall/ipset", name=IPSET, comment="hostbay: allocated addresses")
        current: set[str] = set()
    else:
        current = {e["cidr"] for e in pve.get(f"{path}/firewall/ipset/{IPSET}") or []}
    for cidr in sorted(wanted - current):
        pve.post(f"{path}/firewall/ipset/{IPSET}", cidr=cidr)
    for cidr in sorted(current - wanted):
        pve.delete(f"{path}/firewall/ipset/{IPSET}/{cidr}")
    opts = pve.get(f"{path}/firewall/options") or {}
    if int(opts.get("enable") or 0) != 1 or int(opts.get("ipfilter") or 0) != 1:
        pve.put(f"{path}/firewall/options", enable=1, ipfilter=1)

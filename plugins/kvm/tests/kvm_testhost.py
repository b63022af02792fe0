"""Helpers for the KVM plugin tests: a real libvirtd with QEMU (``qemu:///system`` unless
HOSTBAY_TEST_LIBVIRT_URI says otherwise), a tiny blank template made with qemu-img, and cleanup of every domain,
volume and pool the tests create. Everything is named with the ``hbtest-`` prefix and lives under
HOSTBAY_TEST_KVM_DIR (default /var/lib/hostbay-test/kvm), so leftovers of an interrupted run are found and removed.
"""

from __future__ import annotations

import io
import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

URI = os.environ.get("HOSTBAY_TEST_LIBVIRT_URI", "qemu:///system")
BASE = Path(os.environ.get("HOSTBAY_TEST_KVM_DIR", "/var/lib/hostbay-test/kvm"))
PREFIX = os.environ.get("HOSTBAY_TEST_KVM_PREFIX", "hbtest-")
TEMPLATE = "blank.qcow2"
TEMPLATE_SIZE = 64 * 1024 * 1024


def libvirt_unavailable_reason(uri: str = URI) -> str | None:
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed (pip install -e '.[kvm]')"
    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return f"libvirtd does not answer at {uri}: {exc.get_error_message()} (start virtlogd and libvirtd as root)"
    try:
        if conn.getType() != "QEMU":
            return f"{uri} is not a QEMU hypervisor"
    finally:
        conn.close()
    if shutil.which("qemu-img") is None:
        return "qemu-img is not installed (qemu-utils)"
    return None


def kernel_can_shape() -> bool:
    """Whether this kernel has what libvirt's <bandwidth> needs (htb + sfq qdiscs, police action)."""
    tap = f"hbtq{os.getpid() % 100000}"
    if subprocess.run(["ip", "tuntap", "add", tap, "mode", "tap"], capture_output=True).returncode:
        return False
    try:
        steps = [["tc", "qdisc", "add", "dev", tap, "root", "handle", "1:", "htb", "default", "1"],
                 ["tc", "class", "add", "dev", tap, "parent", "1:", "classid", "1:1", "htb", "rate", "1000kbps"],
                 ["tc", "qdisc", "add", "dev", tap, "parent", "1:1", "handle", "2:", "sfq", "perturb", "10"],
                 ["tc", "qdisc", "add", "dev", tap, "ingress"],
                 ["tc", "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "all", "u32", "match", "u32",
                  "0", "0", "police", "rate", "1000kbps", "burst", "1000kb", "mtu", "64kb", "drop", "flowid", ":1"]]
        return all(subprocess.run(cmd, capture_output=True).returncode == 0 for cmd in steps)
    finally:
        subprocess.run(["ip", "tuntap", "del", tap, "mode", "tap"], capture_output=True)


@dataclass
class KvmHost:
    uri: str
    templates: Path
    disks: Path
    isos: Path
    can_shape: bool

    def settings(self, **overrides) -> dict:
        values = {"uri": self.uri, "storage": str(self.disks), "templates": str(self.templates),
                  "name_prefix": PREFIX, "stop_timeout": 2, "shaping": "libvirt" if self.can_shape else "off"}
        values.update(overrides)
        return values

    def conn(self):
        from hostbay.plugins.kvm.connection import connect

        return connect(self.uri)


def remove_leftovers(uri: str, base: Path, pools: bool, prefix: str = PREFIX) -> None:
    """Remove domains and volumes named ``prefix...`` and (with ``pools``) the storage pools under ``base``; other
    suites' servers on the same libvirtd are left alone."""
    import libvirt

    from hostbay.plugins.kvm import xml as X

    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(prefix):
                with contextlib.suppress(libvirt.libvirtError):  # it may have stopped on its own meanwhile
                    dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        for pool in conn.listAllStoragePools(0):
            target = X.parse(pool.XMLDesc(0)).findtext("./target/path") or ""
            if not target.startswith(str(base)):
                continue
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    if vol.name().startswith(prefix):
                        vol.delete(0)
            if pools:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
    finally:
        conn.close()


def _make_iso(path: Path) -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="HBTEST")
    data = b"hostbay test installation medium\n"
    iso.add_fp(io.BytesIO(data), len(data), "/README.;1", rr_name="README", joliet_path="/README")
    iso.write(str(path))
    iso.close()

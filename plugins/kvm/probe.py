"""The probe guest: proof that a node can run guests under a virtualization type.

libvirt reporting a domain "running" only means QEMU started. On some hosts ``/dev/kvm`` exists but cannot run a
full guest (a PVM host, a nested set-up without the right CPU features): QEMU starts, libvirt says running, and
the guest dies at once. So before the driver trusts KVM it boots a 512-byte boot sector (source in ``probe.S``
beside this file) that writes a line to the serial port after each thing a guest kernel needs first: the BIOS
boot path (real mode), 64-bit long mode with paging, an exception through an IDT (int3, iretq), SSE and a timer
interrupt through the PIC (sti; hlt), then ``hostbay-probe: ok``. Only that last line counts. (On a PVM host the
probe stops after "64-bit", exactly where a stock kernel dies; a probe that only printed from long mode passed.)

The serial line is read through libvirt's console stream (the domain is created paused, the console opened, then
the domain resumed, so no byte is lost), which works on a remote ``qemu+ssh://`` host as well as locally.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass

from . import xml as X
from .connection import libvirt, translated

OK_LINE = "hostbay-probe: ok"
STAGES = ("firmware", "64-bit", "exception", "timer")  # lines before OK_LINE, in order

# as --32 probe.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary (512 bytes)
BOOT_SECTOR = base64.b64decode(
    "+jHAjtiOwI7QvAB8uvgDvmh9rITAdAPu6/i/ABC5ACgxwPOrxwYAEAMgxwYAIAMwxwYAMIMADyDgZg0gBgAADyLgZrgAEAAADyLYZrmAAADA"
    "DzJmDQABAAAPMGYPARZYfQ8gwGaD4PtmDQMAAIAPIsBm6nl8AAAIALwAfAAAvoJ9AADooAAAALg1fQAAuwMAAADodgAAALg3fQAAuyAAAADo"
    "ZwAAAA8BHCVefQAAzL6afQAA6G8AAAAPV8APEQQlAFgAALAR5iDmoLAg5iGwKOahsATmIbAC5qGwAeYh5qGw/uYhsP/mofv0gDwlAF8AAAB0"
    "9fq+tX0AAOgpAAAAvsx9AADoHwAAAPr06/yJ38HnBIHHAEAAAGaJB2bHRwIIAGbHRwQAjsNmuvgDrITAdAPu6/jDSM9QxgQlAF8AAAGwIOYg"
    "WEjPkAAAAAAAAAAAAAAAAACaIAAPAEh9AAD/DwBAAAAAAAAAaG9zdGJheS1wcm9iZTogZmlybXdhcmUNCgBob3N0YmF5LXByb2JlOiA2NC1i"
    "aXQNCgBob3N0YmF5LXByb2JlOiBleGNlcHRpb24NCgBob3N0YmF5LXByb2JlOiB0aW1lcg0KAGhvc3RiYXktcHJvYmU6IG9rDQoA").ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class ProbeResult:
    virt_type: str
    ok: bool
    seconds: float
    output: str  # what the probe wrote to its serial port

    @property
    def summary(self) -> str:
        if self.ok:
            return f"a probe guest ran under {self.virt_type} ({self.seconds:.1f} s to its last line)"
        reached = [s for s in STAGES if f"hostbay-probe: {s}" in self.output]
        if reached:
            missing = STAGES[len(reached)] if len(reached) < len(STAGES) else "the final line"
            seen = f"reached {', '.join(reached)} but not {missing}"
        elif self.output.strip():
            seen = f"wrote unexpected output {self.output.strip()[:80]!r}"
        else:
            seen = "wrote nothing on its serial console"
        return f"a probe guest under {self.virt_type} {seen} within {self.seconds:.0f} s"


def domain_xml(name: str, virt_type: str, disk_path: str) -> str:
    dom = X.ET.Element("domain", type=virt_type)
    X.ET.SubElement(dom, "name").text = name
    X.ET.SubElement(dom, "memory", unit="MiB").text = "16"
    X.ET.SubElement(dom, "vcpu").text = "1"
    os_ = X.ET.SubElement(dom, "os")
    X.ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    X.ET.SubElement(os_, "boot", dev="hd")
    for tag, text in (("on_poweroff", "destroy"), ("on_reboot", "destroy"), ("on_crash", "destroy")):
        X.ET.SubElement(dom, tag).text = text
    devs = X.ET.SubElement(dom, "devices")
    disk = X.ET.SubElement(devs, "disk", type="file", device="disk")
    X.ET.SubElement(disk, "driver", name="qemu", type="raw")
    X.ET.SubElement(disk, "source", file=disk_path)
    X.ET.SubElement(disk, "target", dev="hda", bus="ide")
    serial = X.ET.SubElement(devs, "serial", type="pty")
    X.ET.SubElement(serial, "target", port="0")
    console = X.ET.SubElement(devs, "console", type="pty")
    X.ET.SubElement(console, "target", type="serial", port="0")
    X.ET.SubElement(devs, "memballoon", model="none")
    return X.ET.tostring(dom, encoding="unicode")


def run(conn, pool, virt_type: str, prefix: str, timeout: float = 15.0, image: bytes = BOOT_SECTOR) -> ProbeResult:
    """Boot the probe under ``virt_type`` on ``conn`` with its disk in ``pool``; everything it creates is removed."""
    lv = libvirt()
    name = f"{prefix}probe-{uuid.uuid4().hex[:8]}"
    vol = dom = None
    out = bytearray()
    started = time.monotonic()
    try:
        with translated("creating the probe disk"):
            vol = pool.createXML(X.volume(f"{name}.img", len(image), "raw"), 0)
            stream = conn.newStream(0)
            vol.upload(stream, 0, len(image), 0)
            sent = 0
            while sent < len(image):
                sent += stream.send(image[sent:])
            stream.finish()
        with translated(f"starting the probe guest under {virt_type}"):
            dom = conn.createXML(domain_xml(name, virt_type, vol.path()), lv.VIR_DOMAIN_START_PAUSED)
            console = conn.newStream(0)
            dom.openConsole(None, console, lv.VIR_DOMAIN_CONSOLE_FORCE)
        done = threading.Event()

        def reader():
            with contextlib.suppress(Exception):
                while not done.is_set():
                    data = console.recv(4096)
                    if not data or data in (-1, -2):
                        break
                    out.extend(data)
                    if OK_LINE.encode() in out:
                        break
            done.set()

        thread = threading.Thread(target=reader, name=f"probe-{name}", daemon=True)
        thread.start()
        started = time.monotonic()
        with translated("resuming the probe guest"):
            dom.resume()
        done.wait(timeout)
        seconds = time.monotonic() - started
        text = out.decode(errors="replace")
        return ProbeResult(virt_type, OK_LINE in text, seconds, text)
    finally:
        if dom is not None:
            with contextlib.suppress(lv.libvirtError):
                dom.destroy()
        if vol is not None:
            with contextlib.suppress(lv.libvirtError):
                vol.delete(0)

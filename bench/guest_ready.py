"""Paid order -> guest ready, next to a bare boot of the same guest (one run each, as root).

    .venv/bin/python bench/guest_ready.py [--variant ifupdown]

1. ``order_to_ready``: an app on a scratch SQLite database with a KVM node on qemu:///system, the Debian test image
   of scripts/build-test-image marked "reports readiness", and an IPv4 pool. A customer's paid order runs the
   provisioning job (placement, addresses, disk, seed, define, start, network filter, then the wait for the
   guest's phone-home) until the service is Active. The guest's tap is moved into a network namespace that holds
   the gateway and relays the phone-home to this process (plugins/kvm/tests/guestnet.py): no other network.
2. ``bare_boot_to_finished``: the same domain XML (read back from libvirt) and the same template, a fresh overlay
   and a seed with the same documents but without phone_home, started with ``virDomainCreateXML`` (what
   ``virsh create`` does); timed until the guest's serial console prints cloud-init's "finished" line.
3. ``order_to_ready`` is also split: the time until the domain runs (hostbay's own work, including the
   ``virt_type: auto`` probe when it is not cached) and the time from there to the report.

Everything is named ``hbbench-guest-`` under /var/lib/hostbay-bench/guests and removed at the end. Prints the
numbers and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "plugins" / "kvm" / "tests"))
BASE = Path("/var/lib/hostbay-bench/guests")
PREFIX = "hbbench-guest-"
FINISHED = "finished at"


def _console_until(conn, dom, needle: str, timeout: float) -> tuple[float | None, str]:
    """Read ``dom``'s serial console until ``needle`` appears; seconds since the call (None on timeout)."""
    stream = conn.newStream(0)
    dom.openConsole(None, stream, 0)
    buf = bytearray()
    found = threading.Event()
    t0 = time.monotonic()
    at = {}

    def reader():
        with contextlib.suppress(Exception):
            while True:
                data = stream.recv(4096)
                if not data or data in (-1, -2):
                    return
                buf.extend(data)
                if needle.encode() in buf and "t" not in at:
                    at["t"] = time.monotonic()
                    found.set()
                    return

    threading.Thread(target=reader, daemon=True).start()
    found.wait(timeout)
    with contextlib.suppress(Exception):
        stream.abort()
    return (at["t"] - t0 if "t" in at else None), buf.decode(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="ifupdown", choices=("ifupdown", "networkd"))
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (libvirt, network namespaces)")
        return 2
    import logging

    import libvirt
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # request lines would carry the readiness token

    from guestnet import GW, NAMESERVER, NET, Netns, READY_PORT, _sh
    from kvm_testhost import remove_leftovers

    image_path = _sh("bash", str(ROOT / "scripts" / "build-test-image"), args.variant,
                     timeout=1800).stdout.strip().splitlines()[-1]
    remove_leftovers("qemu:///system", BASE, pools=False, prefix=PREFIX)
    templates, disks = BASE / "templates", BASE / "disks"
    for d in (BASE.parent, BASE, templates, disks):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    template = templates / f"{PREFIX}{args.variant}.qcow2"
    if not template.exists():
        shutil.copyfile(image_path, template)
        template.chmod(0o644)

    tmp = Path(tempfile.mkdtemp(prefix="hbbench-guest-"))
    from hostbay.core import billing, ipam, jobs, ledger
    from hostbay.core.accounts import add_ssh_key, create_user
    from hostbay.core.catalog import CYCLES, Image, Node, Package, PackagePrice
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'bench.sqlite3'}", "HOSTBAY_JOBS": "manual",
                      "SECRET_KEY": "bench", "INSTANCE_PATH": str(tmp / "instance"), "RATELIMIT_ENABLED": False,
                      "HOSTBAY_REDIS_URL": None, "HOSTBAY_SMTP_URL": None, "HOSTBAY_READY_TIMEOUT": args.timeout,
                      "HOSTBAY_READY_URL": f"http://{GW}:{READY_PORT}"})
    sock = str(tmp / "ready.sock")
    server = make_server(f"unix://{sock}", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ns = Netns(f"{PREFIX[:-1]}-ns", sock, domain_prefix=PREFIX, ns_prefix=f"{PREFIX[:-1]}-ns")
    results = []
    conn = libvirt.open("qemu:///system")
    try:
        with app.app_context():
            db.create_all()
            settings = {"uri": "qemu:///system", "storage": str(disks), "templates": str(templates),
                        "name_prefix": PREFIX, "shaping": "off", "stop_timeout": 60}
            node = Node(name="bench-node", driver="kvm", settings=settings, vcpus=8, memory_mib=8192, disk_gib=100)
            image = Image(driver="kvm", slug="debian12", name="Debian 12", source=template.name,
                          os_family="debian", reports_readiness=True)
            pkg = Package(slug="bench", name="Bench VPS", kind="vps", driver="kvm", vcpus=1, memory_mib=768,
                          disk_gib=3, ipv4_count=1, port_speed_mbit=1000)
            pkg.prices = [PackagePrice(cycle=c, price_cents=500 * m) for c, m in CYCLES.items()]
            db.session.add_all([node, image, pkg])
            db.session.commit()
            ipam.create_pool(name="bench", cidr=NET, gateway=GW, nameservers=[NAMESERVER], node_ids=[node.id])
            user = create_user("bench@example.test", "correct horse battery")
            ledger.credit(user.id, 500, kind="topup", key="bench-topup", description="Bench top-up")
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key"))
            key = add_ssh_key(user, "bench", (tmp / "key.pub").read_text().strip())
            db.session.commit()

            # the node's "Test connection" (as staff do when they add a node): boots the probe guest and
            # remembers what virt_type auto chose, as a long-running worker does after its first server
            t = time.monotonic()
            drv_probe = app.extensions["hostbay"].driver("virt", "kvm", settings)
            probe_msg = drv_probe.validate()
            results.append({"case": "test_connection_probe", "seconds": round(time.monotonic() - t, 1),
                            "message": probe_msg})

            # 1. paid order -> Active (after the guest's report)
            load_order = os.getloadavg()[0]
            t0 = time.monotonic()
            svc = billing.place_order(user, pkg, "monthly", "web1.example.test", image=image,
                                      ssh_key_ids=[key.id], key="bench-order")
            op_id = db.session.scalar(db.select(jobs.Operation.id).filter_by(service_id=svc.id))
            svc_id = svc.id
            db.session.commit()
            out = {}

            def run():
                with app.app_context():
                    out["state"] = jobs.run_operation(op_id)

            worker = threading.Thread(target=run)
            worker.start()
            running_at = None
            finished = {}

            def watch_console():
                c2 = libvirt.open("qemu:///system")
                try:
                    d = next(x for x in c2.listAllDomains(0) if x.name().startswith(PREFIX) and "probe" not in
                             x.name())
                    secs, _ = _console_until(c2, d, FINISHED, args.timeout)
                    if secs is not None:
                        finished["at"] = time.monotonic() - t0
                finally:
                    c2.close()

            while worker.is_alive():
                if running_at is None and ns.moved:
                    running_at = time.monotonic() - t0
                    threading.Thread(target=watch_console, daemon=True).start()
                time.sleep(0.1)
            ready = time.monotonic() - t0
            db.session.commit()
            state = db.session.scalar(db.select(Service.state).filter_by(id=svc_id))
            if out.get("state") != jobs.SUCCEEDED or state != "active":
                print(f"order did not become ready: {out}, {state}")
                return 1
            results.append({"case": "order_to_ready", "seconds": round(ready, 1),
                            "until_domain_runs": round(running_at or 0, 1),
                            "domain_runs_to_finished_line": round(finished.get("at", 0) - (running_at or 0), 1),
                            "finished_line_to_active": round(ready - finished.get("at", ready), 1),
                            "load_at_start": round(load_order, 2)})
            svc = db.session.get(Service, svc_id)
            dom = conn.lookupByName(svc.infra_ref["domain"])
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            from hostbay.core.lifecycle import build_spec, driver_for

            spec = build_spec(svc)
            drv = driver_for(svc)
            drv.stop(svc.infra_ref, timeout=90)
            drv.delete(svc.infra_ref)

        # 2. the same domain XML and template, bare: virDomainCreateXML -> cloud-init's "finished" line
        from hostbay.plugins.kvm import seed as S
        from hostbay.plugins.kvm import xml as X

        name = f"{PREFIX}bare-{uuid.uuid4().hex[:8]}"
        disk = disks / f"{name}-disk.qcow2"
        seed_iso = disks / f"{name}-seed.iso"
        _sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(template), "-F", "qcow2", str(disk), "3G")
        seed_iso.write_bytes(S.build_iso(S.documents(spec, X.mac_for(spec.uuid), f"{name}-iid")))
        root = X.parse(xml)
        root.find("name").text = name
        for tag in ("uuid",):
            el = root.find(tag)
            if el is not None:
                root.remove(el)
        X.find_disk(root, X.DISK_TARGET).find("source").set("file", str(disk))
        X.find_disk(root, X.SEED_TARGET).find("source").set("file", str(seed_iso))
        for iface in root.iterfind("./devices/interface"):
            for t in iface.findall("target"):
                iface.remove(t)
        load_bare = os.getloadavg()[0]
        t0 = time.monotonic()
        bare = conn.createXML(X.to_string(root), libvirt.VIR_DOMAIN_START_PAUSED)
        bare.resume()
        seconds, text = _console_until(conn, bare, FINISHED, args.timeout)
        total = time.monotonic() - t0 if seconds is not None else None
        with contextlib.suppress(libvirt.libvirtError):
            bare.destroy()
        for p in (disk, seed_iso):
            p.unlink(missing_ok=True)
        if total is None:
            print("the bare guest never printed cloud-init's finished line:\n" + text[-2000:])
            return 1
        line = next((ln for ln in text.splitlines() if FINISHED in ln), "").strip()
        results.append({"case": "bare_boot_to_finished", "seconds": round(total, 1), "line": line[:120],
                        "load_at_start": round(load_bare, 2)})
    finally:
        ns.close()
        server.shutdown()
        conn.close()
        remove_leftovers("qemu:///system", BASE, pools=False, prefix=PREFIX)
        shutil.rmtree(tmp, ignore_errors=True)
    by = {r["case"]: r for r in results}
    ratio = by["order_to_ready"]["seconds"] / by["bare_boot_to_finished"]["seconds"]
    report = {"variant": args.variant, "results": results, "ratio": round(ratio, 2),
              "load": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"guest_ready-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""KVM provisioning latency against a real libvirtd with QEMU.

    .venv/bin/python bench/kvm_provision.py [--count 20] [--uri qemu:///system]

Cases (each returns result rows: case, metric, value, unit, target):
- ``driver_create_to_running``: ``KvmDriver.create`` of a 1 vCPU / 128 MiB / 1 GiB server from a blank qcow2
  template until libvirt reports the domain running (disk overlay, seed ISO upload, define, start); each server
  is deleted (timed too) before the next one.
- ``driver_create_to_running_kept``: the same, with every server left running until the end, so later creates
  share the host with all earlier ones.
- The full "paid order -> running" path through RQ adds a case here with the same shape: create a user, wallet
  and package in the database, place the order, run ``hostbay worker`` on the real Redis, and time order ->
  ``service.state == "active"`` with the domain running, reusing ``kvm_host()`` and ``summarize()``.

Everything is created with the ``hbbench-`` prefix under /var/lib/hostbay-bench/kvm and removed at the end.
Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BASE = Path("/var/lib/hostbay-bench/kvm")
PREFIX = "hbbench-"


def summarize(case: str, seconds: list[float], target_p50: float | None = None,
              target_p95: float | None = None) -> list[dict]:
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return [
        {"case": case, "metric": "p50", "value": round(q[49], 3), "unit": "s",
         "target": f"<= {target_p50}" if target_p50 else ""},
        {"case": case, "metric": "p95", "value": round(q[94], 3), "unit": "s",
         "target": f"<= {target_p95}" if target_p95 else ""},
        {"case": case, "metric": "min", "value": round(min(seconds), 3), "unit": "s", "target": ""},
        {"case": case, "metric": "max", "value": round(max(seconds), 3), "unit": "s", "target": ""},
        {"case": case, "metric": "n", "value": len(seconds), "unit": "", "target": ""},
    ]


@contextlib.contextmanager
def kvm_host(uri: str):
    """Template directory with a blank 64 MiB qcow2; yields the driver settings; removes everything after."""
    import libvirt

    templates = BASE / "templates"
    for d in (BASE.parent, BASE, templates):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    template = templates / "blank.qcow2"
    if not template.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), "64M"], check=True)
    settings = {"uri": uri, "storage": str(BASE / "disks"), "templates": str(templates), "name_prefix": PREFIX,
                "stop_timeout": 0, "shaping": "off"}
    try:
        yield settings
    finally:
        conn = libvirt.open(uri)
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for pool in conn.listAllStoragePools(0):
            if (pool.XMLDesc(0).split("<path>")[1].split("</path>")[0]).startswith(str(BASE)):
                if pool.isActive():
                    pool.refresh(0)
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                    pool.destroy()
                pool.undefine()
        conn.close()
        shutil.rmtree(BASE, ignore_errors=True)
        with contextlib.suppress(OSError):
            BASE.parent.rmdir()


def driver_create_to_running(count: int = 20, uri: str = "qemu:///system", keep: bool = False) -> list[dict]:
    """``keep=False``: each server is deleted before the next is created (a node with one new server at a
    time). ``keep=True``: all ``count`` servers stay running, so later creates share the host with earlier ones."""
    from hostbay.core.drivers import PowerState
    from hostbay.plugins.kvm import KvmDriver

    with kvm_host(uri) as settings:
        drv = KvmDriver(settings)
        kind = drv.virt_type()
        drv.delete(drv.create(_spec(0), lambda p, t: None))  # warm-up: pools defined, connection open
        created, seconds, deletes = [], [], []

        def delete(ref):
            t0 = time.perf_counter()
            drv.delete(ref)
            deletes.append(time.perf_counter() - t0)

        for i in range(1, count + 1):
            spec = _spec(i)
            t0 = time.perf_counter()
            ref = drv.create(spec, lambda p, t: None)
            assert drv.status(ref) == PowerState.RUNNING
            seconds.append(time.perf_counter() - t0)
            if keep:
                created.append(ref)
            else:
                delete(ref)
        for ref in created:
            delete(ref)
    label = "all kept running" if keep else "one at a time"
    return (summarize(f"driver.create -> running ({kind}, 128 MiB, 1 GiB, {label})", seconds, 3, 6)
            + summarize(f"driver.delete of a running server ({label})", deletes)[:2])


def driver_create_to_running_kept(count: int = 20, uri: str = "qemu:///system") -> list[dict]:
    return driver_create_to_running(count, uri, keep=True)


def _spec(i: int):
    from hostbay.core.drivers import Address, ServerSpec

    return ServerSpec(uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostbay-bench-{i}")), hostname=f"b{i}.example.test",
                      vcpus=1, memory_mib=128, disk_gib=1, image={"name": "blank", "source": "blank.qcow2"}, node={},
                      ssh_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEfZQmrHVr2i6OmnFzRzRu8LrbSZrvVdaROzW0DkmHh0 b",),
                      addresses=(Address(f"192.0.2.{10 + i}", 24, "192.0.2.1"),), nameservers=("192.0.2.53",),
                      port_speed_mbit=100)


def order_to_running(count: int = 20, uri: str = "qemu:///system") -> list[dict]:
    """Paid order -> service active with its domain running, through RQ: ``place_order`` in this process, a
    separate ``hostbay worker`` on the real Redis runs provisioning (placement, IPAM, KVM create). Orders are
    placed one after another; each server is removed (driver delete) once it runs."""
    import os
    import signal
    import tempfile

    from hostbay.core import billing, ipam, ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import CYCLES, Image, Node, Package, PackagePrice
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.web import create_app

    db_url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/hostbay_bench")
    redis_url = os.environ.get("HOSTBAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    queue = f"hostbay-bench-{uuid.uuid4().hex[:8]}"
    instance = tempfile.mkdtemp()
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "HOSTBAY_REDIS_URL": redis_url, "HOSTBAY_JOBS": "rq",
                      "HOSTBAY_QUEUE": queue, "INSTANCE_PATH": instance, "SECRET_KEY": "bench"})
    env = dict(os.environ, HOSTBAY_DATABASE_URL=db_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_INSTANCE_PATH=instance)
    seconds: list[float] = []
    with kvm_host(uri) as settings, app.app_context():
        db.drop_all()
        db.create_all()
        node = Node(name="bench-node", driver="kvm", settings=settings, vcpus=64, memory_mib=65536, disk_gib=1000)
        image = Image(driver="kvm", slug="blank", name="Blank", source="blank.qcow2")
        pkg = Package(slug="bench", name="Bench", driver="kvm", vcpus=1, memory_mib=128, disk_gib=1,
                      ipv4_count=1, port_speed_mbit=100)
        pkg.prices = [PackagePrice(cycle=c, price_cents=100 * m) for c, m in CYCLES.items()]
        db.session.add_all([node, image, pkg])
        db.session.commit()
        ipam.create_pool(name="bench", cidr="192.0.2.0/24", gateway="192.0.2.1", node_ids=[node.id])
        user = create_user("bench@example.test", "bench-password-1")
        ledger.credit(user.id, 100 * (count + 1), kind="topup", key="bench-topup", description="Bench")
        db.session.commit()
        worker = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", "--without-scheduler"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from hostbay.core.lifecycle import driver_for

            for i in range(count + 1):  # the first order warms the worker up and is not counted
                t0 = time.perf_counter()
                svc = billing.place_order(user, pkg, "monthly", f"b{i}.example.test", image=image, key=f"b-{i}")
                db.session.commit()  # the set-up job is dispatched after the caller's commit
                svc_id = svc.id
                while True:
                    db.session.expire_all()
                    state = db.session.get(Service, svc_id).state
                    db.session.commit()
                    if state == "active":
                        break
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError(f"order {i} still {state} after 120 s")
                    time.sleep(0.05)
                if i:
                    seconds.append(time.perf_counter() - t0)
                svc = db.session.get(Service, svc_id)
                driver_for(svc).delete(svc.infra_ref)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            db.session.remove()
            db.drop_all()
    return summarize("paid order -> running through RQ + KVM (one at a time)", seconds, 3, 6)


CASES = [driver_create_to_running, driver_create_to_running_kept, order_to_running]


def table(rows: list[dict]) -> str:
    cols = ["case", "metric", "value", "unit", "target"]
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args(argv)
    rows = []
    for case in CASES:
        rows += case(args.count, args.uri)
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"kvm_provision-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "rows": rows}, indent=2))
    print(f"\nwritten to {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Proxmox provisioning: paid order → running guest on the HTTPS API stand-in, with a fixed task delay.

    .venv/bin/python bench/proxmox_provision.py [--count 20] [--task-delay 0.5]

Each order is placed with ``billing.place_order`` and provisioned by the ``service.provision`` job (run at commit
in this process: the same handler a ``hostbay worker`` runs) on a Proxmox node whose API is
``hostbay.plugins.proxmox.standin`` over HTTPS on loopback. Every stand-in task (clone, resize, start) takes
exactly ``--task-delay`` seconds, so:

- ``order_to_running``: wall time from ``place_order`` to the service being active with the guest running;
- ``hostbay_overhead``: that wall time minus the stand-in's task time for the order (tasks × delay): hostbay's own
  time (database, jobs, progress, HTTPS calls, polling granularity) on top of what Proxmox itself would take;
- ``api_calls``: API requests per provisioning (and of them, task status polls).

Orders run one at a time. Database: HOSTBAY_BENCH_DATABASE_URL (PostgreSQL recommended) or a temporary SQLite file.
Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))


def summarize(case: str, values: list[float], unit: str = "s", target_p50: str = "") -> list[dict]:
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return [
        {"case": case, "metric": "p50", "value": round(q[49], 3), "unit": unit, "target": target_p50},
        {"case": case, "metric": "p95", "value": round(q[94], 3), "unit": unit, "target": ""},
        {"case": case, "metric": "min", "value": round(min(values), 3), "unit": unit, "target": ""},
        {"case": case, "metric": "max", "value": round(max(values), 3), "unit": unit, "target": ""},
    ]


def run(count: int, task_delay: float) -> list[dict]:
    from hostbay.core import billing, ipam
    from hostbay.core.accounts import add_ssh_key, create_user
    from hostbay.core.catalog import CYCLES, Image, Node, Package, PackagePrice
    from hostbay.core.db import db
    from hostbay.core.services import Service
    from hostbay.core import ledger
    from hostbay.plugins.proxmox.standin import ProxmoxStandin
    from hostbay.testing.conformance import TEST_KEY
    from hostbay.web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="hostbay-bench-pve-"))
    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}"
    standin = ProxmoxStandin(task_delay=task_delay, workdir=tmp / "pve", templates={9000: {"disk_gib": 2}}).start()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "HOSTBAY_JOBS": "sync", "INSTANCE_PATH": str(tmp / "i"),
                      "SECRET_KEY": "bench", "HOSTBAY_REDIS_URL": None, "HOSTBAY_SMTP_URL": None})
    walls, overheads, calls, polls = [], [], [], []
    try:
        with app.app_context():
            db.drop_all()
            db.create_all()
            node = Node(name="bench-pve", driver="proxmox", vcpus=256, memory_mib=1024 * 1024, disk_gib=100000,
                        settings={"api_url": standin.url, "token_id": standin.token_id,
                                  "token_secret": standin.token_secret, "ca_bundle": standin.ca_file,
                                  "node": "pve1", "storage": "local-lvm", "vmid_min": 100, "vmid_max": 999})
            pkg = Package(slug="bench-pve", name="Bench", kind="vps", driver="proxmox", vcpus=1, memory_mib=1024,
                          disk_gib=10, ipv4_count=1, port_speed_mbit=1000)
            pkg.prices = [PackagePrice(cycle=c, price_cents=100 * m) for c, m in CYCLES.items()]
            image = Image(driver="proxmox", slug="debian-12", name="Debian 12", source="9000")
            db.session.add_all([node, pkg, image])
            db.session.commit()
            ipam.create_pool(name="bench-v4", cidr="198.51.100.0/22", gateway="198.51.100.1",
                             nameservers=["198.51.100.53"], node_ids=[node.id])
            for i in range(count + 1):  # the first order warms up connections and caches; it is not counted
                user = create_user(f"bench{i}@example.test", "correct horse battery")
                ledger.credit(user.id, 100, kind="topup", key=f"bench-topup:{i}", description="bench")
                key = add_ssh_key(user, "k", TEST_KEY)
                db.session.commit()
                first_request, first_task = len(standin.requests), len(standin.tasks)
                t0 = time.perf_counter()
                svc = billing.place_order(user, pkg, "monthly", f"b{i}.example.test", image=image,
                                          ssh_key_ids=[key.id], key=f"bench-order-{i}")
                db.session.commit()  # the provisioning job runs here (sync mode) until the guest runs
                wall = time.perf_counter() - t0
                db.session.expire_all()
                svc = db.session.get(Service, svc.id)
                assert svc.state == "active", svc.state
                assert standin.vms[svc.infra_ref["vmid"]].status == "running"
                reqs = standin.requests[first_request:]
                tasks = len(standin.tasks) - first_task
                if i == 0:
                    continue
                walls.append(wall)
                overheads.append(wall - tasks * task_delay)
                calls.append(len(reqs))
                polls.append(sum(1 for r in reqs if r["path"].endswith("/status") and "/tasks/" in r["path"]))
    finally:
        standin.stop()
    rows = summarize("order_to_running", walls)
    rows += summarize("hostbay_overhead", overheads, target_p50="<= 0.5")
    rows += [{"case": "api_calls", "metric": "per provisioning (median)", "value": statistics.median(calls),
              "unit": "calls", "target": ""},
             {"case": "api_calls", "metric": "of them task polls (median)", "value": statistics.median(polls),
              "unit": "calls", "target": ""},
             {"case": "setup", "metric": "orders / task delay / tasks per order", "unit": "",
              "value": f"{count} / {task_delay} s / {tasks}", "target": ""},
             {"case": "setup", "metric": "database", "unit": "", "value": url.split(":", 1)[0], "target": ""}]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--task-delay", type=float, default=0.5)
    args = ap.parse_args()
    rows = run(args.count, args.task_delay)
    from run import table

    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"proxmox-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(), "rows": rows},
                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

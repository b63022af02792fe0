"""Paid order -> running KVM domain with anti-spoofing on, and where the time goes.

    .venv/bin/python bench/kvm_order.py [--count 20] [--uri qemu:///system] [--network bridge|ethernet]
        [--antispoof nftables|nwfilter]

As root, on a real libvirtd with QEMU. Environment: HOSTBAY_BENCH_DATABASE_URL (PostgreSQL; default
postgresql+psycopg://postgres@127.0.0.1/hostbay_bench), HOSTBAY_BENCH_REDIS_URL (default redis://127.0.0.1:6379/13),
HOSTBAY_BENCH_KVM_PREFIX (default ``hbbench-order-``) and HOSTBAY_BENCH_KVM_DIR (default
/var/lib/hostbay-bench/kvm-order), so two runs on one host do not touch each other's domains;
HOSTBAY_BENCH_BRIDGE (default ``hbbench-br0``) names the bridge a ``bridge`` run makes for its servers' ports
(no uplink: nothing leaves the machine). ``--antispoof`` picks the node's filter: hostbay's nftables rules
(default; bridged and routed ports) or libvirt's nwfilter, which acts on bridged ports only, so with it
``ethernet`` (routed taps) pays the filter's cost at start for no protection (docs/network.md).

Per order (``count`` orders one after another, after one warm-up order that is not counted):

1. ``order``: ``billing.place_order`` in this process; a separate ``hostbay worker`` on the real Redis runs the
   provisioning job (placement, IPAM, disk overlay, seed upload, network filter, define, start) until the
   service is ``active`` and libvirt reports its domain running.
2. The domain is then powered off and its XML (as libvirt keeps it) is started again as a transient copy with a
   new name on the same disk with ``virDomainCreateXML`` (what ``virsh create`` does), twice: ``start_filtered``
   with the server's own filter (its ``<filterref>``, whose nwfilter rules libvirt instantiates before QEMU
   starts, or hostbay's nftables port: its one ``nft`` run is timed with the start), with libvirt's
   ``clean-traffic`` and the same addresses, and ``start_bare`` without a filter. Their difference is what the filter costs at start; ``order - start_filtered`` is
   hostbay's own work (database, queue, disk, seed, define).
3. ``firewall_call_seconds``: what one ebtables/iptables/ip6tables invocation costs on this host, and with
   ``--count-calls`` ``firewall_calls``: how many of them libvirt ran for one filtered start (strace on the daemon,
   once, after the timed runs).

The filter in use is whatever the KVM driver defines (its name is printed). Prints a table and writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
PREFIX = os.environ.get("HOSTBAY_BENCH_KVM_PREFIX", "hbbench-order-")
BASE = Path(os.environ.get("HOSTBAY_BENCH_KVM_DIR", "/var/lib/hostbay-bench/kvm-order"))

from kvm_provision import summarize, table  # noqa: E402


BRIDGE = os.environ.get("HOSTBAY_BENCH_BRIDGE", "hbbench-br0")


@contextlib.contextmanager
def host_bridge(name: str):
    """A host bridge with no uplink (frames stay on this machine), made for the run and removed after it."""
    made = subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0
    if made:
        subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    try:
        yield name
    finally:
        if made:
            subprocess.run(["ip", "link", "del", name], check=False)


@contextlib.contextmanager
def kvm_host(uri: str, network: str = "bridge"):
    """A template directory with a blank 64 MiB qcow2; yields the node settings; removes what it made. In
    ``bridge`` mode (the default) the servers' ports are on a bridge of the run's own, where libvirt's nwfilter
    acts on their frames; in ``ethernet`` mode (a routed tap) the filter is instantiated but sees no frame
    (docs/network.md), so that mode measures its cost, not its protection."""
    templates = BASE / "templates"
    for d in (BASE.parent, BASE, templates):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    template = templates / "blank.qcow2"
    if not template.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), "64M"], check=True)
    settings = {"uri": uri, "storage": str(BASE / "disks"), "templates": str(templates), "name_prefix": PREFIX,
                "stop_timeout": 0, "shaping": "off", "network": network}
    bridge = contextlib.ExitStack()
    if network == "bridge":
        settings["bridge"] = bridge.enter_context(host_bridge(BRIDGE))
    sys.path.insert(0, str(HERE.parent / "plugins" / "kvm" / "tests"))
    from kvm_testhost import remove_leftovers

    remove_leftovers(uri, BASE, pools=False, prefix=PREFIX)
    try:
        yield settings
    finally:
        remove_leftovers(uri, BASE, pools=True, prefix=PREFIX)
        bridge.close()
        shutil.rmtree(BASE, ignore_errors=True)
        with contextlib.suppress(OSError):
            BASE.parent.rmdir()


def _copy(xml: str, name: str, filtered: bool, filter_name: str | None = None) -> tuple[str, object]:
    """The server's domain as a transient copy named ``name``: with its own filter (``filtered``), with libvirt's
    ``filter_name`` and the same addresses, or with none. Returns the XML and what must run before its start (the
    nftables port's rules, for a server on hostbay's nftables filter)."""
    from hostbay.plugins.kvm import nft as N
    from hostbay.plugins.kvm import xml as X

    root = X.parse(xml)
    port = X.nft_port(root)
    addresses = X.addresses(root)
    root.find("name").text = name
    for el in root.findall("uuid"):
        root.remove(el)
    iface = root.find("./devices/interface")
    for tag in ("target", "alias"):
        for el in iface.findall(tag):
            iface.remove(el)
    before = None
    if not filtered:
        for el in iface.findall("filterref"):
            iface.remove(el)
    elif filter_name:  # the same addresses under another filter (libvirt's clean-traffic: what servers had before)
        if iface.find("filterref") is None:
            X.set_antispoof(iface, addresses, None)
        iface.find("filterref").set("filter", filter_name)
    elif port:
        copy_port = N.port_name(name)
        X.set_antispoof(iface, addresses, copy_port)
        mac = iface.find("mac").get("address")
        before = (copy_port, mac, addresses)
    return X.to_string(root), before


def _timed_start(conn, copy: tuple[str, object]) -> float | None:
    """Seconds ``virDomainCreateXML`` took (with the nftables port's rules written first, when it has them); None
    when QEMU failed to start twice (a loaded host)."""
    import libvirt

    from hostbay.plugins.kvm import nft as N

    xml, before = copy
    for attempt in range(2):
        t0 = time.perf_counter()
        try:
            if before:
                N.Nft().apply(*before)
            dom = conn.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            print(f"  start failed ({exc.get_error_message()})", file=sys.stderr)
            time.sleep(1)
            continue
        took = time.perf_counter() - t0
        dom.destroy()
        if before:
            N.Nft().remove(before[0])
        return took
    return None


def _daemon_pid() -> int | None:
    for name in ("virtnwfilterd", "libvirtd"):
        out = subprocess.run(["pidof", name], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
    return None


def count_firewall_calls(conn, xml: str) -> dict[str, int]:
    """Start ``xml`` once with strace on the daemon that runs nwfilter; count the firewall tools it ran."""
    pid = _daemon_pid()
    if pid is None or not shutil.which("strace"):
        return {}
    log = Path(tempfile.mkstemp(prefix="hbbench-strace-")[1])
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=execve", "-o", str(log), "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # strace attaches to every thread first
        dom = conn.createXML(xml, 0)
        time.sleep(0.3)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    dom.destroy()
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r'execve\("[^"]*/(ebtables|iptables|ip6tables)"', line)
        if m and "resumed" not in line:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    log.unlink()
    return counts


def firewall_call_cost(repeat: int = 30) -> dict[str, float]:
    """Seconds one ebtables/iptables/ip6tables invocation costs here (listing a chain that does not exist, which
    still loads the tool and reads the kernel's ruleset, as each of libvirt's calls does)."""
    out = {}
    for tool, args in (("ebtables", ["--concurrent", "-t", "nat", "-L", "hbbench-none"]),
                       ("iptables", ["-w", "-n", "-L", "hbbench-none"]),
                       ("ip6tables", ["-w", "-n", "-L", "hbbench-none"])):
        path = shutil.which(tool) or f"/usr/sbin/{tool}"
        t0 = time.perf_counter()
        for _ in range(repeat):
            subprocess.run([path, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[tool] = (time.perf_counter() - t0) / repeat
    return out


def order_to_running(count: int = 20, uri: str = "qemu:///system", count_calls: bool = False,
                     network: str = "bridge", antispoof: str = "nftables") -> tuple[list[dict], dict]:
    import libvirt

    from hostbay.core import billing, ipam, ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.catalog import CYCLES, Image, Node, Package, PackagePrice
    from hostbay.core.db import db
    from hostbay.core.drivers import PowerState
    from hostbay.core.lifecycle import driver_for
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
    orders, filtered, clean, bare, own = [], [], [], [], []
    info: dict = {}
    conn = libvirt.open(uri)
    with kvm_host(uri, network) as settings, app.app_context():
        settings["antispoof"] = antispoof
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
        # the node's Test connection, as staff run it when they add a node (virt_type auto's probe, filters)
        app.extensions["hostbay"].driver("virt", "kvm", settings).validate()
        worker = subprocess.Popen([sys.executable, "-m", "hostbay.web.cli", "worker", "--without-scheduler"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loads = []
        try:
            last_xml = None
            for i in range(count + 1):  # the first order warms the worker up and is not counted
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                svc = billing.place_order(user, pkg, "monthly", f"b{i}.example.test", image=image, key=f"b-{i}")
                svc_id = svc.id
                while True:
                    db.session.expire_all()
                    state = db.session.get(Service, svc_id).state
                    db.session.commit()
                    if state == "active":
                        break
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError(f"order {i} still {state} after 120 s")
                    time.sleep(0.005)  # the reading is at most 5 ms late
                took = time.perf_counter() - t0
                svc = db.session.get(Service, svc_id)
                drv = driver_for(svc)
                assert drv.status(svc.infra_ref) == PowerState.RUNNING
                dom = conn.lookupByName(svc.infra_ref["domain"])
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                if i == 0:
                    ref = re.search(r"<filterref filter='([^']+)'", xml)
                    info["filter"] = ref.group(1) if ref else "hostbay nftables"
                dom.destroy()
                f = _timed_start(conn, _copy(xml, f"{PREFIX}copy-{i}", filtered=True))
                c = _timed_start(conn, _copy(xml, f"{PREFIX}copy-{i}", True, "clean-traffic"))
                b = _timed_start(conn, _copy(xml, f"{PREFIX}copy-{i}", filtered=False))
                if i:
                    orders.append(took)
                    if None not in (f, c, b):
                        filtered.append(f)
                        clean.append(c)
                        bare.append(b)
                        own.append(took - f)
                print(f"order {i}: {took:.3f} s; start with its filter {f}, with clean-traffic {c}, without {b}; "
                      f"load {loads[-1]:.1f}", file=sys.stderr)
                if i == count and count_calls:
                    info["firewall_calls"] = count_firewall_calls(conn, _copy(xml, f"{PREFIX}strace", True)[0])
                drv.delete(svc.infra_ref)
            info["firewall_call_seconds"] = {k: round(v, 4) for k, v in firewall_call_cost().items()}
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            db.session.remove()
            db.drop_all()
            conn.close()
            shutil.rmtree(instance, ignore_errors=True)
    info["load_average_at_orders"] = [round(min(loads), 2), round(max(loads), 2)]
    return rows_for(orders, filtered, clean, bare, own, info.get("filter", "?")), info


def rows_for(orders, filtered, clean, bare, own, name) -> list[dict]:
    rows = summarize(f"paid order -> running (RQ + KVM, filter {name})", orders, 0.7)
    if bare:
        rows += (summarize(f"virDomainCreateXML of the same domain with its filterref ({name})", filtered)[:2]
                 + summarize("the same with libvirt's clean-traffic and the same parameters", clean)[:2]
                 + summarize("the same without a filter (virsh create)", bare)[:2]
                 + summarize(f"{name} at start (with - without, per order)",
                             [f - b for f, b in zip(filtered, bare)])[:2]
                 + summarize("clean-traffic at start (with - without, per order)",
                             [c - b for c, b in zip(clean, bare)])[:2]
                 + summarize("hostbay's own work (order - start with its filter)", own)[:2]
                 + summarize("n of the start comparisons", bare)[4:])
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--label", default="", help="a word for the result file (before, after)")
    parser.add_argument("--network", choices=("bridge", "ethernet"), default="bridge",
                        help="bridge (default): ports on a bridge of the run's own, where the filter acts; ethernet: "
                             "routed taps, where libvirt's filter is instantiated but inert")
    parser.add_argument("--antispoof", choices=("nftables", "nwfilter"), default="nftables",
                        help="the node's anti-spoofing: hostbay's nftables rules (default) or libvirt's nwfilter")
    parser.add_argument("--count-calls", action="store_true",
                        help="count the firewall commands of one filtered start with strace on the daemon (slows "
                             "the daemon down for everyone while it runs)")
    args = parser.parse_args(argv)
    rows, info = order_to_running(args.count, args.uri, args.count_calls, args.network, args.antispoof)
    info["network"], info["antispoof"] = args.network, args.antispoof
    print(table(rows))
    print(json.dumps(info, indent=2))
    RESULTS.mkdir(exist_ok=True)
    label = f"-{args.label}" if args.label else ""
    out = RESULTS / f"kvm_order{label}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "rows": rows, **info}, indent=2))
    print(f"\nwritten to {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

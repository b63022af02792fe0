"""Real guests: a Debian 12 cloud image (built by scripts/build-test-image: debootstrap, cloud-init 22.4) is ordered,
paid and booted through the KVM driver on the real libvirtd (QEMU emulation where KVM cannot run a guest), and the
test proves from inside the guest what the customer was promised, for create and for reinstall:
the key in authorized_keys (root and the image's default user), the hostname and FQDN, both allocated addresses,
a default route via the gateway, the nameserver in /etc/resolv.conf, and that sshd listens (the test logs in with
the key). The service is Active only after the guest's own phone-home.

Network: the guest's tap device is moved into a network namespace the test creates, holding the gateway address;
in there the test's SSH client reaches the guest, and socat relays the guest's phone-home (to the gateway address)
over a Unix socket to hostbay's WSGI app served by this test process. Nothing leaves the namespace and loopback.

Two renderers: the "ifupdown" image (Debian's own; cloud-init writes /etc/network/interfaces.d) and the
"networkd" image (ifupdown removed; cloud-init's renderer selection picks systemd-networkd). Neither image has
resolvconf or systemd-resolved. Marker ``guests``: scripts/test runs these in parallel with the rest.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from hostbay.core import billing, ipam, jobs
from hostbay.core.accounts import add_ssh_key
from hostbay.core.actions import request_action
from hostbay.core.catalog import Image, Node
from hostbay.core.services import Service

from guestnet import GW, NAMESERVER, NET, READY_PORT, Netns, _sh
from kvm_testhost import PREFIX

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.guests]

ROOT = Path(__file__).resolve().parents[3]
BOOT_SECONDS = int(os.environ.get("HOSTBAY_TEST_GUEST_TIMEOUT", "420"))


@pytest.fixture(scope="session")
def guest_images():
    """Paths of the built images (built now when missing; cached under HOSTBAY_TEST_IMAGE_CACHE)."""
    if os.geteuid() != 0:
        pytest.skip("real guests need root (debootstrap, network namespaces)")
    for tool in ("debootstrap", "extlinux", "socat", "ssh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/apt-packages.txt)")
    out = {}
    for variant in ("ifupdown", "networkd"):
        res = _sh("bash", str(ROOT / "scripts" / "build-test-image"), variant, check=False, timeout=1800)
        if res.returncode:
            pytest.fail(f"building the {variant} test image failed:\n{res.stderr[-3000:]}")
        out[variant] = res.stdout.strip().splitlines()[-1]
    return out


@pytest.fixture
def netns(app, tmp_path):
    from werkzeug.serving import make_server

    sock = str(tmp_path / "ready.sock")
    server = make_server(f"unix://{sock}", 0, app, threaded=True)
    os.chmod(sock, 0o666)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    ns = Netns(f"{PREFIX}ns{os.getpid() % 10000}", sock, domain_prefix=f"{PREFIX}guest-", ns_prefix=f"{PREFIX}ns")
    app.config["HOSTBAY_READY_URL"] = f"http://{GW}:{READY_PORT}"
    yield ns
    ns.close()
    server.shutdown()


def _run(app, op_id: str) -> dict:
    out = {}

    def run():
        with app.app_context():
            out["state"] = jobs.run_operation(op_id)

    thread = threading.Thread(target=run)
    thread.start()
    out["thread"] = thread
    return out


def _finish(db, out, svc_id, seconds):
    out["thread"].join(seconds)
    assert not out["thread"].is_alive(), "the job is still waiting"
    db.session.commit()
    return out["state"], db.session.scalar(db.select(Service.state).filter_by(id=svc_id))


def _prove_inside(netns, key, pub, addresses, what):
    ip = addresses[0]
    out = {}
    for user in ("root", "debian"):
        out[user] = netns.ssh(key, user, ip, "cat ~/.ssh/authorized_keys")
        assert pub.split()[1] in out[user], f"{what}: key missing for {user}"
    state = netns.ssh(key, "root", ip, "hostname; hostname -f; ip -4 -o addr show dev eth0; "
                      "echo ROUTES; ip -4 route show default; echo RESOLV; cat /etc/resolv.conf; echo LISTEN; "
                      "ss -Hltn 'sport = :22'; echo RENDERER; ls /etc/network/interfaces.d/ "
                      "/etc/systemd/network/ 2>/dev/null; echo MARK; ls /root; echo STATUS; cloud-init status || true")
    lines = state.splitlines()
    assert lines[0] == "web1" and lines[1] == "web1.example.test", f"{what}: hostname {lines[:2]}"
    for a in addresses:
        assert f"inet {a}/24" in state, f"{what}: address {a} missing:\n{state}"
    routes = state.split("ROUTES\n", 1)[1].split("RESOLV\n", 1)[0]
    assert f"default via {GW} dev eth0" in routes, f"{what}: no default route via the gateway:\n{state}"
    resolv = state.split("RESOLV\n", 1)[1].split("LISTEN\n", 1)[0]
    assert f"nameserver {NAMESERVER}" in resolv, f"{what}: resolver not in /etc/resolv.conf:\n{resolv}"
    listen = state.split("LISTEN\n", 1)[1].split("RENDERER\n", 1)[0]
    assert ":22" in listen
    assert "status: done" in state.split("STATUS\n", 1)[1], f"{what}: cloud-init did not finish cleanly"
    return state


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("variant", ["ifupdown", "networkd"])
def test_real_guest_is_ready_only_when_it_is(variant, kvm_host, guest_images, netns, app, db, job_runner,
                                            make_user, make_package, tmp_path):
    template = kvm_host.templates / f"{PREFIX}guest-{variant}.qcow2"
    if not template.exists():
        try:
            os.link(guest_images[variant], template)
        except OSError:
            shutil.copyfile(guest_images[variant], template)
        template.chmod(0o644)
    settings = kvm_host.settings(name_prefix=f"{PREFIX}guest-", shaping="off", stop_timeout=60)
    node = Node(name=f"guest-node-{variant}", driver="kvm", settings=settings, vcpus=8, memory_mib=8192,
                disk_gib=100)
    image = Image(driver="kvm", slug=f"debian12-{variant}", name=f"Debian 12 ({variant})", source=template.name,
                  os_family="debian", reports_readiness=True)
    db.session.add_all([node, image])
    db.session.commit()
    ipam.create_pool(name=f"guests-{variant}", cidr=NET, gateway=GW, nameservers=[NAMESERVER], node_ids=[node.id])
    pkg = make_package(driver="kvm", vcpus=1, memory_mib=768, disk_gib=3, ipv4_count=2, monthly_cents=500)
    user = make_user(balance_cents=500)
    keyfile = tmp_path / "id_ed25519"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile))
    pub = (tmp_path / "id_ed25519.pub").read_text().strip()
    key = add_ssh_key(user, "laptop", pub)
    db.session.commit()
    app.config["HOSTBAY_READY_TIMEOUT"] = BOOT_SECONDS

    # paid order -> provisioning job -> the real guest boots -> its phone-home -> Active
    svc = billing.place_order(user, pkg, "monthly", "web1.example.test", image=image, ssh_key_ids=[key.id],
                              key=f"order-{variant}")
    svc_id, uuid = svc.id, svc.uuid
    op_id = db.session.scalar(db.select(jobs.Operation.id).filter_by(service_id=svc_id, kind="service.provision"))
    db.session.commit()
    started = time.monotonic()
    out = _run(app, op_id)
    seen_provisioning = False
    while out["thread"].is_alive() and time.monotonic() - started < 20:
        db.session.commit()
        state = db.session.scalar(db.select(Service.state).filter_by(id=svc_id))
        db.session.commit()
        seen_provisioning = seen_provisioning or state == "provisioning"
        if netns.moved:  # the domain runs (libvirt says so) ...
            assert state == "provisioning"  # ... and that is not "ready"
            break
        time.sleep(0.2)
    op_state, state = _finish(db, out, svc_id, BOOT_SECONDS + 120)
    boot = time.monotonic() - started
    assert op_state == jobs.SUCCEEDED and state == "active", (op_state, state)
    from hostbay.core.readiness import ReadinessCheck
    check = db.session.scalar(db.select(ReadinessCheck).filter_by(service_id=svc_id))
    assert check.reported_at is not None and check.report["hostname"] == "web1"  # posted by the guest itself
    svc = db.session.get(Service, svc_id)
    addresses = [a.address for a in ipam.addresses_for(svc)]
    assert len(addresses) == 2
    state_text = _prove_inside(netns, keyfile, pub, addresses, f"{variant} create")
    renderer_files = state_text.split("RENDERER\n", 1)[1]
    if variant == "ifupdown":
        assert "50-cloud-init" in renderer_files
    else:
        assert "10-cloud-init-eth0.network" in renderer_files
    netns.ssh(keyfile, "root", addresses[0], "touch /root/old-system")
    print(f"\n{variant}: paid order to ready in {boot:.0f} s")

    # reinstall: a fresh disk and seed, the same key, and again Active only after the new guest reports
    request_action(svc, "reinstall", user)
    db.session.commit()
    rop_id = db.session.scalar(db.select(jobs.Operation.id).filter_by(service_id=svc_id, kind="service.reinstall"))
    db.session.commit()
    started = time.monotonic()
    out = _run(app, rop_id)
    op_state, state = _finish(db, out, svc_id, BOOT_SECONDS + 120)
    assert op_state == jobs.SUCCEEDED and state == "active", (op_state, state)
    checks = db.session.scalars(db.select(ReadinessCheck).filter_by(service_id=svc_id)
                                .order_by(ReadinessCheck.id)).all()
    assert len(checks) == 2 and all(c.reported_at is not None for c in checks)
    state_text = _prove_inside(netns, keyfile, pub, addresses, f"{variant} reinstall")
    assert "old-system" not in state_text.split("MARK\n", 1)[1].split("STATUS\n", 1)[0]  # a fresh system
    print(f"{variant}: reinstall to ready in {time.monotonic() - started:.0f} s")

    # a clean stop, then the server is removed with everything it had
    from hostbay.core.lifecycle import driver_for
    drv = driver_for(svc)
    drv.stop(svc.infra_ref, timeout=90)
    drv.delete(svc.infra_ref)

"""cloud-init NoCloud seed: user-data, meta-data and network-config (v2) written to an ISO 9660 image with the
volume label ``cidata``. The documents are JSON, which YAML parsers (cloud-init's included) read as YAML.

Format choices, each forced by what cloud-init (22.4, Debian 12; checked in real guests by
plugins/kvm/tests/test_kvm_guests.py) does with the alternatives:

- Default routes are ``gateway4``/``gateway6``, not ``routes: [{to: 0.0.0.0/0, via: ...}]``. With the ifupdown
  renderer (Debian's cloud images) a v2 route becomes ``post-up route add default gw ... || true``; ``route`` is
  net-tools, which Debian's cloud-init does not depend on, so the line fails silently and the server has no
  default route. ``gateway4`` renders as ``gateway GW`` (ifupdown), ``Gateway=`` (networkd) and is passed through
  to netplan unchanged, so it works on every renderer.
- Nameservers stay in the network config (``nameservers.addresses``): netplan/networkd hand them to
  systemd-resolved, NetworkManager writes them itself, ifupdown writes ``dns-nameservers``. But ifupdown only
  reaches ``/etc/resolv.conf`` through resolvconf, and networkd only through systemd-resolved, and a minimal image
  may have neither; so user-data's ``bootcmd`` also writes ``/etc/resolv.conf`` when it is a plain file and no
  resolvconf is installed (a symlink means systemd-resolved or resolvconf owns it, and it is left alone).
  cloud-init's own ``resolv_conf`` module is not used: Debian's cloud.cfg does not run it.
- The hostname is the short name plus ``fqdn``, with ``manage_etc_hosts`` so ``hostname -f`` answers the FQDN
  without DNS.
- Extra addresses are further entries of ``addresses`` on the one interface (ifupdown renders one stanza per
  address, networkd one ``Address=`` each); IPv6 has ``accept-ra: false`` so only the allocated address and
  gateway are used.
- Readiness (``spec.ready_url``): ``phone_home`` POSTs to hostbay's single-use URL at the end of the final stage;
  a ``runcmd`` before it waits (at most 60 s) until sshd listens, so "ready" includes a reachable SSH server.
"""

from __future__ import annotations

import io
import ipaddress
import json

from hostbay.core.drivers import ServerSpec
from hostbay.core.errors import FatalDriverError

LABEL = "cidata"
INTERFACE = "eth0"


def user_data(spec: ServerSpec) -> str:
    short = spec.hostname.split(".", 1)[0]
    doc: dict = {
        "hostname": short,
        "fqdn": spec.hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        "disable_root": False,
        "ssh_authorized_keys": list(spec.ssh_keys),
        "ssh_pwauth": bool(spec.root_password),
    }
    if spec.root_password:
        doc["chpasswd"] = {"expire": False, "users": [{"name": "root", "password": spec.root_password,
                                                        "type": "text"}]}
    if spec.nameservers:
        doc["bootcmd"] = [["sh", "-c", resolv_conf_script(spec.nameservers)]]
    if spec.ready_url:
        doc["runcmd"] = [["sh", "-c", WAIT_FOR_SSHD]]
        doc["phone_home"] = {"url": spec.ready_url, "post": ["instance_id", "hostname", "fqdn"], "tries": 10}
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


WAIT_FOR_SSHD = ("command -v ss >/dev/null || exit 0; for i in $(seq 60); do "
                 "ss -Hltn 'sport = :22' | grep -q . && exit 0; sleep 1; done")


def resolv_conf_script(nameservers) -> str:
    """Shell that writes the resolvers to /etc/resolv.conf unless resolvconf or systemd-resolved owns it."""
    lines = "".join(f"nameserver {ipaddress.ip_address(ns)}\\n" for ns in nameservers)
    return ("if [ ! -L /etc/resolv.conf ] && ! command -v resolvconf >/dev/null; then "
            f"printf '{lines}' > /etc/resolv.conf; fi")


def meta_data(spec: ServerSpec, instance_id: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": spec.hostname.split(".", 1)[0]}, indent=2) + "\n"


def network_config(spec: ServerSpec, mac: str) -> str:
    eth: dict = {"match": {"macaddress": mac}, "set-name": INTERFACE,
                 "addresses": [f"{a.address}/{a.prefix}" for a in spec.addresses]}
    for version in (4, 6):  # gateway4/gateway6, not routes: see the module docstring
        gateways = [a.gateway for a in spec.addresses if a.version == version and a.gateway]
        if gateways:
            eth[f"gateway{version}"] = gateways[0]
    if any(a.version == 6 for a in spec.addresses):
        eth["accept-ra"] = False
    if spec.nameservers:
        eth["nameservers"] = {"addresses": list(spec.nameservers)}
    if not spec.addresses:
        eth["dhcp4"] = True
    return json.dumps({"version": 2, "ethernets": {INTERFACE: eth}}, indent=2) + "\n"


def documents(spec: ServerSpec, mac: str, instance_id: str) -> dict[str, str]:
    for a in spec.addresses:
        ipaddress.ip_address(a.address)  # refuse garbage before it reaches a guest
    return {"user-data": user_data(spec), "meta-data": meta_data(spec, instance_id),
            "network-config": network_config(spec, mac)}


def build_iso(files: dict[str, str]) -> bytes:
    """An ISO 9660 image (Joliet and Rock Ridge names, so the guest sees ``user-data`` as written)."""
    try:
        import pycdlib
    except ImportError:  # pragma: no cover - pycdlib is part of hostbay[kvm]
        raise FatalDriverError("pycdlib is not installed on this worker: install hostbay[kvm]") from None
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for i, (name, text) in enumerate(sorted(files.items())):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{i};1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()

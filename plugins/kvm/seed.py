"""cloud-init NoCloud seed: user-data, meta-data and network-config (v2) written to an ISO 9660 image with the
volume label ``cidata``. The documents are JSON, which YAML parsers (cloud-init's included) read as YAML."""

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
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def meta_data(spec: ServerSpec, instance_id: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": spec.hostname.split(".", 1)[0]}, indent=2) + "\n"


def network_config(spec: ServerSpec, mac: str) -> str:
    eth: dict = {"match": {"macaddress": mac}, "set-name": INTERFACE,
                 "addresses": [f"{a.address}/{a.prefix}" for a in spec.addresses]}
    routes = []
    for version in (4, 6):
        gateways = [a.gateway for a in spec.addresses if a.version == version and a.gateway]
        if gateways:
            default = "0.0.0.0/0" if version == 4 else "::/0"
            routes.append({"to": default, "via": gateways[0]})
    if routes:
        eth["routes"] = routes
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

"""Demo: a Proxmox node, package and image pointing at the API stand-in, so a demo order onto Proxmox completes.

``scripts/demo`` starts the stand-in (``python -m hostbay.plugins.proxmox.standin --info FILE``), which writes its
URL, token and CA file to ``FILE``; ``hostbay proxmox-demo FILE`` then adds (or updates, on every demo start) the
node ``demo-pve-1``, the package "Cloud S (Proxmox)" and the image "Debian 12 (Proxmox)" whose source is the
stand-in's template VMID. If the stand-in cannot start, the demo runs without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext

NODE = "demo-pve-1"
PACKAGE = "cloud-s-proxmox"


def load(info: dict) -> list[str]:
    from hostbay.core.catalog import CYCLES, Image, Node, Package, PackagePrice
    from hostbay.core.db import db

    settings = {"api_url": info["url"], "token_id": info["token_id"], "token_secret": info["token_secret"],
                "verify_tls": True, "ca_bundle": info["ca_file"], "node": info["node"], "storage": "local-lvm",
                "iso_storage": "local", "bridge": "vmbr0", "vmid_min": 10000, "vmid_max": 10999,
                "full_clone": True, "timeout": 30, "stop_timeout": 5}
    node = db.session.scalar(db.select(Node).filter_by(name=NODE))
    if node is None:
        node = Node(name=NODE, driver="proxmox", vcpus=64, memory_mib=256 * 1024, disk_gib=4000)
        db.session.add(node)
    node.settings = settings  # the stand-in's URL and token change on every start
    if db.session.scalar(db.select(Package).filter_by(slug=PACKAGE)) is None:
        pkg = Package(slug=PACKAGE, name="Cloud S (Proxmox)", kind="vps", driver="proxmox", vcpus=2,
                      memory_mib=2048, disk_gib=40, ipv4_count=1, port_speed_mbit=1000, sort=10,
                      description="2 vCPU, 2 GiB RAM, 40 GiB SSD on Proxmox VE")
        pkg.prices = [PackagePrice(cycle=c, price_cents=900 * m) for c, m in CYCLES.items()]
        db.session.add(pkg)
    if db.session.scalar(db.select(Image).filter_by(driver="proxmox", slug="debian-12")) is None:
        db.session.add(Image(driver="proxmox", slug="debian-12", name="Debian 12 (Proxmox)",
                             source=str(info["template"])))
    db.session.commit()
    return [f"Proxmox demo: node {NODE} uses the Proxmox VE API stand-in at {info['url']}"]


@click.command("proxmox-demo")
@click.argument("info_file", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def proxmox_demo(info_file):
    """Add the Proxmox demo node, package and image for the stand-in described by INFO_FILE."""
    for line in load(json.loads(Path(info_file).read_text())):
        click.echo(line)

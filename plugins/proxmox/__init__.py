"""Proxmox VE virtualization through proxmoxer (``hostbay[proxmox]``): the ``proxmox`` VirtDriver, its PVE
firewall NetworkFilter, and a job that removes a deleted ISO image from every Proxmox node's ISO storage.

proxmoxer is imported only when the driver talks to a cluster, so the plugin loads without it; using the driver
there fails with a FatalDriverError that says what to install. See docs/proxmox.md.
"""

from hostbay.core.hookspecs import hookimpl

from .driver import ProxmoxDriver
from .netfilter import ProxmoxNetworkFilter

__all__ = ["ProxmoxDriver", "ProxmoxNetworkFilter"]

REMOVE_ISO = "proxmox.remove_iso"


@hookimpl
def hostbay_virt_drivers():
    return [ProxmoxDriver]


@hookimpl
def hostbay_network_filters():
    return [ProxmoxNetworkFilter]


@hookimpl
def hostbay_cli_commands():
    from .demo import proxmox_demo

    return [proxmox_demo]


@hookimpl
def hostbay_job_handlers():
    from hostbay.core import jobs

    return {REMOVE_ISO: jobs.handler(REMOVE_ISO, queue=jobs.DRIVER)(remove_iso_job)}  # it calls the nodes' APIs


@hookimpl
def hostbay_iso_deleted(iso):
    from hostbay.core import jobs

    jobs.enqueue(REMOVE_ISO, key=f"{REMOVE_ISO}:{iso.uuid}", payload={"path": str(iso.path)},
                 title="Remove ISO image")


def remove_iso_job(op, payload):
    """Remove the image's uploaded copy from each Proxmox node's ISO storage (nodes sharing one are asked once).
    Safe to re-run: a copy that is already gone is skipped."""
    from sqlalchemy import select

    from hostbay.core.catalog import Node
    from hostbay.core.db import db

    nodes = db.session.scalars(select(Node).where(Node.driver == ProxmoxDriver.name)).all()
    settings = [dict(n.settings or {}) for n in nodes]
    db.session.commit()  # no transaction while the storages are asked
    removed, seen = 0, set()
    for cfg in settings:
        drv = ProxmoxDriver(cfg)
        where = (drv.scope, drv.node, drv.config["iso_storage"])
        if where in seen:
            continue
        seen.add(where)
        removed += int(drv.remove_iso(payload["path"]))
    return {"removed": removed}

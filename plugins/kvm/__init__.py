"""KVM virtualization through libvirt (``hostbay[kvm]``): the ``kvm`` VirtDriver and its anti-spoofing
NetworkFilter (hostbay's nftables rules on a local host, libvirt's nwfilter on a remote one).

libvirt-python is imported only when the driver talks to a host, so this plugin loads and lists its drivers on a
machine without it; using the driver there fails with a FatalDriverError that says what to install.
"""

from hostbay.core.hookspecs import hookimpl

from .driver import KvmDriver
from .netfilter import KvmNetworkFilter

__all__ = ["KvmDriver", "KvmNetworkFilter"]


@hookimpl
def hostbay_virt_drivers():
    return [KvmDriver]


@hookimpl
def hostbay_network_filters():
    return [KvmNetworkFilter]


ANTISPOOF_RESYNC = "kvm.antispoof_resync"
ANTISPOOF_RESYNC_EVERY = 60  # seconds a flushed host ruleset may leave running servers unfiltered at most


@hookimpl
def hostbay_job_handlers():
    from hostbay.core import jobs

    return {ANTISPOOF_RESYNC: jobs.handler(ANTISPOOF_RESYNC, queue=jobs.DRIVER)(antispoof_resync_job)}


@hookimpl
def hostbay_scheduled_jobs():
    return [(ANTISPOOF_RESYNC, ANTISPOOF_RESYNC_EVERY)]


@hookimpl
def hostbay_checks(app):
    """KVM nodes whose servers' routed taps no filter protects: libvirt's nwfilter (a remote URI, or a worker
    without root or nft) with ``network: ethernet``."""
    from sqlalchemy import select

    from hostbay.core.catalog import Node
    from hostbay.core.db import db

    out = []
    rows = db.session.execute(select(Node.name, Node.settings).where(Node.driver == KvmDriver.name,
                                                                     Node.enabled.is_(True))).all()
    for name, settings in rows:
        drv = app.extensions["hostbay"].driver("virt", KvmDriver.name, dict(settings or {}))
        if drv.antispoof == "nwfilter" and drv.config["network"] == "ethernet":
            out.append(("warning", f"KVM node {name}: its servers' routed taps (network 'ethernet') are not filtered "
                                   f"against spoofing (libvirt's nwfilter acts on bridged ports only): run its "
                                   f"worker on the host as root with nft installed and set 'Anti-spoofing' to "
                                   f"nftables, or use network 'bridge'"))
    return out


def antispoof_resync_job(op, payload):
    """Each enabled KVM node on hostbay's nftables filter writes its running servers' port chains again
    (``KvmDriver.resync_antispoof``); nodes of one host share the table and each writes only its own servers."""
    from flask import current_app
    from sqlalchemy import select

    from hostbay.core.catalog import Node
    from hostbay.core.db import db

    nodes = db.session.execute(select(Node.name, Node.settings).where(Node.driver == KvmDriver.name,
                                                                      Node.enabled.is_(True))).all()
    db.session.commit()  # no transaction open while the hosts are asked
    written = {}
    for name, settings in nodes:
        drv = current_app.extensions["hostbay"].driver("virt", KvmDriver.name, dict(settings or {}))
        if drv.antispoof == "nftables":
            written[name] = drv.resync_antispoof()
    return {"ports": written}

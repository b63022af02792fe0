"""Network filters: keep a server's traffic to its allocated addresses (the FAQ's anti-spoofing promise).

``apply_network_filter(service)`` is called after provisioning and whenever the service's addresses change; it
finds the ``NetworkFilter`` drivers that serve the service's virtualization driver and applies the current set.
Address changes made by staff (assign, move, release) call :func:`enqueue_filter_update`, which queues a
``network.apply_filter`` operation: it runs after the change commits and is retried when the driver is briefly
unreachable, so the filter follows the database even if the host was down at the moment of the change.
"""

from __future__ import annotations

from flask import current_app

from . import ipam_models, jobs
from .db import new_uuid


def apply_network_filter(service, virt_driver=None, op=None) -> int:
    """Apply the service's addresses through every matching filter; returns how many filters ran. Inside a job
    (``op``) each call goes through the driver-call template."""
    if not service.node or not service.infra_ref:
        return 0
    registry = current_app.extensions["hostbay"]
    if virt_driver is None:
        from .service_drivers import driver_for

        virt_driver = driver_for(service)
    from .db import db

    addresses = ipam_models.addresses_for(service)
    node_driver, settings, ref = service.node.driver, dict(service.node.settings or {}), dict(service.infra_ref)
    filters = [cls for cls in registry.drivers.get("network_filter", {}).values() if node_driver in cls.drivers]
    if filters:
        db.session.commit()  # no transaction (on SQLite: no write lock) while the filters talk to the host
    for cls in filters:
        if op is not None:
            jobs.call_driver(op, cls(settings).apply, virt_driver, ref, addresses)
        else:
            cls(settings).apply(virt_driver, ref, addresses)
    return len(filters)


def enqueue_filter_update(service):
    """Queue a filter update for ``service`` (runs after the current transaction commits). Services without a
    server yet need none: provisioning applies the filter itself."""
    if not service.node_id or not service.infra_ref:
        return None
    return jobs.enqueue("network.apply_filter", key=f"network.apply_filter:{service.uuid}:{new_uuid()}",
                        service=service, title="Update network settings", payload={"service": service.uuid})


@jobs.handler("network.apply_filter", queue=jobs.DRIVER)
def _apply_filter_job(op, payload):
    from .db import db
    from .services import Service

    service = db.session.get(Service, op.service_id)
    if service is None:
        return {"filters": 0}
    return {"filters": apply_network_filter(service, op=op)}

"""Helpers shared by the customer blueprints."""

from __future__ import annotations

from flask import abort
from flask_login import current_user

from hostbay.core.services import Service, get_customer_service


def own_service_or_404(uuid: str) -> Service:
    """The signed-in customer's service by public UUID; any other service (another customer's, an ended one, a
    malformed UUID) is a 404, the same answer as for one that does not exist."""
    service = get_customer_service(current_user.id, uuid)
    if service is None:
        abort(404)
    return service

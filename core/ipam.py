"""IP address management. (Interface fixed here; the implementation arrives with the IPAM work.)

Lifecycle code calls exactly these functions:
- ``allocate_for_service(service)`` during provisioning: reserve the package's addresses (idempotent per service)
  and return them as ``drivers.Address`` items;
- ``addresses_for(service)``: the addresses currently attached;
- ``release_for_service(service)`` on removal: put them into cooldown.
"""

from __future__ import annotations

from .drivers import Address


def allocate_for_service(service) -> list[Address]:
    return []


def addresses_for(service) -> list[Address]:
    return []


def release_for_service(service) -> None:
    return None

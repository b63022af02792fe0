"""IP address management. (Interface fixed here; the implementation arrives with the IPAM work.)

Lifecycle code calls exactly these functions:
- ``allocate_for_service(service)`` during provisioning: reserve the package's addresses (idempotent per service)
  and return them as ``drivers.Address`` items;
- ``addresses_for(service)``: the addresses currently attached;
- ``addresses_for_services(services)``: the same for many services at once, as ``{service.id: [Address, ...]}``,
  in a constant number of queries (the dashboard lists every service of a customer with its main address);
- ``release_for_service(service)`` on removal: put them into cooldown.
"""

from __future__ import annotations

from .drivers import Address


def allocate_for_service(service) -> list[Address]:
    return []


def addresses_for(service) -> list[Address]:
    return []


def addresses_for_services(services) -> dict[int, list[Address]]:
    return {s.id: [] for s in services}


def release_for_service(service) -> None:
    return None

""""Test connection": a configured driver's ``validate()`` with its outcome in words for staff (who may read the
driver's own text; customers never do). Used when staff add or change a node, a DNS backend or a gateway."""

from __future__ import annotations

import logging

from .errors import HostbayError

log = logging.getLogger(__name__)


def test_connection(driver) -> tuple[bool, str]:
    """(passed, message) of ``driver.validate()``."""
    try:
        driver.validate()
    except HostbayError as exc:
        return False, f"The connection test failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - a driver bug is reported to staff, not raised into the page
        log.exception("validate() of %s raised", getattr(driver, "name", driver))
        return False, f"The connection test failed: {type(exc).__name__}: {exc}"
    return True, "The connection test passed."


test_connection.__test__ = False  # not a pytest test, whatever imports it

"""Typed errors shared by core and plugins.

``HostbayError`` is the root. Drivers raise ``TransientDriverError`` for conditions that a retry may cure
(connection refused, lock held, timeout) and ``FatalDriverError`` for ones it will not (bad settings, missing
template). The job layer retries the first and alerts staff for the second. ``customer_message`` is what a
customer may read; the exception's own text is admin detail and never reaches a customer page.
"""

from __future__ import annotations


class HostbayError(Exception):
    customer_message = "Something went wrong. Our staff have been notified."

    def __init__(self, message: str = "", *, customer_message: str | None = None):
        super().__init__(message or self.__class__.__name__)
        if customer_message is not None:
            self.customer_message = customer_message


class UserError(HostbayError):
    """Bad input or a refused action: the message itself is safe to show to the person who asked."""

    def __init__(self, message: str):
        super().__init__(message, customer_message=message)


class FieldError(UserError):
    """A refused value, naming the form field it belongs to (the page shows the message next to that field)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class NotFound(UserError):
    pass


class ActionNotAllowed(UserError):
    pass


class InsufficientFunds(UserError):
    def __init__(self, needed_cents: int, balance_cents: int):
        from .money import format_cents

        self.needed_cents = needed_cents
        self.balance_cents = balance_cents
        self.shortfall_cents = needed_cents - balance_cents
        super().__init__(
            f"Insufficient wallet balance: this costs {format_cents(needed_cents)}, your balance is "
            f"{format_cents(balance_cents)}. Add at least {format_cents(self.shortfall_cents)} to continue."
        )


class SettingsError(UserError):
    """A driver's settings did not validate; ``errors`` maps field name to message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class DriverError(HostbayError):
    customer_message = "The operation could not be completed. Our staff have been notified."


class TransientDriverError(DriverError):
    """The job layer retries the operation later."""


class FatalDriverError(DriverError):
    """No retry; the operation fails and staff are alerted with the message."""

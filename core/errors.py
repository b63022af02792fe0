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


class FieldErrors(UserError):
    """Several refused values at once: ``errors`` maps each bad form field's name to its message (in the order they
    were found), so a page can show every message next to its own field in one go. ``field`` is the first one, for
    pages that show a single field's error."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__(" ".join(self.errors.values()))

    @property
    def field(self) -> str | None:
        return next(iter(self.errors), None)


class FieldErrorCollector:
    """Collects every refused field of a form instead of stopping at the first::

        errors = FieldErrorCollector()
        with errors.check("price"):      # a FieldError/FieldErrors inside names its own field(s); any other
            price = parse(form["price"])  # UserError is filed under "price"
        errors.add("name", "Give it a name.")
        errors.raise_if_any()             # FieldErrors with all of them

    The first message of a field wins (later checks of the same field add nothing)."""

    def __init__(self):
        self.errors: dict[str, str] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)

    def merge(self, exc: UserError, field: str | None = None) -> None:
        if isinstance(exc, (FieldErrors, SettingsError)):
            for name, message in exc.errors.items():
                self.add(name, message)
        elif isinstance(exc, FieldError):
            self.add(exc.field, exc.customer_message)
        else:
            self.add(field or "", exc.customer_message)

    def check(self, field: str | None = None):
        return _Check(self, field)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise FieldErrors(self.errors)


class _Check:
    def __init__(self, collector: FieldErrorCollector, field: str | None):
        self.collector, self.field = collector, field

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, UserError):
            self.collector.merge(exc, self.field)
            return True
        return False


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

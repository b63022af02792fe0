"""Money: integer US cents in storage, ``Decimal`` in arithmetic, never float.

Pro-rata rule (docs/billing.md): amount = (new price - old price) x remaining seconds / cycle seconds, computed
exactly with Decimal and rounded once, ROUND_HALF_UP, to whole cents.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


def to_cents(value: str | int | Decimal) -> int:
    """Parse a USD amount ("12.34", Decimal, or int dollars) into integer cents; refuse floats and sub-cent input."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError("money must not be a float")
    try:
        d = Decimal(str(value).strip().lstrip("$")) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    cents = d * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount has fractions of a cent: {value!r}")
    return int(cents)


def cents_to_decimal(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def round_cents(amount_in_cents: Decimal) -> int:
    return int(amount_in_cents.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _seconds(delta) -> int:
    return delta.days * 86400 + delta.seconds


def prorata_cents(old_price_cents: int, new_price_cents: int, now: datetime, period_start: datetime,
                  period_end: datetime) -> int:
    """Signed pro-rata amount for changing price at ``now`` within [period_start, period_end).

    Positive: the customer pays (upgrade). Negative: the customer is credited (downgrade).
    """
    total = Decimal(_seconds(period_end - period_start))
    if total <= 0:
        raise ValueError("billing period has no length")
    remaining = min(max(Decimal(_seconds(period_end - now)), Decimal(0)), total)
    return round_cents(Decimal(new_price_cents - old_price_cents) * remaining / total)

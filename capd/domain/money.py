"""Prices and money units (spec §3).

Money is Decimal in the domain and an integer count of ``UNITS_PER_USD`` in storage, so
that sums are exact in every backend.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from capd.constants import MAX_UNITS, UNITS_PER_USD

__all__ = ["MAX_UNITS", "UNITS_PER_USD", "balance_number", "format_cost", "from_units",
           "parse_amount", "task_price_units", "to_units", "usd_text"]
_QUANT = Decimal(1) / UNITS_PER_USD


def to_units(amount: Decimal) -> int:
    """USD as a Decimal to storage units; refuses sub-unit precision."""
    scaled = amount * UNITS_PER_USD
    if scaled != scaled.to_integral_value():
        raise ValueError(f"amount {amount} has more than 8 decimal places")
    return int(scaled)


def from_units(units: int) -> Decimal:
    return (Decimal(units) / UNITS_PER_USD).quantize(_QUANT)


def task_price_units(price_per_1000: Decimal) -> int:
    """Price of one task in units, rounded half-up to a unit."""
    return int((price_per_1000 * UNITS_PER_USD / 1000).to_integral_value(ROUND_HALF_UP))


def format_cost(units: int) -> str:
    """The ``cost`` string of getTaskResult: at least 5 decimals, more when needed."""
    return cost_text(from_units(units))


def balance_number(units: int) -> float:
    """getBalance's JSON number (clients read a number; spec §11)."""
    return float(from_units(units))


def parse_amount(text: str) -> Decimal:
    """An operator-typed USD amount: finite, at most 8 decimals."""
    amount = Decimal(text)
    if not amount.is_finite():
        raise ValueError("amount must be finite")
    if abs(to_units(amount)) > MAX_UNITS:
        raise ValueError("amount is out of range")
    return amount


def usd_text(units: int) -> str:
    """Units as a plain USD string with 8 decimals (never scientific notation)."""
    return f"{from_units(units):f}"


def cost_text(amount: Decimal) -> str:
    """``format_cost`` of an amount in USD."""
    text = f"{amount:f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(5, '0')}"

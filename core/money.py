"""Money as integer minor units: ISO 4217 exponents and exact conversions.

Parsing happens vectorised (DuckDB, or Arrow for the million-row formats) with the same
rules; these helpers are for the few places that handle single values (config
thresholds, rendering).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 currencies whose minor unit is not 1/100.
_EXPONENT_EXCEPTIONS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}

SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"}


def exponent(currency: str) -> int:
    return _EXPONENT_EXCEPTIONS.get(currency.upper(), 2)


def to_minor(value: Decimal | str | int, currency: str) -> int:
    """Exact: refuses a value with more decimals than the currency has."""
    d = Decimal(str(value))
    scaled = d.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more decimals than {currency} allows")
    return int(scaled)


def round_to_minor(value: Decimal, currency: str) -> int:
    return int(Decimal(value).scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_major(minor: int | None, currency: str) -> str | None:
    """Decimal string in major units, e.g. 12345 CNY -> '123.45' (never a float)."""
    if minor is None:
        return None
    e = exponent(currency)
    return str(Decimal(minor).scaleb(-e).quantize(Decimal(1).scaleb(-e)))


def display(minor: int | None, currency: str) -> str:
    """For people: thousands separators and the currency's symbol, e.g. ¥1,234.50."""
    if minor is None:
        return "—"
    e = exponent(currency)
    value = Decimal(minor).scaleb(-e)
    sign = "-" if value < 0 else ""
    body = f"{abs(value):,.{e}f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{body}" if symbol else f"{sign}{body} {currency}"

"""What the bank-statement sources (MT940, camt.05x, OFX) share: one line -> one record.

Bank statements are small (a few thousand lines a day at most) and arrive as nested
text or XML, so the parsers build plain Python `BankLine`s and this module turns them
into the Arrow table every source returns.

Conventions, the same for every bank format:
- **Direction.** The sign is the bank's credit/debit mark: money into the merchant's
  account is positive, money out negative. `kind` says the same in words: a credit is a
  `payment`, a debit a `payout` (money paid out of the account: transfers, card
  spending, charges), and a reversal (MT940 `RC`/`RD`, camt `RvslInd`) an
  `adjustment` whose sign is the direction of the reversing entry.
- **Day and time.** The business day is the booking date. Where the bank gives only a
  date, `occurred_at` is the start of that day in the statement's time zone (from the
  source's config), in UTC. Where it gives an instant with an offset, that instant in
  UTC; a time without an offset is local to the statement's time zone.
- **Money** is Decimal from the file and integer minor units here; a value with more
  decimals than its currency has is refused, never rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa

from core.money import exponent
from core.sources.base import RECORD_FIELDS, ParseError

PAYMENT, PAYOUT, ADJUSTMENT = "payment", "payout", "adjustment"


@dataclass
class BankLine:
    line: int  # 1-based physical line of the entry in the file
    ref: str  # identity inside the ledger: stable across re-deliveries of the statement
    amount: int  # signed minor units: credit positive, debit negative
    currency: str
    booked: date  # booking date (the business day)
    kind: str = PAYMENT
    at: datetime | None = None  # the booking instant when the bank gives one (aware, or naive local)
    txn_id: str | None = None  # the bank's reference for the line
    order_id: str | None = None  # the account owner's (merchant's) reference
    status: str = "success"
    payer: str | None = None  # counterparty name
    memo: str | None = None


def kind_for(amount: int, reversal: bool = False) -> str:
    if reversal:
        return ADJUSTMENT
    return PAYMENT if amount >= 0 else PAYOUT


_DECIMAL = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")


def decimal(path, text: str | None, *, line: int | None, field: str) -> Decimal:
    """A plain decimal number ('12.50', '-3', '12,50' with a decimal comma): never a float."""
    value = (text or "").strip()
    if not _DECIMAL.fullmatch(value):
        raise ParseError(path, "not a decimal amount", line=line, field=field, value=value)
    return Decimal(value.replace(",", "."))


def minor(path, value: Decimal, currency: str, *, line: int | None, field: str) -> int:
    """Exact integer minor units; a value finer than the currency's minor unit is an error."""
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ParseError(path, f"has more decimals than {currency} allows ({exponent(currency)})",
                         line=line, field=field, value=str(value))
    return int(scaled)


def check_currency(path, code: str | None, *, line: int | None, field: str) -> str:
    value = (code or "").strip()
    if len(value) != 3 or not value.isascii() or not value.isalpha() or not value.isupper():
        raise ParseError(path, "not an ISO 4217 currency code", line=line, field=field, value=value)
    return value


def utc_and_day(booked: date, at: datetime | None, tz: str) -> tuple[datetime, date]:
    """(occurred_at as naive UTC, business day in the statement's time zone)."""
    zone = ZoneInfo(tz)
    if at is None:
        local = datetime.combine(booked, time(0), zone)
        return local.astimezone(timezone.utc).replace(tzinfo=None), booked
    aware = at if at.tzinfo is not None else at.replace(tzinfo=zone)
    return aware.astimezone(timezone.utc).replace(tzinfo=None), aware.astimezone(zone).date()


def records(path, lines: list[BankLine], tz: str) -> pa.Table:
    """The normalised records, in file order; a ref may occur once in the file, whatever the kind."""
    seen: dict[str, int] = {}
    for bl in sorted(lines, key=lambda b: b.line):
        if bl.ref in seen:
            raise ParseError(path, f"the same entry appears twice (also on line {seen[bl.ref]})",
                             line=bl.line, field="ref", value=bl.ref)
        seen[bl.ref] = bl.line
    cols: dict[str, list] = {f.name: [] for f in RECORD_FIELDS}
    for bl in sorted(lines, key=lambda b: b.line):
        occurred, day = utc_and_day(bl.booked, bl.at, tz)
        row = {
            "line": bl.line, "source": None, "kind": bl.kind, "ref": bl.ref, "txn_id": bl.txn_id,
            "order_id": bl.order_id, "amount": bl.amount, "currency": bl.currency, "fee": 0, "discount": 0,
            "status": bl.status, "occurred_at": occurred, "business_day": day, "payer": bl.payer, "memo": bl.memo,
        }
        for name, value in row.items():
            cols[name].append(value)
    return pa.Table.from_pydict(cols, schema=RECORD_FIELDS)


def clean(text: str | None) -> str | None:
    """Collapse runs of whitespace; empty becomes None."""
    if text is None:
        return None
    out = " ".join(text.split())
    return out or None

"""The exact matcher, table-driven: each case is two tiny ledgers and the breaks expected.

Every case also lists what must NOT be reported: a case passes only when the findings
are exactly the expected ones.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pyarrow as pa
import pytest

from core.engine import Tolerance, Window, reconcile

D = date(2026, 11, 20)
NEXT = date(2026, 11, 21)


def rec(kind="payment", ref=None, txn=None, order=None, amount=0, status="success", day=D, line=1):
    return dict(kind=kind, ref=ref or txn or order, txn_id=txn, order_id=order, amount=amount, currency="CNY",
                status=status, business_day=day.isoformat(), line=line)


SCHEMA = pa.schema([
    ("id", pa.int64()), ("kind", pa.string()), ("ref", pa.string()), ("txn_id", pa.string()),
    ("order_id", pa.string()), ("amount", pa.int64()), ("currency", pa.string()), ("status", pa.string()),
    ("business_day", pa.string()), ("file", pa.string()), ("line", pa.int64())])


def table(rows, file, first_id):
    return pa.Table.from_pylist([{**r, "id": first_id + n, "file": file} for n, r in enumerate(rows)], schema=SCHEMA)


def run(ours, theirs, through=NEXT, lag=1, tol=Tolerance()):
    i, c = table(ours, "ours.csv", 1), table(theirs, "bill.csv", 1001)
    found, stats = reconcile(i, c, Window(D, lag, through, through), tol)
    return sorted((f["type"], f["kind"], f["order_id"], f["internal_amount"], f["channel_amount"], f["difference"],
                   f["status"], f["rule"]) for f in found), stats


CASES = {
    "identical": (
        [rec(txn="T1", order="O1", amount=1000, status="paid")],
        [rec(txn="T1", order="O1", amount=1000)],
        [],
    ),
    "matched by order id when our books lack the txn id": (
        [rec(order="O1", amount=1000, status="paid")],
        [rec(txn="T1", order="O1", amount=1000)],
        [],
    ),
    "a matching key never skips the amount check": (
        [rec(txn="T1", order="O1", amount=12800, status="paid")],
        [rec(txn="T1", order="O1", amount=11800)],
        [("amount_mismatch", "payment", "O1", 12800, 11800, -1000, "open", "exact_txn_id")],
    ),
    "short: paid in our books only": (
        [rec(txn="T1", order="O1", amount=500, status="paid")],
        [],
        [("short", "payment", "O1", 500, None, -500, "open", "unmatched")],
    ),
    "unpaid orders are not short": (
        [rec(order="O1", amount=500, status="unpaid"), rec(order="O2", amount=500, status="closed")],
        [],
        [],
    ),
    "long: at the channel only": (
        [],
        [rec(txn="T9", order="O9", amount=3600)],
        [("long", "payment", "O9", None, 3600, 3600, "open", "unmatched")],
    ),
    "status: channel collected an order our books call unpaid": (
        [rec(order="O1", amount=4550, status="unpaid")],
        [rec(txn="T1", order="O1", amount=4550)],
        [("status_mismatch", "payment", "O1", 4550, 4550, 4550, "open", "exact_order_id")],
    ),
    "duplicate charge: two channel payments for one order, neither claimed twice": (
        [rec(txn="T1", order="O1", amount=2500, status="paid")],
        [rec(txn="T1", order="O1", amount=2500), rec(txn="T2", order="O1", amount=2500, line=2)],
        [("duplicate_charge", "payment", "O1", None, 2500, 2500, "open", "duplicate_order")],
    ),
    "duplicate charge also when our books have no txn id": (
        [rec(order="O1", amount=2500, status="paid")],
        [rec(txn="T1", order="O1", amount=2500), rec(txn="T2", order="O1", amount=2500, line=2)],
        [("duplicate_charge", "payment", "O1", None, 2500, 2500, "open", "duplicate_order")],
    ),
    "refund at the channel only": (
        [rec(txn="T1", order="O1", amount=3200, status="paid")],
        [rec(txn="T1", order="O1", amount=3200), rec("refund", ref="R1", txn="T1", order="O1", amount=-3200)],
        [("status_mismatch", "refund", "O1", None, -3200, -3200, "open", "refund_by_order")],
    ),
    "refund in our books only": (
        [rec(txn="T1", order="O1", amount=3800, status="partially_refunded"),
         rec("refund", ref="O1", order="O1", amount=-2000, status="partially_refunded")],
        [rec(txn="T1", order="O1", amount=3800)],
        [("status_mismatch", "refund", "O1", -2000, None, 2000, "open", "refund_by_order")],
    ),
    "partial refunds add up per order": (
        [rec(txn="T1", order="O1", amount=5800, status="partially_refunded"),
         rec("refund", ref="O1", order="O1", amount=-1500, status="partially_refunded")],
        [rec(txn="T1", order="O1", amount=5800),
         rec("refund", ref="R1", txn="T1", order="O1", amount=-1000),
         rec("refund", ref="R2", txn="T1", order="O1", amount=-500, line=3)],
        [],
    ),
    "refund amounts that differ": (
        [rec(txn="T1", order="O1", amount=5800, status="partially_refunded"),
         rec("refund", ref="O1", order="O1", amount=-1500, status="partially_refunded")],
        [rec(txn="T1", order="O1", amount=5800), rec("refund", ref="R1", txn="T1", order="O1", amount=-1000)],
        [("amount_mismatch", "refund", "O1", -1500, -1000, 500, "open", "refund_by_order")],
    ),
    "crossing midnight: our day-D order on the channel's next day matches": (
        [rec(txn="T1", order="O1", amount=6600, status="paid")],
        [rec(txn="T1", order="O1", amount=6600, day=NEXT)],
        [],
    ),
    "other days' items are not this day's breaks": (
        [rec(txn="T5", order="O5", amount=100, status="paid", day=NEXT)],
        [rec(txn="T6", order="O6", amount=100, day=NEXT)],
        [],
    ),
    "failed or revoked channel rows are not payments": (
        [],
        [rec(txn="T1", order="O1", amount=100, status="revoked")],
        [],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_exact_matcher(name):
    ours, theirs, expected = CASES[name]
    found, _stats = run(ours, theirs)
    assert found == sorted(expected)


def test_in_transit_until_the_other_side_has_delivered_day_plus_lag():
    ours = [rec(txn="T1", order="O1", amount=500, status="paid")]
    waiting, _ = run(ours, [], through=D, lag=1)
    assert [f[6] for f in waiting] == ["in_transit"]
    aged, _ = run(ours, [], through=NEXT, lag=1)
    assert [f[6] for f in aged] == ["open"]
    same_day, _ = run(ours, [], through=D, lag=0)
    assert [f[6] for f in same_day] == ["open"]


@pytest.mark.parametrize("absolute, percent, diff, reported", [
    (0, "0", 1, True),  # exact by default: one fen is a break
    (1, "0", 1, False),
    (1, "0", 2, True),
    (0, "1", 10, False),  # 1% of 1000 = 10
    (0, "1", 11, True),
])
def test_tolerance_absolute_and_percent(absolute, percent, diff, reported):
    ours = [rec(txn="T1", order="O1", amount=1000, status="paid")]
    theirs = [rec(txn="T1", order="O1", amount=1000 + diff)]
    found, _ = run(ours, theirs, tol=Tolerance(absolute, Decimal(percent)))
    assert bool(found) is reported


def test_statistics_for_the_day():
    _, stats = run(CASES["duplicate charge: two channel payments for one order, neither claimed twice"][0],
                   CASES["duplicate charge: two channel payments for one order, neither claimed twice"][1])
    assert stats == {"internal_payments": 1, "internal_amount": 2500, "channel_payments": 2, "channel_amount": 5000,
                     "matched": 1}

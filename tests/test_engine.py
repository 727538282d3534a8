"""The exact matcher, table-driven: each case is two tiny ledgers and the breaks expected.

Every case also lists what must NOT be reported: a case passes only when the findings
are exactly the expected ones.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from core.engine import INPUT_SCHEMA, Window, reconcile
from core.rules import Rules

D = date(2026, 11, 20)
NEXT = date(2026, 11, 21)


def rec(kind="payment", ref=None, txn=None, order=None, amount=0, status="success", day=D, line=1, currency="CNY",
        fee=0, discount=0, memo=None, payer=None, at="12:00"):
    return dict(kind=kind, ref=ref or txn or order, txn_id=txn, order_id=order, amount=amount, currency=currency,
                status=status, business_day=day, line=line, fee=fee, discount=discount, memo=memo, payer=payer,
                occurred_at=datetime.fromisoformat(f"{day.isoformat()}T{at}"))


SCHEMA = pa.schema([f for f in INPUT_SCHEMA if f.name != "file"] + [("file", pa.string())])


def table(rows, file, first_id):
    return pa.Table.from_pylist([{**r, "id": first_id + n, "file": file} for n, r in enumerate(rows)], schema=SCHEMA)


def run(ours, theirs, through=NEXT, lag=1, rules=Rules(), duplicates=None):
    i, c = table(ours, "ours.csv", 1), table(theirs, "bill.csv", 1001)
    result = reconcile(i, c, Window(D, lag, through, through), rules, duplicates)
    found, stats = result.findings, result.stats
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
    "a payment reversed at the channel is a status mismatch, not a short": (
        [rec(txn="T1", order="O1", amount=100, status="paid")],
        [rec(txn="T1", order="O1", amount=100, status="revoked")],
        [("status_mismatch", "payment", "O1", 100, None, -100, "open", "reversed_at_channel")],
    ),
    "a coupon in the channel's own columns explains the gap": (
        [rec(txn="T1", order="O1", amount=2000, status="paid")],
        [rec(txn="T1", order="O1", amount=2500, discount=500)],
        [],
    ),
    "split payment: one order, two channel payments that add up": (
        [rec(order="O1", amount=10000, status="paid")],
        [rec(txn="T1", order="O1", amount=6000), rec(txn="T2", order="O1", amount=4000, line=2)],
        [],
    ),
    "split payment that does not add up: closest pays, the rest is a second charge": (
        [rec(order="O1", amount=10000, status="paid")],
        [rec(txn="T1", order="O1", amount=6000), rec(txn="T2", order="O1", amount=3000, line=2)],
        [("amount_mismatch", "payment", "O1", 10000, 6000, -4000, "open", "exact_order_id"),
         ("duplicate_charge", "payment", "O1", None, 3000, 3000, "open", "duplicate_order")],
    ),
    "merged payment: one channel payment names two orders in its memo": (
        [rec(order="A-1001", amount=10000, status="paid"), rec(order="A-1002", amount=5000, status="paid", line=2)],
        [rec(txn="T1", order="BATCH-77", amount=15000, memo="orders A-1001, A-1002")],
        [],
    ),
    "merged payment whose orders do not add up is not claimed": (
        [rec(order="A-1001", amount=10000, status="paid"), rec(order="A-1002", amount=5000, status="paid", line=2)],
        [rec(txn="T1", order="BATCH-77", amount=14000, memo="orders A-1001, A-1002")],
        [("long", "payment", "BATCH-77", None, 14000, 14000, "open", "unmatched"),
         ("short", "payment", "A-1001", 10000, None, -10000, "open", "unmatched"),
         ("short", "payment", "A-1002", 5000, None, -5000, "open", "unmatched")],
    ),
    "an order named by two channel payments is claimed by neither": (
        [rec(order="A-1001", amount=10000, status="paid"), rec(order="A-1002", amount=5000, status="paid", line=2)],
        [rec(txn="T1", order="B-1", amount=15000, memo="A-1001 A-1002"),
         rec(txn="T2", order="B-2", amount=15000, memo="A-1001 A-1002", line=2)],
        [("long", "payment", "B-1", None, 15000, 15000, "open", "unmatched"),
         ("long", "payment", "B-2", None, 15000, 15000, "open", "unmatched"),
         ("short", "payment", "A-1001", 10000, None, -10000, "open", "unmatched"),
         ("short", "payment", "A-1002", 5000, None, -5000, "open", "unmatched")],
    ),
    "fuzzy: a bank line naming our order id, same amount, same day": (
        [rec(order="A-2001", amount=88000, status="paid", at="10:00")],
        [rec(txn="B1", amount=88000, memo="HUIKUAN A-2001 SHANGHAI", at="15:30")],
        [],
    ),
    "fuzzy: a tie between two orders is only suggested, to both": (
        [rec(order="A-2001", amount=50000, status="paid", at="10:00"),
         rec(order="A-2002", amount=50000, status="paid", at="10:00", line=2)],
        [rec(txn="B1", amount=50000, memo="TRANSFER", at="11:00")],
        [("suggested_match", "payment", "A-2001", 50000, 50000, 0, "open", "fuzzy"),
         ("suggested_match", "payment", "A-2002", 50000, 50000, 0, "open", "fuzzy")],
    ),
    "fuzzy: a lone candidate under the threshold is suggested, not matched": (
        [rec(order="A-2001", amount=50000, status="paid", at="10:00")],
        [rec(txn="B1", amount=50000, memo="TRANSFER", at="11:00")],
        [("suggested_match", "payment", "A-2001", 50000, 50000, 0, "open", "fuzzy")],
    ),
    "fuzzy: a memo naming K-90115 does not name K-9011 (an id is matched whole, never as a prefix)": (
        [rec(order="K-9011", amount=639472, status="paid", at="08:05"),
         rec(order="K-90115", amount=639472, status="paid", at="16:45", line=2)],
        [rec(txn="B1", amount=639472, memo="PAYMENT FOR ORDER K-90115", at="23:59")],
        [("short", "payment", "K-9011", 639472, None, -639472, "open", "unmatched")],
    ),
    "fuzzy: a transfer booked a day after its order is on that order's card (its own run), not a long": (
        [rec(order="A-2001", amount=475060, status="paid", payer="Qingshan Bakery", day=date(2026, 11, 19))],
        [rec(txn="B1", amount=475060, payer="QINGSHAN BAKERY CHAIN CO LTD", memo="HUO KUAN", at="00:00")],
        [],
    ),
    "a transaction id on two rows of each side: the earliest rows pair up, the others by order id": (
        [rec(txn="T1", order="O1", amount=100, status="paid"), rec(txn="T1", order="O2", amount=100, status="paid", line=2)],
        [rec(txn="T1", order="O1", amount=100), rec(txn="T1", order="O2", amount=100, line=2)],
        [],
    ),
    "a transaction id on two channel rows: the earliest one pays, the other is a second charge": (
        [rec(txn="T1", order="O1", amount=100, status="paid")],
        [rec(txn="T1", order="O1", amount=100, line=5), rec(txn="T1", order="O2", amount=120, line=2)],
        [("amount_mismatch", "payment", "O1", 100, 120, 20, "open", "exact_txn_id"),
         ("duplicate_charge", "payment", "O1", None, 100, 100, "open", "duplicate_order")],
    ),
    "fuzzy: outside the time window nothing is proposed": (
        [rec(order="A-2001", amount=50000, status="paid", at="10:00")],
        [rec(txn="B1", amount=50000, memo="A-2001", day=date(2026, 11, 24), at="11:00")],
        [("short", "payment", "A-2001", 50000, None, -50000, "open", "unmatched")],
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
    found, _ = run(ours, theirs, rules=Rules(absolute_minor=absolute, percent=Decimal(percent)))
    assert bool(found) is reported


def test_statistics_for_the_day():
    _, stats = run(CASES["duplicate charge: two channel payments for one order, neither claimed twice"][0],
                   CASES["duplicate charge: two channel payments for one order, neither claimed twice"][1])
    assert stats == {"internal_payments": 1, "internal_amount": 2500, "channel_payments": 2, "channel_amount": 5000,
                     "matched": 1, "fees": 0}


def test_fee_against_the_rate_card_beyond_rounding():
    rules = Rules(fee_rate=Decimal("0.006"), fee_tolerance_minor=1)
    ours = [rec(txn="T1", order="O1", amount=10000, status="paid"), rec(txn="T2", order="O2", amount=10000, status="paid"),
            rec(txn="T3", order="O3", amount=2500, status="paid")]
    theirs = [rec(txn="T1", order="O1", amount=10000, fee=60), rec(txn="T2", order="O2", amount=10000, fee=80),
              rec(txn="T3", order="O3", amount=2500, fee=16)]  # 15 expected: 1 fen of rounding is allowed
    found, _ = run(ours, theirs, rules=rules)
    assert found == [("fee_mismatch", "fee", "O2", 60, 80, 20, "open", "rate_card")]


def test_settlement_in_another_currency_against_the_configured_rate():
    rules = Rules(fx_rates={"USD/CNY": Decimal("7.10")}, fx_tolerance_percent=Decimal("0.5"))
    ours = [rec(txn="T1", order="O1", amount=1000, currency="USD", status="paid"),
            rec(txn="T2", order="O2", amount=1000, currency="USD", status="paid"),
            rec(txn="T3", order="O3", amount=1000, currency="EUR", status="paid")]
    theirs = [rec(txn="T1", order="O1", amount=7120), rec(txn="T2", order="O2", amount=7300),
              rec(txn="T3", order="O3", amount=7800)]
    found, _ = run(ours, theirs, rules=rules)
    assert found == [("fx_difference", "payment", "O2", 1000, 7300, 200, "open", "exact_txn_id"),
                     ("fx_difference", "payment", "O3", 1000, 7800, 7800, "open", "exact_txn_id")]


def test_a_row_delivered_twice_is_a_note_not_money():
    dup = pa.Table.from_pylist([dict(line=7, kind="payment", ref="T1", order_id="O1", txn_id="T1", amount=100,
                                     currency="CNY", business_day=D.isoformat(), kept_file="bill1.csv", kept_line=3,
                                     file="bill2.csv")])
    found, _ = run([rec(txn="T1", order="O1", amount=100, status="paid")], [rec(txn="T1", order="O1", amount=100)],
                   duplicates=dup)
    assert found == [("duplicate_record", "payment", "O1", None, 100, 0, "note", "same_row_twice")]


def test_matches_say_which_rule_made_them():
    ours, theirs, _ = CASES["merged payment: one channel payment names two orders in its memo"]
    i, c = table(ours, "ours.csv", 1), table(theirs, "bill.csv", 1001)
    result = reconcile(i, c, Window(D, 1, NEXT, NEXT), Rules())
    assert result.matches == {"merged_payment": 1}


# -- the narrow input (core.runs): wide text fetched only for what the exact passes leave --

NARROW_CASES = {**CASES, "fee against the rate card": (
    [rec(txn="T1", order="O1", amount=10000, status="paid"), rec(txn="T2", order="O2", amount=10000, status="paid")],
    [rec(txn="T1", order="O1", amount=10000, fee=60), rec(txn="T2", order="O2", amount=10000, fee=80)], None)}


def _full_and_narrow(ours, theirs, rules, lag=1):
    """The same case twice: whole tables, and narrow tables plus a `details` callable."""
    i, c = table(ours, "ours.csv", 1), table(theirs, "bill.csv", 1001)
    window = Window(D, lag, NEXT, NEXT)
    full = reconcile(i, c, window, rules)
    files = {7: "ours.csv", 9: "bill.csv"}
    wide = ["ref", "payer", "memo", "occurred_at"]

    def narrow(t, file_id):
        return t.drop_columns(wide + ["file"]).append_column("file_id", pa.array([file_id] * t.num_rows, pa.int64()))

    asked = []

    def details(side, ids):
        asked.append((side, sorted(ids.to_pylist())))
        t = i if side == "internal" else c
        return t.filter(pa.compute.is_in(t["id"], value_set=ids)).select(["id"] + wide)

    lazy = reconcile(narrow(i, 7), narrow(c, 9), window, rules, details=details, files=files)
    return full, lazy, asked


@pytest.mark.parametrize("name", list(NARROW_CASES))
def test_narrow_input_with_details_finds_exactly_the_same(name):
    ours, theirs, _ = NARROW_CASES[name]
    # (a rate card on every case would make every channel row a fee deviation, all fetched)
    rules = Rules(fee_rate=Decimal("0.006")) if name == "fee against the rate card" else Rules()
    full, lazy, _asked = _full_and_narrow(ours, theirs, rules)
    key = lambda f: repr(sorted(f.items()))  # noqa: E731 - every field, evidence and score included
    assert sorted(map(key, lazy.findings)) == sorted(map(key, full.findings))
    assert (lazy.stats, lazy.matches) == (full.stats, full.matches)


def test_details_are_asked_only_for_what_the_exact_passes_leave():
    ours = [rec(txn="T1", order="O1", amount=1000, status="paid"), rec(order="A-2001", amount=500, status="paid")]
    theirs = [rec(txn="T1", order="O1", amount=1000, fee=6), rec(txn="B1", amount=500, memo="A-2001", fee=30)]
    full, lazy, asked = _full_and_narrow(ours, theirs, Rules(fee_rate=Decimal("0.006")))
    # T1 is matched by its transaction id: only the bank line, the order it names and the
    # fee deviation (B1: 30 charged, 3 expected) need payer, memo and time
    assert asked == [("internal", [2]), ("channel", [1002])]
    assert [f["type"] for f in lazy.findings] == [f["type"] for f in full.findings] == ["fee_mismatch"]
    assert lazy.findings[0]["evidence"] == [{"side": "channel", "file": "bill.csv", "line": 1}]


def test_refund_evidence_lists_each_sides_records_of_that_order_only():
    ours = [rec(txn="T1", order="O1", amount=100, status="paid"),
            rec("refund", ref="O1", order="O1", amount=-30, status="refunded", line=5),
            rec(txn="T2", order="O2", amount=100, status="paid", line=2),
            rec("refund", ref="O2", order="O2", amount=-40, status="refunded", line=6)]
    theirs = [rec(txn="T1", order="O1", amount=100), rec("refund", ref="R1", txn="T1", order="O1", amount=-20, line=3),
              rec("refund", ref="R1b", txn="T1", order="O1", amount=-10, line=2),
              rec(txn="T2", order="O2", amount=100, line=4), rec("refund", ref="R2", txn="T2", order="O2", amount=-41, line=8),
              # refunds that name no order: a group of their own, on the channel's side only
              rec("refund", ref="R8", amount=-7, line=12), rec("refund", ref="R9", amount=-5, line=10)]
    i, c = table(ours, "ours.csv", 1), table(theirs, "bill.csv", 1001)
    found = reconcile(i, c, Window(D, 1, NEXT, NEXT), Rules()).findings
    assert sorted((f["type"], f["order_id"], f["difference"], [(e["side"], e["file"], e["line"]) for e in f["evidence"]])
                  for f in found if f["kind"] == "refund") == [
        ("amount_mismatch", "O2", -1, [("internal", "ours.csv", 6), ("channel", "bill.csv", 8)]),
        ("status_mismatch", None, -12, [("channel", "bill.csv", 10), ("channel", "bill.csv", 12)])]

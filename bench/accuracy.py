"""`make accuracy`: seeded ground-truth days, reconciled, scored against what was planted.

    python bench/accuracy.py [--days 4] [--orders 300] [--seed 7]

Every day gets, per channel, ordinary orders plus a planted sample of every difference
(short, long, amount / refund / status mismatches, reversals, duplicate charges, fee and
FX deviations, rows delivered twice, same-amount ambiguity) and of what must match
WITHOUT a break (coupons, split and merged payments, T+1 items that cross midnight).
The files are written in the channels' real formats (WeChat Pay trade bill, Alipay bill
zip, orders CSV) by the same writers as the demo, ingested and reconciled like any day.

Printed per type: planted, found, right type, right amount; false breaks; fuzzy precision
and recall; false auto-adjustments. Exit code 1 unless every planted difference is found
with the right type and amount, nothing else is reported, and no adjustment is false.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

import make_demo as fmt  # noqa: E402  (the demo's real-format writers)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from core.breaks import list_breaks  # noqa: E402
from core.config import from_dict  # noqa: E402
from core.ingest import ingest_file  # noqa: E402
from core.money import to_minor  # noqa: E402
from core.runs import run_day  # noqa: E402
from models.db import get_engine, upgrade  # noqa: E402

FIRST_DAY = datetime(2026, 11, 10)
FX_RATE = Decimal("7.10")
NO_BREAK = "matched"  # planted cases that must produce no break


def cents(d: Decimal) -> int:
    return to_minor(d, "CNY")


class Planter:
    """Turns ordinary orders into planted cases and remembers the expected outcome."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.expected: dict[tuple[str, str], tuple[str, int]] = {}  # (order id, type) -> (source, difference)
        self.matched: dict[str, str] = {}  # order id -> the case that must not break
        self.extra: list[fmt.Order] = []  # channel-only rows
        self.serial = 0

    def expect(self, o: fmt.Order, type_: str, diff: Decimal) -> None:
        self.expected[(o.order_id, type_)] = (o.channel, cents(diff))

    def plant(self, o: fmt.Order, case: str, day: datetime, last_day: bool) -> None:
        r = self.rng
        if case == "short":
            o.on_channel = False
            self.expect(o, "short", -o.amount)
        elif case == "long":
            self.serial += 1
            # an amount no order of ours has, so that no fuzzy candidate appears by coincidence
            ghost = fmt.Order(f"{o.order_id[0]}-9{self.serial:04d}", o.channel, Decimal(f"9{self.serial}.37"),
                              o.paid_at + timedelta(minutes=1), in_books=False, payer=f"ghost{self.serial}", goods="?")
            self.extra.append(ghost)
            self.expect(ghost, "long", ghost.amount)
            self.matched[o.order_id] = "ordinary"
        elif case == "amount_mismatch":
            o.channel_amount = o.amount - Decimal(r.choice([1, 3, 10])) - Decimal("0.50")
            self.expect(o, "amount_mismatch", o.channel_amount - o.amount)
        elif case == "refund_channel_only":
            o.channel_refund, o.refunded_at = o.amount, o.paid_at + timedelta(minutes=30)
            self.expect(o, "status_mismatch", -o.amount)
        elif case == "refund_books_only":
            o.refund, o.refunded_at, o.status, o.channel_refund = Decimal("5.00"), o.paid_at + timedelta(minutes=20), \
                "partially_refunded", Decimal("0")
            self.expect(o, "status_mismatch", Decimal("5.00"))
        elif case == "partial_refund_differs":
            o.refund, o.refunded_at, o.status, o.channel_refund = Decimal("8.00"), o.paid_at + timedelta(minutes=20), \
                "partially_refunded", Decimal("6.00")
            self.expect(o, "amount_mismatch", Decimal("2.00"))
        elif case == "partial_refund_agrees":
            o.refund, o.refunded_at, o.status = Decimal("4.00"), o.paid_at + timedelta(minutes=25), "partially_refunded"
            self.matched[o.order_id] = case
        elif case == "unpaid_but_collected":
            o.status = "unpaid"
            self.expect(o, "status_mismatch", o.amount)
        elif case == "duplicate_charge":
            o.charged_twice = True
            self.expect(o, "duplicate_charge", o.amount)
        elif case == "fee_mismatch":
            o.channel_fee = fmt.fee(o.amount) + Decimal("0.50")
            self.expect(o, "fee_mismatch", Decimal("0.50"))
        elif case == "coupon" and o.channel == "wechatpay":  # WeChat's 代金券 column
            o.coupon = Decimal("3.00")
            self.matched[o.order_id] = case
        elif case == "late_t1" and not last_day:
            o.paid_at = day.replace(hour=23, minute=59, second=r.randint(30, 55))
            o.channel_time = day + timedelta(days=1, seconds=r.randint(1, 20))
            self.matched[o.order_id] = case
        elif case == "reversed" and o.channel == "wechatpay":  # Alipay's trade bill has no revoked rows
            o.channel_status = "REVOKED"
            self.expect(o, "status_mismatch", -o.amount)
        elif case == "fx":
            o.currency, o.amount = "USD", Decimal(r.choice([5, 8, 12]))
            o.channel_amount = o.amount * FX_RATE + Decimal(r.choice([1, 2]))
            self.expect(o, "fx_difference", o.channel_amount - o.amount * FX_RATE)
        elif case == "redelivered" and o.channel == "wechatpay" and not last_day:
            o.redelivered_next_day = True
            self.expected[(o.order_id, "duplicate_record")] = (o.channel, 0)
            self.matched[o.order_id] = case
        elif case == "ambiguous":  # two of our orders, one channel payment, nothing else to tell them apart
            self.serial += 1
            amount = Decimal("77.7") + Decimal(self.serial) / 10
            twin = fmt.Order(f"{o.order_id}-T", o.channel, amount, o.paid_at + timedelta(minutes=3), goods=o.goods,
                             on_channel=False, extra={"books_without_txn": True})
            o.amount, o.channel_order_id, o.extra["books_without_txn"] = amount, f"X{self.serial}", True
            self.extra.append(twin)
            self.expect(o, "suggested_match", Decimal(0))
            self.expect(twin, "suggested_match", Decimal(0))
        elif case == "split" and o.channel == "alipay":
            o.split_parts = (o.amount - Decimal("10.00"), Decimal("10.00"))
            o.extra["books_without_txn"] = True
            self.matched[o.order_id] = case
        elif case == "merged" and o.channel == "wechatpay":
            self.serial += 1
            partner = fmt.Order(f"{o.order_id}-M", o.channel, Decimal("12.00"), o.paid_at + timedelta(seconds=40),
                                on_channel=False, payer=o.payer, goods=o.goods, extra={"books_without_txn": True})
            o.on_channel, o.extra["books_without_txn"] = False, True
            combined = fmt.Order(f"W-MRG{self.serial:04d}", o.channel, o.amount + partner.amount,
                                 o.paid_at + timedelta(minutes=1), in_books=False, payer=o.payer, goods="合并支付",
                                 attach=f"merged {o.order_id} {partner.order_id}")
            self.extra += [partner, combined]
            self.matched[o.order_id] = case
            self.matched[partner.order_id] = case
        else:
            self.matched[o.order_id] = "ordinary"


CASES = ["short", "long", "amount_mismatch", "refund_channel_only", "refund_books_only", "partial_refund_differs",
         "partial_refund_agrees", "unpaid_but_collected", "duplicate_charge", "fee_mismatch", "coupon", "late_t1",
         "reversed", "fx", "redelivered", "ambiguous", "split", "merged"]


def generate(folder: Path, days: int, per_channel: int, seed: int):
    rng = random.Random(seed)
    planter = Planter(rng)
    everything: list[fmt.Order] = []
    by_day: dict[datetime, list[fmt.Order]] = {}
    for k in range(days + 1):  # one more day, without plants: its statements age out the last day
        day = FIRST_DAY + timedelta(days=k)
        todays = []
        for prefix, channel, base in (("W", "wechatpay", 10_000), ("A", "alipay", 50_000)):
            orders = fmt.make_orders(rng, day, prefix, channel, base + k * 1000, per_channel, start_hour=6)
            for o in orders:  # spread over the whole day
                o.paid_at = day.replace(hour=0) + timedelta(seconds=rng.randint(6 * 3600, 22 * 3600))
            picked = rng.sample(orders, min(len(orders), 3 * len(CASES))) if k < days else []
            for i, o in enumerate(picked):
                planter.plant(o, CASES[i % len(CASES)], day, last_day=k == days - 1)
            for o in orders if k == days else []:
                planter.matched[o.order_id] = "ordinary"
            todays += orders
        by_day[day] = todays
        everything += todays
    everything += planter.extra
    fmt.assign_ids(everything)
    for day in by_day:
        books = [o for o in everything if o.in_books and o.paid_at.date() == day.date()]
        fmt.write_orders(books, folder / f"orders_{day:%Y-%m-%d}.csv")
        (folder / f"wechatpay_{day:%Y-%m-%d}.csv").write_bytes(
            fmt.wechat_bill([o for o in everything if o.channel == "wechatpay"], day))
        (folder / f"{fmt.ALIPAY_ACCOUNT}_{day:%Y%m%d}.csv.zip").write_bytes(
            fmt.alipay_zip([o for o in everything if o.channel == "alipay"], day))
    return planter, list(by_day)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--orders", type=int, default=300, help="ordinary orders per channel per day")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="recon-accuracy-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        planter, days = generate(folder, args.days, args.orders, args.seed)
        url = f"sqlite:///{folder / 'accuracy.db'}"
        upgrade(url)
        cfg = from_dict({
            "database": {"url": url},
            "fx": {"rates": {"USD/CNY": str(FX_RATE)}},
            "merchants": [{"id": "acc", "name": "Accuracy", "sources": [
                {"name": "orders", "kind": "orders"},
                {"name": "wechatpay", "kind": "wechatpay", "settlement_lag_days": 1, "fee_rate": "0.006"},
                {"name": "alipay", "kind": "alipay", "settlement_lag_days": 1, "fee_rate": "0.006"}]}],
        })
        m = cfg.merchants[0]
        for p in sorted(folder.glob("*")):
            if p.suffix != ".db" and not p.name.endswith(("-wal", "-shm")):
                ingest_file(cfg, m, p)
        for day in days[:-1]:  # the trailing day only delivers statements
            run_day(cfg, m, day.date())
        found = list_breaks(url, m.id)
        assert not [b for b in found if b["status"] == "in_transit"], "the trailing day should age everything out"
        adjustments = _adjustments(url)
        elapsed = time.perf_counter() - t0
        get_engine(url).dispose()
    return report(console, planter, found, adjustments, args, elapsed)


def _adjustments(url: str) -> dict[int, int]:
    from sqlmodel import Session, select

    from models.tables import Adjustment

    with Session(get_engine(url)) as s:
        return {a.break_id: a.amount for a in s.exec(select(Adjustment)).all()}


def report(console, planter: Planter, found: list[dict], adjustments: dict[int, int], args, elapsed) -> int:
    expected = planter.expected
    by_order = defaultdict(list)
    for b in found:
        by_order[b["order_id"]].append(b)
    rows: dict[str, Counter] = defaultdict(Counter)
    false_breaks = []
    for (order, type_), (_source, diff) in expected.items():
        rows[type_]["planted"] += 1
        hits = by_order.get(order, [])
        if hits:
            rows[type_]["found"] += 1
        typed = [b for b in hits if b["type"] == type_]
        if typed:
            rows[type_]["right type"] += 1
            if any(cents(Decimal(b["difference"])) == diff for b in typed):
                rows[type_]["right amount"] += 1
    for b in found:
        if (b["order_id"], b["type"]) not in expected:
            false_breaks.append(b)
    # fuzzy: a planted ambiguity must be suggested, never auto-matched; nothing else suggested
    suggested = {b["order_id"] for b in found if b["type"] == "suggested_match"}
    planted_fuzzy = {o for (o, t) in expected if t == "suggested_match"}
    precision = len(suggested & planted_fuzzy) / len(suggested) if suggested else 1.0
    recall = len(suggested & planted_fuzzy) / len(planted_fuzzy) if planted_fuzzy else 1.0
    # an adjustment is false unless its break was planted with exactly that difference
    planted_ids = {b["id"]: b for b in found if (b["order_id"], b["type"]) in expected}
    false_adj = [bid for bid, amount in adjustments.items()
                 if bid not in planted_ids or abs(cents(Decimal(planted_ids[bid]["difference"]))) != amount]

    t = Table(title=f"accuracy: {args.days} days × {args.orders} orders per channel, seed {args.seed} "
                    f"({elapsed:.1f} s)", title_justify="left")
    for col in ("type", "planted", "found", "right type", "right amount"):
        t.add_column(col, justify="left" if col == "type" else "right")
    perfect = True
    for type_ in sorted(rows):
        c = rows[type_]
        ok = c["planted"] == c["found"] == c["right type"] == c["right amount"]
        perfect &= ok
        t.add_row(type_, *(str(c[k]) for k in ("planted", "found", "right type", "right amount")),
                  style=None if ok else "red")
    console.print(t)
    must_not = Counter(planter.matched.values())
    console.print(f"cases that must match without a break: {dict(sorted(must_not.items()))}", highlight=False)
    console.print(f"false breaks: {len(false_breaks)}", highlight=False)
    for b in false_breaks[:10]:
        console.print(f"  {b['day']} {b['source']} {b['type']} {b['order_id']}: {b['explanation']}", highlight=False)
    console.print(f"fuzzy: precision {precision:.2f}, recall {recall:.2f} over {len(planted_fuzzy)} planted ambiguities",
                  highlight=False)
    console.print(f"auto-adjustments: {len(adjustments)} proposed, {len(false_adj)} false", highlight=False)
    ok = perfect and not false_breaks and not false_adj and precision == recall == 1.0
    console.print("[green]PASS[/green]: 100% found with the right type and difference, 0 false auto-adjustments"
                  if ok else "[red]MISS[/red]: see the rows above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

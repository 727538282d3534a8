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
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "bench"))

import bank_plants  # noqa: E402  (bank transfers and their MT940 statements)
import make_demo as fmt  # noqa: E402  (the demo's real-format writers)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from core import engine  # noqa: E402
from core.breaks import list_breaks  # noqa: E402
from core.config import from_dict  # noqa: E402
from core.ingest import ingest_file  # noqa: E402
from core.money import to_minor  # noqa: E402
from core.rules import Rules  # noqa: E402
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
        self.ambiguous: list[tuple[fmt.Order, fmt.Order]] = []  # (order on the channel, its twin): one payment
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
            self.ambiguous.append((o, twin))
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


def generate(folder: Path, days: int, per_channel: int, seed: int, bank_rules: Rules):
    rng = random.Random(seed)
    planter = Planter(rng)
    # the bank's own generator: the channels' days stay what they were for a seed
    bank = bank_plants.BankPlanter(random.Random(f"{seed}-bank"), bank_rules)
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
        if k < days:
            bank.plant_day(day, k)
        by_day[day] = todays
        everything += todays
    everything += planter.extra + bank.orders
    fmt.assign_ids(everything)
    for day in by_day:
        books = [o for o in everything if o.in_books and o.paid_at.date() == day.date()]
        fmt.write_orders(books, folder / f"orders_{day:%Y-%m-%d}.csv")
        (folder / f"wechatpay_{day:%Y-%m-%d}.csv").write_bytes(
            fmt.wechat_bill([o for o in everything if o.channel == "wechatpay"], day))
        (folder / f"{fmt.ALIPAY_ACCOUNT}_{day:%Y%m%d}.csv.zip").write_bytes(
            fmt.alipay_zip([o for o in everything if o.channel == "alipay"], day))
    bank.write_statements(folder, list(by_day))
    for key, diff in bank.breaks.items():
        planter.expected[key] = (bank_plants.SOURCE, diff)
    planter.matched.update(bank.matched)
    return planter, bank, list(by_day)


class FuzzyProbe:
    """The pairs the fuzzy pass produced, per order, from the latest run of the order's day.

    A run stores breaks and counts, not the pairs it matched, and fuzzy precision needs the
    pairs: this wraps the engine's `fuzzy` pass (it runs unchanged) and reads the engine's
    match table `m` and views `ip`/`cp` right after it. If those names change in
    core/engine.py, the probe says so instead of scoring nothing."""

    PAIRS = """SELECT ip.order_id, cp.txn_id, m.status, m.score FROM m JOIN ip ON ip.id = m.iid
               JOIN cp ON cp.id = m.cid WHERE m.rule = 'fuzzy' AND ip.day = ?"""

    def __init__(self) -> None:
        self.pairs: dict[str, list[tuple[str, str, float]]] = {}  # order id -> [(channel txn id, status, score)]

    def observe(self, con, ctx) -> None:
        day = ctx.window.day
        try:
            for (order_id,) in con.execute("SELECT DISTINCT order_id FROM ip WHERE day = ?", [day]).fetchall():
                self.pairs.pop(order_id, None)  # a re-run of the day replaces what it said before
            for order_id, txn, status, score in con.execute(self.PAIRS, [day]).fetchall():
                self.pairs.setdefault(order_id, []).append((txn, status, score))
        except Exception as exc:  # noqa: BLE001 - any DuckDB error here means the engine's tables changed
            raise SystemExit(f"accuracy: cannot read the fuzzy pass's pairs ({exc}); core/engine.py's match "
                             "table or views changed: update FuzzyProbe in bench/accuracy.py") from exc

    def __enter__(self) -> "FuzzyProbe":
        self._at = engine.PASSES.index(engine.fuzzy)

        def fuzzy_observed(con, ctx):
            engine.fuzzy(con, ctx)
            self.observe(con, ctx)

        engine.PASSES[self._at] = fuzzy_observed
        return self

    def __exit__(self, *exc) -> None:
        engine.PASSES[self._at] = engine.fuzzy

    def with_status(self, status: str) -> set[tuple[str, str]]:
        return {(o, txn) for o, found in self.pairs.items() for txn, st, _score in found if st == status}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--orders", type=int, default=300, help="ordinary orders per channel per day")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=200)  # failure lines unwrapped in a log
    with tempfile.TemporaryDirectory(prefix="recon-accuracy-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        url = f"sqlite:///{folder / 'accuracy.db'}"
        cfg = from_dict({
            "database": {"url": url},
            "fx": {"rates": {"USD/CNY": str(FX_RATE)}},
            # our order ids, as the merged-payment pass finds them in memos and attach fields
            # (W-10012, A-50003, K-70005, a merged partner's W-10012-M)
            "matching": {"id_patterns": [r"[WAK]-\d{4,6}(?:-[A-Z])?"]},
            "merchants": [{"id": "acc", "name": "Accuracy", "sources": [
                {"name": "orders", "kind": "orders"},
                {"name": "wechatpay", "kind": "wechatpay", "settlement_lag_days": 1, "fee_rate": "0.006"},
                {"name": "alipay", "kind": "alipay", "settlement_lag_days": 1, "fee_rate": "0.006"},
                {"name": bank_plants.SOURCE, "kind": "mt940", "settlement_lag_days": 1, "timezone": "Asia/Shanghai"}]}],
        })
        m = cfg.merchants[0]
        bank_rules = Rules.for_source(cfg, m, m.source(bank_plants.SOURCE))
        planter, bank, days = generate(folder, args.days, args.orders, args.seed, bank_rules)
        upgrade(url)
        for p in sorted(folder.glob("*")):
            if p.suffix != ".db" and not p.name.endswith(("-wal", "-shm")):
                ingest_file(cfg, m, p)
        with FuzzyProbe() as probe:
            for day in days[:-1]:  # the trailing day only delivers statements
                run_day(cfg, m, day.date())
        found = list_breaks(url, m.id)
        assert not [b for b in found if b["status"] == "in_transit"], "the trailing day should age everything out"
        adjustments = _adjustments(url)
        elapsed = time.perf_counter() - t0
        get_engine(url).dispose()
    return report(console, planter, bank, probe, found, adjustments, args, elapsed)


def _adjustments(url: str) -> dict[int, int]:
    from sqlmodel import Session, select

    from models.tables import Adjustment

    with Session(get_engine(url)) as s:
        return {a.break_id: a.amount for a in s.exec(select(Adjustment)).all()}


def _key(b: dict) -> str:
    """A break's planted key: its order id, or for a bank line that names none, the bank's reference."""
    return b["order_id"] or b["txn_id"]


def fuzzy_expectations(planter: Planter, bank: bank_plants.BankPlanter) -> dict[tuple[str, str], tuple[str, str]]:
    """(order id, channel txn id) -> (path the pair must take, where it is and why)."""
    out = {}
    for x in bank.fuzzy:
        e = x.entry
        out[(x.order_id, e.ref)] = (x.status, f"{e.file} line {e.line} ({e.booked}, {e.amount} CNY, "
                                              f"/NAME/{e.name}/REMI/{e.remittance}): {x.why}")
    for o, twin in planter.ambiguous:
        for order in (o, twin):
            out[(order.order_id, o.txn_id)] = ("suggested", f"WeChat bill {o.paid_at:%Y-%m-%d}, payment {o.txn_id} "
                                                            f"(order id {o.channel_order_id}): two orders, one amount")
    return out


def report(console, planter: Planter, bank, probe: FuzzyProbe, found: list[dict], adjustments: dict[int, int],
           args, elapsed) -> int:
    expected = planter.expected
    by_key = defaultdict(list)
    for b in found:
        by_key[_key(b)].append(b)
    rows: dict[str, Counter] = defaultdict(Counter)
    false_breaks, missed = [], []
    for (key, type_), (source, diff) in expected.items():
        rows[type_]["planted"] += 1
        hits = by_key.get(key, [])
        if hits:
            rows[type_]["found"] += 1
        typed = [b for b in hits if b["type"] == type_]
        if typed:
            rows[type_]["right type"] += 1
        if any(cents(Decimal(b["difference"])) == diff for b in typed):
            rows[type_]["right amount"] += 1
        else:
            got = ", ".join(f"{b['type']} {b['difference']}" for b in hits) or "no break"
            missed.append(f"{source} {key}: planted {type_} {diff / 100:.2f}, found {got}")
    for b in found:
        if (_key(b), b["type"]) not in expected:
            false_breaks.append(b)
    # an adjustment is false unless its break was planted with exactly that difference
    planted_ids = {b["id"]: b for b in found if (_key(b), b["type"]) in expected}
    false_adj = [bid for bid, amount in adjustments.items()
                 if bid not in planted_ids or abs(cents(Decimal(planted_ids[bid]["difference"]))) != amount]

    t = Table(title=f"accuracy: {args.days} days × {args.orders} orders per channel + {len(bank.orders)} bank "
                    f"transfer orders, seed {args.seed} ({elapsed:.1f} s)", title_justify="left")
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
    console.print(f"planted but not found as planted: {len(missed)}", highlight=False)
    for line in missed[:10]:
        console.print(f"  {line}", highlight=False)
    console.print(f"false breaks: {len(false_breaks)}", highlight=False)
    for b in false_breaks[:10]:
        console.print(f"  {b['day']} {b['source']} {b['type']} {_key(b)}: {b['explanation']}", highlight=False)

    fuzzy_ok, failures = fuzzy_report(console, planter, bank, probe, found, expected)
    failures += bank_report(console, bank, by_key, probe)
    console.print(f"auto-adjustments: {len(adjustments)} proposed, {len(false_adj)} false", highlight=False)
    for line in failures:
        console.print(f"[bold red]FAILURE[/bold red] seed {args.seed}: {line}", highlight=False)
    ok = perfect and not false_breaks and not false_adj and fuzzy_ok
    console.print("[green]PASS[/green]: 100% found with the right type and difference, fuzzy precision and recall "
                  "1.00 on both paths, 0 false auto-adjustments" if ok else "[red]MISS[/red]: see the rows above")
    return 0 if ok else 1


def fuzzy_report(console, planter, bank, probe: FuzzyProbe, found, expected) -> tuple[bool, list[str]]:
    """Precision and recall of the fuzzy pass, by pair (order, channel line), on the confirmed
    path and on the suggested path; each wrong pair as one line for the failure list."""
    want = fuzzy_expectations(planter, bank)
    got = {"confirmed": probe.with_status("confirmed"), "suggested": probe.with_status("suggested")}
    t = Table(title="fuzzy pass, by pair (order, channel line)", title_justify="left")
    for col in ("path", "planted", "engine", "right", "precision", "recall"):
        t.add_column(col, justify="left" if col == "path" else "right")
    ok = True
    for path in ("confirmed", "suggested"):
        planted = {pair for pair, (p, _why) in want.items() if p == path}
        right = planted & got[path]
        precision = len(right) / len(got[path]) if got[path] else 1.0
        recall = len(right) / len(planted) if planted else 1.0
        ok &= precision == recall == 1.0
        t.add_row(path, str(len(planted)), str(len(got[path])), str(len(right)), f"{precision:.2f}", f"{recall:.2f}",
                  style=None if precision == recall == 1.0 else "red")
    console.print(t)
    failures = []
    engine_said = {(o, txn): st for o, found_ in probe.pairs.items() for txn, st, _sc in found_}
    scores = {(o, txn): sc for o, found_ in probe.pairs.items() for txn, st, sc in found_}
    for (order, txn), (path, why) in sorted(want.items()):
        said = engine_said.get((order, txn))
        if said != path:
            instead = [f"{st} with {t} (score {sc:.3f})" for t, st, sc in probe.pairs.get(order, [])] or ["nothing"]
            failures.append(f"{order} + {txn}: expected {path}, got {said or 'no pair'}; for {order} the engine "
                            f"has {', '.join(instead)}. {why}")
    for pair, said in sorted(engine_said.items()):
        if pair not in want:
            order, txn = pair
            failures.append(f"{order} + {txn}: the engine made a {said} pair (score {scores[pair]:.3f}) that was "
                            f"not planted")
    # the suggested pairs are the suggested_match breaks: both must agree
    cards = {(b["order_id"], b["txn_id"]) for b in found if b["type"] == "suggested_match"}
    if cards != got["suggested"]:
        failures.append(f"suggested_match breaks {sorted(cards ^ got['suggested'])} differ from the fuzzy pass's "
                        "suggested pairs")
    return ok and not failures, failures


def bank_report(console, bank, by_key, probe: FuzzyProbe) -> list[str]:
    """Per planted bank case: how many came out exactly as they must (fuzzy pairs, planted
    breaks with their amounts, and no other break on its orders or lines); -> a failure line
    for every break that should not be there or is missing."""
    said = {(o, txn): st for o, found_ in probe.pairs.items() for txn, st, _sc in found_}
    per_case: dict[str, Counter] = defaultdict(Counter)
    failures = []
    for inst in bank.instances:
        keys = {x.order_id for x in inst.fuzzy} | set(inst.matched) | {e.ref for e in inst.entries} | \
            {k for k, _t in inst.breaks}
        lines = "; ".join(f"{e.file} line {e.line} ({e.booked}, {e.amount} CNY, /NAME/{e.name}/REMI/{e.remittance})"
                          for e in inst.entries)
        wrong = [f"{b['type']} {b['difference']} on {b['day']} for {k}" for k in sorted(keys)
                 for b in by_key.get(k, []) if (k, b["type"]) not in inst.breaks]
        missing = [f"{t} {d / 100:.2f} for {k}" for (k, t), d in inst.breaks.items()
                   if not any(b["type"] == t and cents(Decimal(b["difference"])) == d for b in by_key.get(k, []))]
        pairs_ok = all(said.get((x.order_id, x.entry.ref)) == x.status for x in inst.fuzzy)
        per_case[inst.case]["planted"] += 1
        per_case[inst.case]["right"] += pairs_ok and not wrong and not missing
        if wrong or missing:
            pairs = "; ".join(f"{x.order_id} {x.status} with {x.entry.ref}" for x in inst.fuzzy)
            failures.append(f"bank {inst.case} planted {inst.day}: "
                            + "; ".join([*(f"unexpected break {w}" for w in wrong), *(f"missing {m}" for m in missing)])
                            + f". Lines: {lines or 'none'}" + (f". Expected pairs: {pairs}" if pairs else ""))
    t = Table(title="bank transfers (MT940 statements), by case", title_justify="left")
    for col in ("case", "planted", "as expected"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for case in bank_plants.CASES_SHOWN:
        c = per_case.get(case)
        if c:
            t.add_row(case, str(c["planted"]), str(c["right"]), style=None if c["planted"] == c["right"] else "red")
    console.print(t)
    return failures


if __name__ == "__main__":
    sys.exit(main())

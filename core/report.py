"""The daily report of a merchant's day, and the trends behind the charts: numbers only.

Built from what the store already holds, read-only:
- per source counts, amounts and matched % from the day's latest finished run
  (`ReconRun.stats`, through `core.summary.day_summary`, which `/recon today` shows too);
- breaks by type, in transit and the break list from the `break` table as it is now (an
  approval made after the run shows at once);
- automatic adjustments from the `adjustment` rows reconbot proposed or booked;
- refunds, fees charged against the rate card and the net settled amount from the stored
  records, aggregated in SQL (a day may hold a million rows).

Money stays integer minor units here; renderers turn it into Decimal or display strings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import and_, case, func, select
from sqlmodel import Session

from core.breaks import list_breaks
from core.config import Config
from core.money import to_major
from core.runs import channel_sources
from core.summary import day_summary
from models.db import get_engine
from models.tables import Adjustment, Break, Ledger, ReconRun, Record, StatementFile

# A break of the day, counted in "breaks by type": found by a run and not since cleared.
# In-transit items are not breaks yet (reported apart); notes are data quality, kept.
BREAK_STATES = ("open", "adjusted", "resolved", "note")
LISTED_STATES = BREAK_STATES + ("in_transit",)
BOOKED = ("applied", "approved")


@dataclass
class TypeTotal:
    count: int = 0
    total: int = 0  # signed sum of differences (channel - ours), minor units
    open: int = 0  # of which still open


@dataclass
class SourceReport:
    source: str
    internal_payments: int = 0
    internal_amount: int = 0
    channel_payments: int = 0
    channel_amount: int = 0
    internal_refunds: int = 0
    internal_refund_amount: int = 0  # negative: money given back
    channel_refunds: int = 0
    channel_refund_amount: int = 0
    matched: int = 0
    breaks: dict[str, TypeTotal] = field(default_factory=dict)
    in_transit: int = 0
    in_transit_amount: int = 0  # sum of |difference| of the items carried to later days
    auto_adjusted: int = 0  # adjustments reconbot proposed or booked for this day's breaks
    auto_adjusted_amount: int = 0
    auto_adjusted_booked: int = 0  # ... of which applied or approved (amount)
    fee_rate: Decimal | None = None
    fees_charged: int = 0  # on the channel's payments
    fees_returned: int = 0  # on its refunds (negative: handed back)
    fees_rate_card: int | None = None  # what the rate card says the payments should cost
    net_settled: int = 0  # channel payments + refunds - their fees

    @property
    def matched_pct(self) -> Decimal:
        if not self.internal_payments:
            return Decimal(100)
        return (Decimal(100) * self.matched / self.internal_payments).quantize(Decimal("0.1"))

    @property
    def fee_deviation(self) -> int | None:
        return None if self.fees_rate_card is None else self.fees_charged - self.fees_rate_card

    @property
    def break_count(self) -> int:
        return sum(t.count for t in self.breaks.values())


@dataclass
class DayReport:
    merchant: str
    merchant_name: str
    day: date
    currency: str
    run_id: int | None  # None: the day was never reconciled
    finished_at: datetime | None
    generated_at: datetime
    sources: list[SourceReport]
    breaks: list[dict]  # core.breaks.as_dict rows of the day (money as major-unit strings)

    @property
    def totals(self) -> SourceReport:
        """All sources added up (one merchant, one currency); matched % over all of them."""
        t = SourceReport("total", fee_rate=None)
        for s in self.sources:
            for name in ("internal_payments", "internal_amount", "channel_payments", "channel_amount",
                         "internal_refunds", "internal_refund_amount", "channel_refunds", "channel_refund_amount",
                         "matched", "in_transit", "in_transit_amount", "auto_adjusted", "auto_adjusted_amount",
                         "auto_adjusted_booked", "fees_charged", "fees_returned", "net_settled"):
                setattr(t, name, getattr(t, name) + getattr(s, name))
            for btype, tt in s.breaks.items():
                acc = t.breaks.setdefault(btype, TypeTotal())
                acc.count, acc.total, acc.open = acc.count + tt.count, acc.total + tt.total, acc.open + tt.open
        # a total rate card only where every source that charged fees has one (like with like)
        if all(s.fees_rate_card is not None for s in self.sources if s.fees_charged):
            t.fees_rate_card = sum(s.fees_rate_card or 0 for s in self.sources)
        return t


def day_report(cfg: Config, merchant_id: str, day: date, now: datetime | None = None) -> DayReport:
    merchant = cfg.merchant(merchant_id)
    url = cfg.database.url
    summary = day_summary(url, merchant.id, day)
    names = [s.name for s in channel_sources(merchant)]
    names += [s.source for s in summary.sources if s.source not in names]
    sources = {n: SourceReport(n, fee_rate=(merchant.source(n).fee_rate if merchant.source(n) else None))
               for n in names}
    for s in summary.sources:
        r = sources[s.source]
        r.internal_payments, r.internal_amount = s.internal_payments, s.internal_amount
        r.channel_payments, r.channel_amount, r.matched = s.channel_payments, s.channel_amount, s.matched
    with Session(get_engine(url)) as session:
        _add_breaks(session, merchant.id, day, sources)
        _add_adjustments(session, merchant.id, day, sources)
        _add_records(session, merchant.id, day, sources)
    breaks = list_breaks(url, merchant.id, day, LISTED_STATES)
    return DayReport(merchant.id, merchant.name, day, merchant.currency, summary.run_id, summary.finished_at,
                     now or datetime.now(timezone.utc), [sources[n] for n in sorted(sources)], breaks)


def _add_breaks(s: Session, merchant_id: str, day: date, sources: dict[str, SourceReport]) -> None:
    rows = s.execute(select(Break.source, Break.type, Break.status, func.count(), func.sum(Break.difference),
                            func.sum(func.abs(Break.difference)))
                     .where(Break.merchant_id == merchant_id, Break.business_day == day,
                            Break.status.in_(LISTED_STATES))
                     .group_by(Break.source, Break.type, Break.status)).all()
    for source, btype, status, n, total, magnitude in rows:
        r = sources.setdefault(source, SourceReport(source))
        if status == "in_transit":
            r.in_transit += n
            r.in_transit_amount += int(magnitude or 0)
            continue
        t = r.breaks.setdefault(btype, TypeTotal())
        t.count += n
        t.total += int(total or 0)
        t.open += n if status == "open" else 0


def _add_adjustments(s: Session, merchant_id: str, day: date, sources: dict[str, SourceReport]) -> None:
    rows = s.execute(select(Break.source, Adjustment.status, func.count(), func.sum(Adjustment.amount))
                     .join(Break, Break.id == Adjustment.break_id)
                     .where(Break.merchant_id == merchant_id, Break.business_day == day,
                            Adjustment.created_by == "reconbot")
                     .group_by(Break.source, Adjustment.status)).all()
    for source, status, n, amount in rows:
        r = sources.setdefault(source, SourceReport(source))
        r.auto_adjusted += n
        r.auto_adjusted_amount += int(amount or 0)
        if status in BOOKED:
            r.auto_adjusted_booked += int(amount or 0)


def _rate_card_sql(rate: Decimal):
    """Σ round_half_away((amount - discount) × rate) in exact integer SQL: the engine's
    fee_mismatch rule, per record, summed (rate = p/q)."""
    p, q = Decimal(rate).as_integer_ratio()
    base = Record.amount - Record.discount
    return func.sum(case((base >= 0, (base * (2 * p) + q) // (2 * q)),
                         else_=-((-base * (2 * p) + q) // (2 * q))))


def _records_of_days(first: date, last: date, *columns):
    """SELECT columns over the records of [first, last] joined to their ledger, found through
    the statement files that hold those days (the ORM form of core.store.records_of_days:
    record ids by file range; `+ 0` keeps SQLite off the identity index, which would walk
    every day of the ledger)."""
    return (select(*columns).select_from(StatementFile)
            .join(Record, and_(Record.file_id == StatementFile.id,
                               Record.id.between(StatementFile.first_record_id, StatementFile.last_record_id)))
            .join(Ledger, Ledger.id == Record.ledger_id + 0)
            .where(StatementFile.merchant_id == Ledger.merchant_id, StatementFile.side == Ledger.side,
                   StatementFile.last_day >= first, StatementFile.first_day <= last,
                   Record.business_day >= first, Record.business_day <= last))


def _add_records(s: Session, merchant_id: str, day: date, sources: dict[str, SourceReport]) -> None:
    """Refunds on both sides, and for the channel its fees and what it settles, from the records."""
    q = (_records_of_days(day, day, Ledger.source, Ledger.side, Record.kind, func.count(), func.sum(Record.amount),
                          func.sum(Record.fee))
         .where(Ledger.merchant_id == merchant_id, Record.kind.in_(("payment", "refund")),
                Ledger.side.in_(("internal", "channel")),  # not payment notifications (core/realtime.py)
                (Ledger.side == "internal") | (Record.status == "success"))
         .group_by(Ledger.source, Ledger.side, Record.kind))
    for source, side, kind, n, amount, fee in s.execute(q).all():
        r = sources.get(source)
        if r is None:  # a ledger of a source no longer configured and never reconciled
            continue
        amount, fee = int(amount or 0), int(fee or 0)
        if side == "internal":
            if kind == "refund":
                r.internal_refunds, r.internal_refund_amount = n, amount
            continue
        if kind == "refund":
            r.channel_refunds, r.channel_refund_amount, r.fees_returned = n, amount, fee
        else:
            r.fees_charged = fee
        r.net_settled += amount - fee
    for r in sources.values():
        if r.fee_rate is None:
            continue
        expected = s.execute(_records_of_days(day, day, _rate_card_sql(r.fee_rate)).where(
            Ledger.merchant_id == merchant_id, Ledger.source == r.source, Ledger.side == "channel",
            Record.kind == "payment", Record.status == "success")).scalar_one()
        r.fees_rate_card = int(expected or 0)


# -- trends (the charts) -----------------------------------------------------------------

@dataclass
class Trend:
    merchant: str
    merchant_name: str
    currency: str
    first: date
    last: date
    days: list[date]  # reconciled days in [first, last], oldest first
    sources: list[str]
    matched_pct: dict[str, list[Decimal | None]]  # per source, one value per day (None: no payments)
    break_amount: dict[str, list[int]]  # Σ|difference| of the day's breaks, minor units
    refund_rate: dict[str, list[Decimal | None]]  # channel refunds / channel payments, by amount, %
    fees: dict[str, int]  # fees charged over the period, per source (the fee share)

    @property
    def empty(self) -> bool:
        return not self.days


def trend(cfg: Config, merchant_id: str, last: date, days: int | None = None) -> Trend:
    """Per source and reconciled day of the `days` ending on `last`: matched %, break
    amounts, refund rate; and the fees of the whole period per source."""
    merchant = cfg.merchant(merchant_id)
    days = days or cfg.report.chart_days
    first = last - timedelta(days=days - 1)
    with Session(get_engine(cfg.database.url)) as s:
        runs = s.execute(select(ReconRun.business_day, ReconRun.stats).where(
            ReconRun.merchant_id == merchant.id, ReconRun.status == "done", ReconRun.business_day >= first,
            ReconRun.business_day <= last).order_by(ReconRun.business_day, ReconRun.id)).all()
        stats = {d: json.loads(st) for d, st in runs}  # the latest run of a day wins
        breaks = s.execute(select(Break.business_day, Break.source, func.sum(func.abs(Break.difference))).where(
            Break.merchant_id == merchant.id, Break.business_day >= first, Break.business_day <= last,
            Break.status.in_(BREAK_STATES)).group_by(Break.business_day, Break.source)).all()
        money = s.execute(_records_of_days(first, last, Record.business_day, Ledger.source, Record.kind,
                                           func.sum(Record.amount), func.sum(Record.fee))
                          .where(Ledger.merchant_id == merchant.id, Ledger.side == "channel",
                                 Record.status == "success", Record.kind.in_(("payment", "refund")))
                          .group_by(Record.business_day, Ledger.source, Record.kind)).all()
    reconciled = sorted(stats)
    names = sorted({n for st in stats.values() for n in st} | {src for d, src, _ in breaks if d in stats})
    index = {d: i for i, d in enumerate(reconciled)}
    matched = {n: [None] * len(reconciled) for n in names}
    for d, st in stats.items():
        for n, x in st.items():
            if x.get("internal_payments"):
                matched[n][index[d]] = (Decimal(100) * x.get("matched", 0) / x["internal_payments"]).quantize(
                    Decimal("0.1"))
    amounts = {n: [0] * len(reconciled) for n in names}
    for d, src, total in breaks:
        if d in index and src in amounts:
            amounts[src][index[d]] = int(total or 0)
    paid = defaultdict(int)
    refunded = defaultdict(int)
    fees = defaultdict(int)
    for d, src, kind, amount, fee in money:
        if d not in index or src not in amounts:
            continue  # days never reconciled (synthetic history, files not yet run) stay out
        (paid if kind == "payment" else refunded)[(src, d)] += int(amount or 0)
        if kind == "payment":
            fees[src] += int(fee or 0)
    refund_rate = {n: [(Decimal(100) * -refunded[(n, d)] / paid[(n, d)]).quantize(Decimal("0.01"))
                       if paid[(n, d)] else None for d in reconciled] for n in names}
    return Trend(merchant.id, merchant.name, merchant.currency, first, last, reconciled, names, matched, amounts,
                 refund_rate, {n: fees[n] for n in names})


# -- plain data for JSON -----------------------------------------------------------------

def _source_json(r: SourceReport, cur: str) -> dict:
    m = lambda v: to_major(v, cur)  # noqa: E731
    return {
        "source": r.source,
        "internal": {"payments": r.internal_payments, "amount": m(r.internal_amount),
                     "refunds": r.internal_refunds, "refund_amount": m(r.internal_refund_amount)},
        "channel": {"payments": r.channel_payments, "amount": m(r.channel_amount),
                    "refunds": r.channel_refunds, "refund_amount": m(r.channel_refund_amount)},
        "matched": r.matched, "matched_pct": str(r.matched_pct),
        "breaks": {k: {"count": t.count, "total": m(t.total), "open": t.open} for k, t in sorted(r.breaks.items())},
        "in_transit": {"count": r.in_transit, "amount": m(r.in_transit_amount)},
        "auto_adjusted": {"count": r.auto_adjusted, "amount": m(r.auto_adjusted_amount),
                          "booked": m(r.auto_adjusted_booked)},
        "fees": {"rate": str(r.fee_rate) if r.fee_rate is not None else None, "charged": m(r.fees_charged),
                 "returned": m(r.fees_returned), "rate_card": m(r.fees_rate_card), "deviation": m(r.fee_deviation)},
        "net_settled": m(r.net_settled),
    }


def _utc_iso(t: datetime | None) -> str | None:
    """Stored times are UTC; SQLite hands them back without their zone."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()


def as_json(rep: DayReport) -> dict:
    """The report as plain data: money as decimal strings in major units (never a float)."""
    return {
        "merchant": rep.merchant, "merchant_name": rep.merchant_name, "day": rep.day.isoformat(),
        "currency": rep.currency, "run_id": rep.run_id,
        "finished_at": _utc_iso(rep.finished_at), "generated_at": _utc_iso(rep.generated_at),
        "sources": [_source_json(r, rep.currency) for r in rep.sources],
        "total": _source_json(rep.totals, rep.currency),
        "breaks": rep.breaks,
    }

"""Reconcile one merchant's business day: load both sides per source, match, store breaks.

Idempotent: a break's `key` is stable, so re-running a day updates breaks in place; a
break that a later run no longer finds (the money arrived) is marked `cleared`. Breaks a
person has acted on (adjusted, resolved) are never touched by a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from sqlalchemy import select
from sqlmodel import Session

from core import engine, store
from core.config import Config, MerchantConfig
from core.explain import explain
from core.money import to_minor
from models.db import get_engine
from models.tables import Break, ReconRun

OPEN_STATES = ("open", "in_transit")
INTERNAL_KINDS = ("orders",)


@dataclass
class SourceSummary:
    source: str
    internal_payments: int
    internal_amount: int
    channel_payments: int
    channel_amount: int
    matched: int
    breaks: dict[str, int] = field(default_factory=dict)
    in_transit: int = 0

    @property
    def matched_pct(self) -> float:
        return 100.0 * self.matched / self.internal_payments if self.internal_payments else 100.0


@dataclass
class RunSummary:
    run_id: int
    merchant: str
    day: date
    currency: str
    sources: list[SourceSummary]
    created: int
    updated: int
    cleared: int


def channel_sources(merchant: MerchantConfig):
    return [s for s in merchant.sources if s.kind not in INTERNAL_KINDS]


def run_day(cfg: Config, merchant: MerchantConfig, day: date, on_source=None) -> RunSummary:
    url = cfg.database.url
    store.ensure_merchant(url, merchant)
    coverage = store.coverage(url, merchant.id)
    internal_through = max((d for (s, side), d in coverage.items() if side == "internal"), default=None)
    tolerance = engine.Tolerance(to_minor(cfg.tolerance.absolute, merchant.currency), cfg.tolerance.percent)

    db = get_engine(url)
    with Session(db) as s:
        run = ReconRun(merchant_id=merchant.id, business_day=day)
        s.add(run)
        s.commit()
        run_id = run.id

    summaries: list[SourceSummary] = []
    findings: list[tuple[str, dict]] = []
    for src in channel_sources(merchant):
        ledgers = store.ledger_ids(url, merchant.id, {(src.name, "internal"), (src.name, "channel")})
        window = engine.Window(day, src.settlement_lag_days, internal_through, coverage.get((src.name, "channel")))
        internal = store.load_records(url, ledgers[(src.name, "internal")], window.first, window.last)
        channel = store.load_records(url, ledgers[(src.name, "channel")], window.first, window.last)
        found, stats = engine.reconcile(internal, channel, window, tolerance)
        summary = SourceSummary(src.name, **stats)
        for f in found:
            if f["status"] == "in_transit":
                summary.in_transit += 1
            else:
                summary.breaks[f["type"]] = summary.breaks.get(f["type"], 0) + 1
            findings.append((src.name, f))
        summaries.append(summary)
        if on_source:
            on_source(src.name)

    created, updated, cleared = _store_breaks(db, merchant, day, run_id, findings, window_by_source={
        s.name: s for s in channel_sources(merchant)})
    with Session(db) as s:
        run = s.get(ReconRun, run_id)
        run.status = "done"
        run.finished_at = datetime.now(timezone.utc)
        run.stats = json.dumps({x.source: x.__dict__ for x in summaries}, ensure_ascii=False, default=str)
        s.add(run)
        s.commit()
    return RunSummary(run_id, merchant.id, day, merchant.currency, summaries, created, updated, cleared)


def break_key(source: str, f: dict) -> str:
    return f"{source}:{f['type']}:{f['kind']}:{f['anchor_side']}:{f['anchor_ref']}"


def _store_breaks(db, merchant, day, run_id, findings, window_by_source) -> tuple[int, int, int]:
    now = datetime.now(timezone.utc)
    created = updated = cleared = 0
    with Session(db) as s:
        existing = {b.key: b for b in s.execute(
            select(Break).where(Break.merchant_id == merchant.id, Break.business_day == day)).scalars()}
        seen = set()
        for source, f in findings:
            key = break_key(source, f)
            seen.add(key)
            evidence = json.dumps([dict(e) for e in f["evidence"]], ensure_ascii=False)
            values = dict(
                source=source, type=f["type"], order_id=f["order_id"], txn_id=f["txn_id"],
                internal_amount=f["internal_amount"], channel_amount=f["channel_amount"],
                difference=int(f["difference"]), currency=f["currency"], rule=f["rule"],
                tolerance=int(f["tolerance"]), evidence=evidence,
                explanation=explain(f, lag_days=window_by_source[source].settlement_lag_days),
            )
            b = existing.get(key)
            if b is None:
                s.add(Break(merchant_id=merchant.id, business_day=day, key=key, status=f["status"],
                            first_run_id=run_id, last_run_id=run_id, **values))
                created += 1
                continue
            if b.status not in OPEN_STATES:
                continue  # a person has dealt with it
            changed = {k: v for k, v in values.items() if getattr(b, k) != v}
            if b.status != f["status"]:
                changed["status"] = f["status"]
            if changed:
                for k, v in changed.items():
                    setattr(b, k, v)
                b.version += 1
                b.updated_at = now
                b.last_run_id = run_id
                updated += 1
        for key, b in existing.items():
            if key not in seen and b.status in OPEN_STATES:
                b.status = "cleared"
                b.version += 1
                b.updated_at = now
                b.last_run_id = run_id
                cleared += 1
        s.commit()
    return created, updated, cleared

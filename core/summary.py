"""Read-only views of a merchant's day for people: what `/recon today` and `/recon pending` show.

Counts, amounts and matched % come from the day's latest finished run (its stats); the
breaks come from the break table as they are now, so an approval made after the run is
reflected at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from sqlalchemy import func, or_, select
from sqlmodel import Session

from models.db import get_engine
from models.tables import Break, ReconRun

OPEN = ("open",)


@dataclass
class SourceDay:
    source: str
    internal_payments: int = 0
    internal_amount: int = 0
    channel_payments: int = 0
    channel_amount: int = 0
    matched: int = 0
    fees: int = 0
    in_transit: int = 0
    breaks: dict[str, int] = field(default_factory=dict)  # open breaks by type, now
    open_difference: int = 0  # sum of |difference| of the open breaks

    @property
    def matched_pct(self) -> float:
        return 100.0 * self.matched / self.internal_payments if self.internal_payments else 100.0


@dataclass
class DaySummary:
    merchant: str
    day: date
    run_id: int | None  # None: the day was never reconciled
    finished_at: datetime | None
    sources: list[SourceDay]


def day_summary(url: str, merchant_id: str, day: date) -> DaySummary:
    with Session(get_engine(url)) as s:
        run = s.execute(select(ReconRun).where(
            ReconRun.merchant_id == merchant_id, ReconRun.business_day == day, ReconRun.status == "done")
            .order_by(ReconRun.id.desc()).limit(1)).scalars().first()
        rows = s.execute(select(Break.source, Break.type, func.count(), func.sum(func.abs(Break.difference))).where(
            Break.merchant_id == merchant_id, Break.business_day == day, Break.status.in_(OPEN))
            .group_by(Break.source, Break.type)).all()
    sources: dict[str, SourceDay] = {}
    if run is not None:
        for name, st in json.loads(run.stats).items():
            sources[name] = SourceDay(name, **{k: st.get(k, 0) for k in (
                "internal_payments", "internal_amount", "channel_payments", "channel_amount", "matched", "fees",
                "in_transit")})
    for source, btype, n, total in rows:
        sd = sources.setdefault(source, SourceDay(source))
        sd.breaks[btype] = n
        sd.open_difference += int(total or 0)
    return DaySummary(merchant_id, day, run.id if run else None, run.finished_at if run else None,
                      [sources[k] for k in sorted(sources)])


def open_breaks(url: str, merchant_ids: list[str], assignee_id: int | None = None, limit: int = 10,
                now: datetime | None = None) -> tuple[list[Break], int]:
    """Open, not snoozed breaks, largest difference first; and how many there are in all."""
    now = now or datetime.now(timezone.utc)
    q = select(Break).where(Break.merchant_id.in_(merchant_ids), Break.status.in_(OPEN),
                            or_(Break.snoozed_until.is_(None), Break.snoozed_until <= now))
    if assignee_id is not None:
        q = q.where(Break.assignee_id == assignee_id)
    with Session(get_engine(url)) as s:
        total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = list(s.execute(q.order_by(func.abs(Break.difference).desc(), Break.id).limit(limit)).scalars())
    return rows, total

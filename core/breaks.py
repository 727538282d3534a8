"""Reading breaks back for people and programs (the `recon breaks` contract)."""

from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select
from sqlmodel import Session

from core.money import to_major
from models.db import get_engine
from models.tables import Break

TYPE_ORDER = ["short", "long", "amount_mismatch", "status_mismatch", "duplicate_charge", "anomaly"]


def list_breaks(url: str, merchant_id: str | None = None, day: date | None = None,
                statuses: tuple[str, ...] | None = ("open", "in_transit", "note")) -> list[dict]:
    """Breaks as plain dicts: money as decimal strings in major units, evidence as a list."""
    q = select(Break)
    if merchant_id:
        q = q.where(Break.merchant_id == merchant_id)
    if day:
        q = q.where(Break.business_day == day)
    if statuses:
        q = q.where(Break.status.in_(statuses))
    with Session(get_engine(url)) as s:
        rows = list(s.execute(q).scalars())
    rows.sort(key=lambda b: (b.business_day, b.merchant_id, b.source,
                             TYPE_ORDER.index(b.type) if b.type in TYPE_ORDER else 99, -abs(b.difference), b.id))
    return [as_dict(b) for b in rows]


def as_dict(b: Break) -> dict:
    cur = b.currency
    return {
        "id": b.id,
        "merchant": b.merchant_id,
        "day": b.business_day.isoformat(),
        "type": b.type,
        "source": b.source,
        "order_id": b.order_id,
        "txn_id": b.txn_id,
        "internal_amount": to_major(b.internal_amount, cur),
        "channel_amount": to_major(b.channel_amount, cur),
        "difference": to_major(b.difference, cur),
        "currency": cur,
        "status": b.status,
        "severity": b.severity,  # note | normal | urgent | muted (a late statement mutes its day)
        "rule": b.rule,
        "tolerance": to_major(b.tolerance, cur),
        "explanation": b.explanation,
        "anomaly_score": b.anomaly_score,
        "evidence": json.loads(b.evidence),
        "version": b.version,
    }

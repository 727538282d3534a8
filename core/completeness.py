"""Completeness: has each source's statement for a business day arrived, and in time?

A source with `expected_by = "HH:MM"` owes the statement of day D by that local time (its
own `timezone`) on day D + `expected_lag_days`. Past that moment, with no statement file
ingested for (source, D), the day gets one `late` break for that source (key anchored on
source + day, so re-runs update it and the run after the file arrives clears it).

A file that was delivered but failed ingest (or a download that failed its hash) is kept
in `rejected_file`; it counts as not arrived, and the late break says
"rejected: <reason>" with the file as evidence.

Muting: while a source is late for D, the per-order breaks of that source and day are
still computed and stored (status unchanged, so nothing is lost and the next run can
clear them), but with severity `muted` and a sentence saying why; policy proposes no
adjustment for them. A late *internal* source (our orders) mutes every channel of the
day: without our books every channel item looks unmatched.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.config import Config, MerchantConfig, SourceConfig
from models.db import get_engine
from models.tables import RejectedFile, StatementFile

INTERNAL_KINDS = ("orders", "orders_sql")


def record_rejection(url: str, merchant: MerchantConfig, source: str | None, day: date | None, path: str,
                     sha256: str, reason: str) -> None:
    """Remember a rejected file (idempotent per file content; a later rejection updates it)."""
    for _attempt in range(2):
        with Session(get_engine(url)) as s:
            row = s.exec(select(RejectedFile).where(RejectedFile.merchant_id == merchant.id,
                                                    RejectedFile.sha256 == sha256)).first()
            if row is None:
                row = RejectedFile(merchant_id=merchant.id, sha256=sha256, path=path, reason=reason)
            row.source = source or row.source
            row.business_day = day or row.business_day
            row.path, row.reason, row.rejected_at = path, reason, datetime.now(timezone.utc)
            s.add(row)
            try:
                s.commit()
                return
            except IntegrityError:  # another process recorded it first: update theirs
                s.rollback()


def is_rejected(url: str, merchant_id: str, sha256: str) -> bool:
    with Session(get_engine(url)) as s:
        return s.exec(select(RejectedFile.id).where(RejectedFile.merchant_id == merchant_id,
                                                    RejectedFile.sha256 == sha256)).first() is not None


def arrived(url: str, merchant_id: str, source: str, day: date) -> bool:
    """Has a statement of `source` for business day `day` been stored? (The scheduler's pull
    retries ask the same question the late check does.)"""
    with Session(get_engine(url)) as s:
        return s.exec(select(StatementFile.id).where(
            StatementFile.merchant_id == merchant_id, StatementFile.source == source,
            StatementFile.business_day == day)).first() is not None


def rejections(url: str, merchant_id: str, source: str, day: date) -> list[RejectedFile]:
    """Files of `source` for `day` that were delivered and rejected, newest first."""
    with Session(get_engine(url)) as s:
        return list(s.exec(select(RejectedFile).where(
            RejectedFile.merchant_id == merchant_id, RejectedFile.source == source,
            RejectedFile.business_day == day).order_by(RejectedFile.rejected_at.desc())))


def due(source: SourceConfig, day: date) -> datetime | None:
    """When the statement of `day` is due (aware, in the source's zone), or None if never checked."""
    if not source.expected_by:
        return None
    hour, minute = map(int, source.expected_by.split(":"))
    return datetime.combine(day + timedelta(days=source.expected_lag_days), time(hour, minute),
                            ZoneInfo(source.timezone))


def late_findings(cfg: Config, merchant: MerchantConfig, day: date, now: datetime) -> list[tuple[SourceConfig, dict]]:
    """One `late` finding per source whose statement of `day` is overdue (or was rejected)."""
    url = cfg.database.url
    out = []
    for src in merchant.sources:
        deadline = due(src, day)
        if deadline is None or now < deadline:
            continue
        if arrived(url, merchant.id, src.name, day):
            continue
        rejected = rejections(url, merchant.id, src.name, day)
        side = "internal" if src.kind in INTERNAL_KINDS else "channel"
        out.append((src, {
            "type": "late", "kind": "statement", "status": "open", "rule": "expected_by",
            "anchor_side": side, "anchor_ref": day.isoformat(),
            "order_id": None, "txn_id": None, "internal_amount": None, "channel_amount": None,
            "difference": 0, "tolerance": 0, "currency": merchant.currency, "score": None,
            "source_name": src.name, "day": day.isoformat(), "due": f"{deadline:%Y-%m-%d %H:%M} {src.timezone}",
            "rejected": [r.reason for r in rejected],
            "evidence": [{"side": side, "file": r.path, "line": None} for r in rejected],
        }))
    return out


def mute(findings: list[tuple[SourceConfig, dict]], late: list[tuple[SourceConfig, dict]]) -> int:
    """Mark the findings of late sources (all sources when our books are late); -> how many."""
    late_names = {src.name for src, _f in late}
    books = next((src.name for src, f in late if f["anchor_side"] == "internal"), None)
    muted = 0
    for src, f in findings:
        by = src.name if src.name in late_names else books
        if by:
            f["muted_by"] = by
            muted += 1
    return muted

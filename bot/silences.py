"""Silences: "no new cards for these breaks until then, because ...", with an author.

A silence matches a merchant and, optionally, a source, a break type and a business day;
it is time-boxed (`ends_at`) and can be ended early. Adding or ending one needs an
approver (or an admin) and writes an audit event. While a silence holds, the alert
pipeline sends no new card for a matching break (cards already out are still kept
current) and escalates nothing for it; the first pass after it ends sends what it held.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select
from sqlmodel import Session

from bot.users import Actor
from core.config import Config
from models.db import get_engine
from models.tables import AuditEvent, Silence

DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
MAX_SILENCE = timedelta(days=90)


class SilenceError(Exception):
    pass


def parse_duration(text: str) -> timedelta:
    """"2d", "36h", "1d12h", "90m", "1w" -> a timedelta; SilenceError otherwise."""
    m = DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise SilenceError(f"{text!r} is not a duration like 2d, 36h, 1d12h or 90m")
    weeks, days, hours, minutes = (int(g or 0) for g in m.groups())
    span = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)
    if span <= timedelta(0) or span > MAX_SILENCE:
        raise SilenceError(f"a silence lasts between a minute and {MAX_SILENCE.days} days, not {text}")
    return span


@dataclass(frozen=True)
class Matchers:
    merchant_id: str
    source: str | None = None
    type: str | None = None
    day: date | None = None

    def describe(self) -> str:
        return " ".join([self.merchant_id] + [f"{k}={v}" for k, v in (("source", self.source), ("type", self.type),
                                                                      ("day", self.day)) if v is not None])


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def add(cfg: Config, actor: Actor, m: Matchers, span: timedelta, reason: str, platform: str = "console",
        now: datetime | None = None) -> Silence:
    if not actor.at_least("approver"):
        raise SilenceError(f"{actor.name} is a {actor.role}; silencing needs an approver or an admin")
    if not actor.may_see(m.merchant_id):
        raise SilenceError(f"{m.merchant_id} is outside {actor.name}'s merchants")
    cfg.merchant(m.merchant_id)  # ConfigError for an unknown merchant
    if m.source is not None and cfg.merchant(m.merchant_id).source(m.source) is None:
        raise SilenceError(f"{m.merchant_id} has no source {m.source!r}")
    if not reason.strip():
        raise SilenceError("a silence needs a reason (--reason \"bank holiday, T+2 expected\")")
    now = now or datetime.now(timezone.utc)
    with Session(get_engine(cfg.database.url)) as s:
        row = Silence(merchant_id=m.merchant_id, source=m.source, type=m.type, business_day=m.day, starts_at=now,
                      ends_at=now + span, author=actor.name, reason=reason.strip())
        s.add(row)
        s.flush()
        s.add(AuditEvent(at=now, actor=actor.name, action="silence_add", subject_type="silence",
                         subject_id=str(row.id), platform=platform,
                         detail=json.dumps({"merchant": m.merchant_id, "source": m.source, "type": m.type,
                                            "day": m.day.isoformat() if m.day else None,
                                            "ends_at": row.ends_at.isoformat(), "reason": row.reason},
                                           ensure_ascii=False)))
        s.commit()
        s.refresh(row)
        s.expunge(row)
        return row


def end(cfg: Config, actor: Actor, silence_id: int, platform: str = "console",
        now: datetime | None = None) -> Silence:
    if not actor.at_least("approver"):
        raise SilenceError(f"{actor.name} is a {actor.role}; ending a silence needs an approver or an admin")
    now = now or datetime.now(timezone.utc)
    with Session(get_engine(cfg.database.url)) as s:
        row = s.get(Silence, silence_id)
        if row is None or not actor.may_see(row.merchant_id):
            raise SilenceError(f"no silence #{silence_id}")
        if row.ended_at is not None or _utc(row.ends_at) <= now:
            raise SilenceError(f"silence #{silence_id} is over already")
        row.ended_at, row.ended_by = now, actor.name
        s.add(AuditEvent(at=now, actor=actor.name, action="silence_end", subject_type="silence",
                         subject_id=str(silence_id), platform=platform,
                         detail=json.dumps({"merchant": row.merchant_id}, ensure_ascii=False)))
        s.commit()
        s.refresh(row)
        s.expunge(row)
        return row


def active(url: str, merchant_ids: list[str] | None, now: datetime) -> list[Silence]:
    q = select(Silence).where(Silence.ended_at.is_(None), Silence.starts_at <= now, Silence.ends_at > now)
    if merchant_ids is not None:
        q = q.where(Silence.merchant_id.in_(merchant_ids))
    with Session(get_engine(url)) as s:
        rows = list(s.execute(q.order_by(Silence.id)).scalars())
        s.expunge_all()
        return rows


def listing(url: str, now: datetime, include_over: bool = False) -> list[Silence]:
    q = select(Silence)
    if not include_over:
        q = q.where(Silence.ended_at.is_(None), Silence.ends_at > now)
    with Session(get_engine(url)) as s:
        rows = list(s.execute(q.order_by(Silence.id)).scalars())
        s.expunge_all()
        return rows


def matching(silences: list[Silence], merchant_id: str, source: str, btype: str, day: date) -> Silence | None:
    for x in silences:
        if (x.merchant_id == merchant_id and x.source in (None, source) and x.type in (None, btype)
                and x.business_day in (None, day)):
            return x
    return None


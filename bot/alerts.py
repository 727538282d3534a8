"""The alert pipeline: a merchant's breaks -> the cards each chat should show -> the outbox.

    collect -> inhibit -> silence -> group -> route -> dedupe -> outbox (-> drain) -> escalate

`alert_merchant` composes the stages in one place (read it first); each stage is a small
function below it. Only the outbox (bot/outbox.py) talks to the channels, and only it
retries. The stages in a sentence each:

- **collect**: the merchant's open breaks, and every break or digest that has a live card
  somewhere (its card must follow it to "cleared"/"resolved").
- **inhibit**: a `late` (or rejected) statement mutes the per-order findings of its source
  and day (the engine stores them with severity `muted`); none of them gets a card, and the
  late break's own card says how many it holds back, once.
- **silence**: a break an active silence matches gets no new card and no escalation.
- **group**: a break at or above `alerts.threshold` (or urgent, or late) gets a card of
  its own; the smaller ones become one digest card per merchant, source and day, with a
  button that approves the auto-adjustable ones. A break that already has its own card
  keeps it.
- **route**: each card goes to the routes of its merchant whose `severity` list takes it,
  in the merchant's language (else the platform's); new cards of their own are limited per
  route and pass (`chat.max_cards_per_run`, and `room()` of a channel that counts messages
  per chat): the rest wait in the digest for the next pass.
- **dedupe**: one live card per (card, route): a card not sent there yet is sent, a card
  that now shows something else is edited, an unchanged one is left alone; a break that
  was cleared or acted on gets its final state, and its escalations stop.
- **outbox**: each message is written (and committed) before anything is sent; then the
  outbox is drained (bot/outbox.py says what is guaranteed across a crash).
- **escalate**: an own-card break at or above the threshold that nobody acts on is sent
  to escalation level 1 after N minutes, level 2 after M, ... (rows in `escalation`, so a
  restart keeps them); any action on the break cancels them (bot/actions.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.actions import Workflow
from bot.cards import ALERT_WORDS, Card, text_card
from bot.digests import DigestKey, digest_card
from bot.outbox import Message, card_hash, crash_point, drain_outbox, enqueue, enqueue_notice, usable_routes
from bot.silences import active as active_silences, matching as matching_silence
from bot.transport import Channel
from core.config import ChatRoute, Config
from core.money import display, to_minor
from models.db import get_engine
from models.tables import AlertCard, Break, Escalation

__all__ = ["alert_merchant", "drain_outbox", "escalate_due", "send_digest", "AlertReport", "pending_escalations"]

log = logging.getLogger("reconbot.alerts")
OWN_TYPES = ("late",)  # always a card of their own, whatever the amount
CLOSED = {"cleared": "cleared", "resolved": "resolved", "adjusted": "adjusted"}


@dataclass
class AlertReport:
    merchant_id: str
    sends: int = 0  # new cards queued
    updates: int = 0  # edits queued
    muted: int = 0  # findings held back by a late statement
    silenced: int = 0  # breaks held back by a silence
    deferred: int = 0  # own cards that wait for the next pass (route limit)
    digests: int = 0  # digest cards in this pass (per merchant, source, day)
    escalations: int = 0  # escalation rows scheduled
    delivered: int = 0  # messages the drain sent (this pass's and any due before)

    def line(self) -> str:
        return (f"alerts: {self.sends} new card(s), {self.updates} update(s), {self.digests} digest(s), "
                f"{self.muted} muted, {self.silenced} silenced, {self.deferred} deferred; "
                f"{self.delivered} message(s) delivered")


@dataclass
class Plan:
    """One logical card of this pass: what it shows depends on the route's language."""

    card_key: str
    severity: str  # note | normal | urgent (route matching)
    breaks: list[Break]  # the break of an own card; a digest's members
    digest: DigestKey | None = None
    new_allowed: bool = True  # False: only cards already out are kept current (held, closed)
    final: bool = False  # the last state: the break is closed / the digest is empty
    muted: int = 0  # late card: per-order findings it holds back
    size: int = 0  # ordering of own cards (largest first)


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc))


# -- the table of contents ----------------------------------------------------------------------

def alert_merchant(cfg: Config, channels: dict[str, Channel], merchant_id: str,
                   now: datetime | None = None) -> AlertReport:
    """Run the pipeline over the merchant's current breaks, write the outbox, drain it."""
    now = _now(now)
    report = AlertReport(merchant_id)
    breaks, live = collect(cfg, merchant_id)
    held = inhibit(breaks, report)
    held |= silence(cfg, merchant_id, breaks, now, report)
    plans = group(cfg, merchant_id, breaks, held, live, report, now)
    messages = dedupe(cfg, route(cfg, channels, merchant_id, plans, live, report))
    outbox(cfg, messages, now, report)
    stop_escalations(cfg, breaks, now)
    schedule_escalations(cfg, messages, now, report)
    crash_point("after_enqueue")
    report.delivered = drain_outbox(cfg, channels, now)
    return report


# -- stages ------------------------------------------------------------------------------------------

def collect(cfg: Config, merchant_id: str) -> tuple[list[Break], dict[str, list[AlertCard]]]:
    """Open breaks, plus every break with a card still live; and the live cards by key."""
    with Session(get_engine(cfg.database.url)) as s:
        cards = list(s.execute(select(AlertCard).where(AlertCard.merchant_id == merchant_id)).scalars())
        shown = {c.break_id for c in cards if c.break_id is not None and c.state == "live"}
        q = select(Break).where(Break.merchant_id == merchant_id,
                                or_(Break.status == "open", Break.id.in_(shown) if shown else False))
        breaks = list(s.execute(q.order_by(Break.id)).scalars())
        s.expunge_all()
    live: dict[str, list[AlertCard]] = defaultdict(list)
    for c in cards:
        live[c.card_key].append(c)
    return breaks, live


def inhibit(breaks: list[Break], report: AlertReport) -> set[int]:
    """Per-order findings muted by a late/rejected statement: held back, counted on the
    late break's card. -> ids of the held breaks."""
    held = {b.id for b in breaks if b.status == "open" and b.severity == "muted"}
    report.muted = len(held)
    return held


def muted_by(late: Break, breaks: list[Break]) -> int:
    """How many findings a late break holds back: its source's of its day (our books late:
    every source's of the day)."""
    internal = late.key.split(":")[3:4] == ["internal"]  # key: source:late:statement:side:day
    return sum(1 for b in breaks if b.status == "open" and b.severity == "muted" and b.business_day ==
               late.business_day and (internal or b.source == late.source))


def silence(cfg: Config, merchant_id: str, breaks: list[Break], now: datetime, report: AlertReport) -> set[int]:
    silences = active_silences(cfg.database.url, [merchant_id], now)
    held = {b.id for b in breaks if b.status == "open" and silences
            and matching_silence(silences, merchant_id, b.source, b.type, b.business_day) is not None}
    report.silenced = len(held)
    return held


def own_card(cfg: Config, b: Break) -> bool:
    return (b.type in OWN_TYPES or b.severity == "urgent"
            or abs(b.difference) >= to_minor(cfg.alert_threshold(), b.currency))


def group(cfg: Config, merchant_id: str, breaks: list[Break], held: set[int], live: dict[str, list[AlertCard]],
          report: AlertReport, now: datetime) -> list[Plan]:
    plans: list[Plan] = []
    small: dict[DigestKey, list[Break]] = defaultdict(list)
    for b in breaks:
        key = f"break:{b.id}"
        is_open = b.status == "open"
        snoozed = _utc(b.snoozed_until) is not None and _utc(b.snoozed_until) > now
        if not is_open or key in live or own_card(cfg, b):
            plans.append(Plan(key, _severity(b), [b], new_allowed=is_open and b.id not in held and not snoozed,
                              final=not is_open, muted=muted_by(b, breaks) if b.type == "late" else 0,
                              size=abs(b.difference)))
        elif b.id not in held and not snoozed:
            small[DigestKey(merchant_id, b.source, b.business_day)].append(b)
    for dk, bs in list(small.items()):  # too few for a digest: cards of their own
        if len(bs) < cfg.alerts.digest_from:
            del small[dk]
            plans += [Plan(f"break:{b.id}", _severity(b), [b], size=abs(b.difference)) for b in bs]
    # digests: this pass's, and the live ones whose breaks are all gone (their final state)
    keys = set(small) | {_digest_key(k) for k in live if k.startswith("digest:")}
    for dk in sorted(k for k in keys if k is not None):
        members = small.get(dk, [])
        plans.append(Plan(dk.card_key, max((_severity(b) for b in members), key=_rank, default="normal"), members,
                          digest=dk, new_allowed=bool(members), final=not members))
    report.digests = sum(1 for p in plans if p.digest is not None and p.breaks)
    return plans


def _digest_key(card_key: str) -> DigestKey | None:
    try:
        _, merchant, source, day = card_key.split(":")
        return DigestKey(merchant, source, date.fromisoformat(day))
    except ValueError:
        return None


def _severity(b: Break) -> str:
    return b.severity if b.severity in ("note", "normal", "urgent") else "normal"


def _rank(severity: str) -> int:
    return ("note", "normal", "urgent").index(severity)


@dataclass
class Routed:
    plan: Plan
    route: ChatRoute
    target: str  # stored target
    lang: str
    merchant_id: str
    edits: bool = True  # the platform can edit a card without a click on it (WeCom cannot)
    extra: list[Break] = field(default_factory=list)  # own cards deferred into this digest


def merchant_routes(cfg: Config, merchant_id: str) -> list[ChatRoute]:
    return [r for r in cfg.chat.routes if r.merchant in ("*", merchant_id)]


def route(cfg: Config, channels: dict[str, Channel], merchant_id: str, plans: list[Plan],
          live: dict[str, list[AlertCard]], report: AlertReport) -> list[Routed]:
    merchant = cfg.merchant(merchant_id)
    out: list[Routed] = []
    for r, target, lang in usable_routes(cfg, channels, merchant_routes(cfg, merchant_id), merchant.language):
        edits = getattr(channels[r.channel], "edits_without_event", True)
        here = {c.card_key for cards in live.values() for c in cards
                if c.channel == r.channel and c.target == target}
        mine = [p for p in plans if p.card_key in here or (p.new_allowed and p.severity in r.severity)]
        new_own = sorted((p for p in mine if p.card_key not in here and p.digest is None),
                         key=lambda p: (-_rank(p.severity), -p.size, p.card_key))
        others_new = sum(1 for p in mine if p.card_key not in here and p.digest is not None)
        limit = cfg.chat.max_cards_per_run
        room = getattr(channels[r.channel], "room", lambda _t: None)(r.target)
        if room is not None:  # a chat that counts messages: keep places for the digests
            limit = min(limit, max(room - max(others_new, 1), 0))
        deferred = [p for p in new_own[limit:] if p.breaks[0].type not in OWN_TYPES]
        report.deferred += len(deferred)
        waiting = {p.card_key for p in deferred}  # by key: comparing whole plans was O(plans x deferred)
        routed = {p.card_key: Routed(p, r, target, lang, merchant_id, edits) for p in mine if p.card_key not in waiting}
        for p in deferred:  # wait for the next pass; meanwhile the digest of their source and day names them
            b = p.breaks[0]
            dk = DigestKey(merchant_id, b.source, b.business_day)
            if dk.card_key not in routed:
                routed[dk.card_key] = Routed(Plan(dk.card_key, p.severity, [], digest=dk, new_allowed=True), r,
                                             target, lang, merchant_id, edits)
            routed[dk.card_key].extra.append(b)
        out += routed.values()
    return out


def dedupe(cfg: Config, routed: list[Routed]) -> list[Message]:
    """Render each card for its route and keep only what changes something there."""
    out: list[Message] = []
    workflow = Workflow(cfg)
    with Session(get_engine(cfg.database.url)) as s:
        for x in routed:
            p = x.plan
            existing = next((c for c in _cards(s, p.card_key) if c.channel == x.route.channel
                             and c.target == x.target), None)
            members = p.breaks + x.extra
            if p.digest is not None:
                card = digest_card(cfg, s, p.digest, members, x.lang, cfg.alerts.digest_top)
                final = not members
            else:
                b = s.get(Break, p.breaks[0].id)
                card = render_break(workflow, s, b, x.lang, p.muted)
                final = b.status != "open"
            break_id = p.breaks[0].id if p.digest is None else None
            m = Message("send" if existing is None else "update", card, p.card_key, x.route.channel, x.target,
                        x.merchant_id, x.lang, break_id, final)
            if existing is None:
                if p.new_allowed and members:
                    out.append(m)
            elif existing.shown_hash != card_hash(m.payload) and x.edits and not (existing.state == "closed"
                                                                                    and final):
                out.append(m)
    return out


def _cards(s: Session, card_key: str) -> list[AlertCard]:
    return list(s.execute(select(AlertCard).where(AlertCard.card_key == card_key)).scalars())


def render_break(workflow: Workflow, s: Session, b: Break, lang: str, muted: int = 0) -> Card:
    """A break's card as the workflow draws it, plus what the pipeline knows: how many
    findings a late statement holds back, and how far it has escalated."""
    card = workflow._card(s, b, lang)
    w = ALERT_WORDS[lang]
    lines = [card.text]
    if b.type == "late" and muted:
        lines.append(w["late_muted"].format(n=muted))
    esc = s.execute(select(Escalation).where(Escalation.break_id == b.id, Escalation.state == "sent")
                    .order_by(Escalation.level.desc())).scalars().first()
    if esc is not None and b.status == "open":
        lines.insert(0, "⚠ " + w["escalated"].format(level=esc.level, minutes=_minutes_of(workflow.cfg, esc.level)))
    from dataclasses import replace

    return replace(card, text="\n".join(x for x in lines if x))


def _minutes_of(cfg: Config, level: int) -> int:
    minutes = cfg.alerts.minutes()
    return minutes[level - 1] if level - 1 < len(minutes) else 0


def outbox(cfg: Config, messages: list[Message], now: datetime, report: AlertReport) -> None:
    url = cfg.database.url
    for m in messages:
        if enqueue(url, m, now):
            if m.op == "send":
                report.sends += 1
            else:
                report.updates += 1


def stop_escalations(cfg: Config, breaks: list[Break], now: datetime) -> None:
    """A break that is no longer open (cleared by a run, or acted on) escalates no further."""
    for b in breaks:
        if b.status != "open":
            cancel_escalations(cfg.database.url, b.id, b.status, now)


def schedule_escalations(cfg: Config, messages: list[Message], now: datetime, report: AlertReport) -> None:
    """An own card sent for an open break at or above the threshold: its escalation rows."""
    minutes = cfg.alerts.minutes()
    if not minutes:
        return
    first_sends = {m.break_id for m in messages if m.op == "send" and m.break_id is not None and not m.final}
    with Session(get_engine(cfg.database.url)) as s:
        for bid in sorted(first_sends):
            b = s.get(Break, bid)
            if b is None or b.type in OWN_TYPES or abs(b.difference) < to_minor(cfg.alert_threshold(), b.currency):
                continue
            if s.execute(select(Escalation.id).where(Escalation.break_id == bid).limit(1)).first():
                continue
            for level, after in enumerate(minutes, start=1):
                s.add(Escalation(break_id=bid, level=level, due_at=now + timedelta(minutes=after)))
            try:
                s.commit()
                report.escalations += len(minutes)
            except IntegrityError:  # a concurrent pass scheduled them
                s.rollback()


def cancel_escalations(url: str, break_id: int, reason: str, now: datetime, s: Session | None = None) -> int:
    stmt = (update(Escalation).where(Escalation.break_id == break_id, Escalation.state == "pending")
            .values(state="cancelled", done_at=now, reason=reason).execution_options(synchronize_session=False))
    if s is not None:  # inside the caller's transaction (an action)
        return s.execute(stmt).rowcount
    with Session(get_engine(url)) as own:
        n = own.execute(stmt).rowcount
        own.commit()
        return n


# -- escalation -------------------------------------------------------------------------------

def escalate_due(cfg: Config, channels: dict[str, Channel], now: datetime | None = None) -> int:
    """Send every escalation that is due (a break nobody acted on); -> how many levels went
    out. Each row is claimed with a conditional update, so two processes send it once."""
    now = _now(now)
    url = cfg.database.url
    with Session(get_engine(url)) as s:
        due = list(s.execute(select(Escalation.id).where(Escalation.state == "pending", Escalation.due_at <= now)
                             .order_by(Escalation.due_at, Escalation.id)).scalars())
    sent = 0
    merchants: set[str] = set()
    for eid in due:
        with Session(get_engine(url)) as s:
            esc = s.get(Escalation, eid)
            b = s.get(Break, esc.break_id)
            snoozed = _utc(b.snoozed_until) is not None and _utc(b.snoozed_until) > now
            silenced = matching_silence(active_silences(url, [b.merchant_id], now), b.merchant_id, b.source, b.type,
                                        b.business_day) is not None
            why = "closed" if b.status != "open" else "snoozed" if snoozed else "silenced" if silenced else None
            values = dict(state="cancelled", reason=why) if why else dict(state="sent")
            won = s.execute(update(Escalation).where(Escalation.id == eid, Escalation.state == "pending")
                            .values(done_at=now, **values).execution_options(synchronize_session=False)).rowcount
            s.commit()
            if won != 1 or why:
                continue
            level = cfg.alerts.escalation[esc.level - 1] if esc.level <= len(cfg.alerts.escalation) else None
            if level is None:
                continue
            merchant_id, bid = b.merchant_id, b.id
        _send_to_level(cfg, channels, bid, merchant_id, level.routes, now)
        merchants.add(merchant_id)
        sent += 1
    for m in sorted(merchants):  # the cards already out now say "escalated" too
        alert_merchant(cfg, channels, m, now)
    if not merchants:
        drain_outbox(cfg, channels, now)
    return sent


def _send_to_level(cfg: Config, channels: dict[str, Channel], break_id: int, merchant_id: str,
                   routes: list[ChatRoute], now: datetime) -> None:
    merchant = cfg.merchant(merchant_id)
    workflow = Workflow(cfg)
    with Session(get_engine(cfg.database.url)) as s:
        b = s.get(Break, break_id)
        for r, target, lang in usable_routes(cfg, channels, routes, merchant.language):
            card = render_break(workflow, s, b, lang)
            m = Message("send", card, f"break:{b.id}", r.channel, target, merchant_id, lang, b.id)
            enqueue(cfg.database.url, m, now)  # False: that chat has the card already (it gets the edit)


def pending_escalations(url: str) -> list[Escalation]:
    """For `recon jobs`: what will escalate, and when."""
    with Session(get_engine(url)) as s:
        rows = list(s.execute(select(Escalation).where(Escalation.state == "pending")
                              .order_by(Escalation.due_at, Escalation.id)).scalars())
        s.expunge_all()
        return rows


# -- the daily digest --------------------------------------------------------------------------

def send_digest(cfg: Config, channels: dict[str, Channel], merchant_id: str, day: date,
                now: datetime | None = None) -> int:
    """The scheduled daily digest of a merchant and business day (per source: open breaks,
    their total, items in transit), to the merchant's routes, through the outbox (once per
    day and route). -> messages delivered by the drain."""
    from core.summary import day_summary

    now = _now(now)
    merchant = cfg.merchant(merchant_id)
    summary = day_summary(cfg.database.url, merchant_id, day)
    for r, target, lang in usable_routes(cfg, channels, merchant_routes(cfg, merchant_id), merchant.language):
        w = ALERT_WORDS[lang]
        fields = [(x.source, w["daily_line"].format(n=sum(x.breaks.values()),
                                                    total=display(x.open_difference, merchant.currency),
                                                    t=x.in_transit)) for x in summary.sources]
        card = text_card(w["daily"].format(merchant=merchant_id, day=day), [] if fields else [w["nothing"]],
                         fields, key=f"daily:{merchant_id}:{day}")
        enqueue_notice(cfg.database.url, f"daily:{merchant_id}:{day}:{r.channel}:{target}", card, r.channel, target,
                       now)
    return drain_outbox(cfg, channels, now)

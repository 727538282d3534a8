"""The outbox: every alert message (a new card or an edit) is a row, committed before it is
sent, then claimed, sent and recorded once. Retry lives here, not in the channels.

A row's life: `pending` -> claimed (`sending`, by one drainer: a conditional UPDATE ...
WHERE state = 'pending'; on PostgreSQL the candidates are read FOR UPDATE SKIP LOCKED so
two drainers do not even contend) -> `sent` (the platform's message id recorded in the same
transaction that marks the row sent and the card's `message_id`) | back to `pending` at
`next_attempt_at` (a 429's Retry-After, else backoff for 5xx and timeouts) | `failed` (a
permanent error, or too many attempts) | `superseded` (a newer edit of the same message
replaced it before it went out).

What is and is not guaranteed (the crash windows):
- Killed after the row is committed and before the send (or before the claim): the row is
  still `pending` (or `sending` with no call made); the next drain sends it once.
- Killed after the platform accepted the message and before our commit: the row stays
  `sending`. After `alerts.claim_timeout_seconds` another drain takes it over *in doubt*:
  - Slack: every message carries its idempotency key as message metadata; the takeover
    first looks for it in the channel's history (conversations.history with
    include_all_metadata) and records the message it finds instead of posting again:
    exactly once.
  - WeCom app messages: sent with enable_duplicate_check, and the request is the same
    bytes again (the card is stored in the row, the template card's task_id is derived
    from the key), so WeCom drops the repeat within duplicate_check_interval: exactly once
    while the takeover happens within that interval (at most 4 hours).
  - Telegram, a WeCom group robot and the console offer neither an idempotency key nor a
    way for a bot to read back what it sent: the takeover sends again, so in that window
    (between the platform's answer and our commit, milliseconds) delivery is at least once
    and a second copy is possible. It is logged as such.
  An edit (update) is idempotent by nature: repeating it shows the same card.
- `RECON_TEST_CRASH_AT` (read only in `crash_point`) kills the process with SIGKILL at a
  named point, for the crash test: `after_enqueue`, `before_send`, `after_send`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot import metrics
from bot.cards import ALERT_WORDS, Card, card_from_json, card_to_json, text_card
from bot.transport import Channel, MessageRef, TransportError
from core.config import ChatRoute, Config
from models.db import get_engine, is_sqlite
from models.tables import AlertCard, AlertRoute, Outbox

log = logging.getLogger("reconbot.outbox")
CRASH_ENV = "RECON_TEST_CRASH_AT"
MAX_BACKOFF = 3600.0


def crash_point(name: str) -> None:
    """The crash test's kill switch (see the module doc): SIGKILL here when asked to."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing this process", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc))


def stored_target(channels: dict[str, Channel], route: ChatRoute) -> str:
    """What the database keeps of a route's target (a robot's URL holds its key: a hash)."""
    ch = channels.get(route.channel)
    return getattr(ch, "stored_target", lambda t: t)(route.target) if ch is not None else route.target


def all_routes(cfg: Config) -> list[ChatRoute]:
    return [*cfg.chat.routes, *(r for lv in cfg.alerts.escalation for r in lv.routes), *cfg.alerts.admin_routes]


def real_target(cfg: Config, channels: dict[str, Channel], channel: str, stored: str) -> str | None:
    for r in all_routes(cfg):
        if r.channel == channel and stored_target(channels, r) == stored:
            return r.target
    return None


def disabled_routes(url: str) -> set[tuple[str, str]]:
    with Session(get_engine(url)) as s:
        return {(r.channel, r.target) for r in s.execute(select(AlertRoute)).scalars()}


def usable_routes(cfg: Config, channels: dict[str, Channel], routes: Iterable[ChatRoute],
                  language: str | None = None) -> Iterator[tuple[ChatRoute, str, str]]:
    """The routes a message can go to now (their channel is built, the outbox has not disabled
    them), each with its stored target and the language to write in: `language` (the
    merchant's) when given, else the platform's."""
    off = disabled_routes(cfg.database.url)
    for r in routes:
        if r.channel not in channels:
            continue
        stored = stored_target(channels, r)
        if (r.channel, stored) not in off:
            yield r, stored, language or getattr(channels[r.channel], "language", "en")


# -- writing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """One thing to send: a card to a route, new (`send`) or as an edit (`update`)."""

    op: str  # send | update
    card: Card
    card_key: str
    channel: str
    target: str  # stored target
    merchant_id: str
    lang: str
    break_id: int | None = None
    final: bool = False  # the card's last state (the break is closed): no further edits expected

    @property
    def payload(self) -> str:
        return card_to_json(self.card)


def card_hash(payload: str) -> str:
    import hashlib

    return hashlib.sha256(payload.encode()).hexdigest()


def enqueue(url: str, m: Message, now: datetime) -> bool:
    """Write one message (outbox row + the card's record) in one transaction; -> whether a
    row was written (False: a concurrent pass queued the same thing first)."""
    payload = m.payload
    h = card_hash(payload)
    with Session(get_engine(url)) as s:
        try:
            if m.op == "send":
                card = AlertCard(card_key=m.card_key, channel=m.channel, target=m.target, merchant_id=m.merchant_id,
                                 break_id=m.break_id, lang=m.lang, shown_hash=h,
                                 state="closed" if m.final else "live", created_at=now, updated_at=now)
                s.add(card)
                s.flush()  # a second pass queueing the same card stops here (unique card, route)
                # unique per send (the card's uniqueness is the alert_card row's); kept in the row,
                # so every retry of this send carries the same key to the platform
                s.add(Outbox(idem_key=f"send:{m.card_key}:{uuid.uuid4().hex}", op="send", channel=m.channel,
                             target=m.target, card_key=m.card_key, break_id=m.break_id, payload=payload,
                             next_attempt_at=now, created_at=now))
            else:
                card = s.execute(select(AlertCard).where(
                    AlertCard.card_key == m.card_key, AlertCard.channel == m.channel, AlertCard.target == m.target)
                    .with_for_update()).scalars().one()
                if card.shown_hash == h:
                    return False
                card.shown_hash, card.updated_at = h, now
                card.state = "closed" if m.final else "live"
                same = and_(Outbox.card_key == m.card_key, Outbox.channel == m.channel, Outbox.target == m.target,
                            Outbox.state == "pending", Outbox.in_doubt.is_(False))
                # the card has not gone out yet: send the newest state instead of an edit after it
                if s.execute(update(Outbox).where(same, Outbox.op == "send").values(payload=payload)
                             .execution_options(synchronize_session=False)).rowcount == 0:
                    s.execute(update(Outbox).where(same, Outbox.op == "update").values(state="superseded")
                              .execution_options(synchronize_session=False))
                    s.add(Outbox(idem_key=f"update:{m.card_key}:{h[:16]}:{uuid.uuid4().hex}", op="update", channel=m.channel, target=m.target,
                                 card_key=m.card_key, break_id=m.break_id, payload=payload, next_attempt_at=now,
                                 created_at=now))
            s.commit()
            return True
        except IntegrityError:
            s.rollback()
            return False


def enqueue_notice(url: str, key: str, card: Card, channel: str, target: str, now: datetime) -> bool:
    """A one-off message (an admin notice): no card to keep current, queued once per key."""
    with Session(get_engine(url)) as s:
        s.add(Outbox(idem_key=key, op="send", channel=channel, target=target, card_key=card.key,
                     payload=card_to_json(card), next_attempt_at=now, created_at=now))
        try:
            s.commit()
            return True
        except IntegrityError:
            s.rollback()
            return False


# -- draining ------------------------------------------------------------------------------

def drain_outbox(cfg: Config, channels: dict[str, Channel], now: datetime | None = None) -> int:
    """Send every row that is due (and take over rows a vanished process left `sending`);
    -> how many messages went out. A row that fails again is rescheduled, never waited for."""
    owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    done = 0
    tried: set[int] = set()
    while (row := _claim(cfg, _now(now), owner, tried)) is not None:
        tried.add(row.id)
        done += _send(cfg, channels, row, _now(now))
    return done


def _claim(cfg: Config, now: datetime, owner: str, tried: set[int]) -> Outbox | None:
    url = cfg.database.url
    stale = now - timedelta(seconds=cfg.alerts.claim_timeout_seconds)
    due = or_(and_(Outbox.state == "pending", Outbox.next_attempt_at <= now),
              and_(Outbox.state == "sending", Outbox.claimed_at <= stale))
    while True:
        with Session(get_engine(url)) as s:
            q = select(Outbox.id, Outbox.state, Outbox.claimed_by).where(due)
            if tried:
                q = q.where(Outbox.id.not_in(tried))
            q = q.order_by(Outbox.id).limit(1)
            if not is_sqlite(url):
                q = q.with_for_update(skip_locked=True)
            cand = s.execute(q).first()
            if cand is None:
                return None
            taken_over = cand.state == "sending"
            same = [Outbox.id == cand.id, Outbox.state == cand.state]
            if taken_over:
                same.append(Outbox.claimed_by == cand.claimed_by)
            values = dict(state="sending", claimed_by=owner, claimed_at=now, attempts=Outbox.attempts + 1)
            if taken_over:
                values["in_doubt"] = True
            won = s.execute(update(Outbox).where(*same).values(**values)
                            .execution_options(synchronize_session=False)).rowcount
            s.commit()
            if won != 1:  # another drainer claimed it between our read and our update
                tried.add(cand.id)
                continue
            row = s.get(Outbox, cand.id)
            s.expunge(row)
            if taken_over:
                log.warning("outbox #%s (%s %s) was left mid-send by %s; taking it over", row.id, row.op,
                            row.card_key, cand.claimed_by)
            return row


def _send(cfg: Config, channels: dict[str, Channel], row: Outbox, now: datetime) -> int:
    url = cfg.database.url
    ch = channels.get(row.channel)
    target = real_target(cfg, channels, row.channel, row.target)
    if ch is None or target is None:
        _finish(url, row, "failed", error=f"no configured {row.channel} route for this target any more")
        return 0
    if (row.channel, row.target) in disabled_routes(url):
        _finish(url, row, "failed", error="route disabled")
        return 0
    card = card_from_json(row.payload)
    try:
        if row.op == "send":
            ref = None
            find = getattr(ch, "find_sent", None)
            if row.in_doubt and find is not None:
                ref = find(target, row.idem_key)
                if ref is not None:
                    log.warning("outbox #%s: %s already has it (message %s); not sending again", row.id,
                                row.channel, ref.message_id)
            if ref is None:
                if row.in_doubt:
                    log.warning("outbox #%s: %s cannot tell whether it took this message before the crash; "
                                "sending again (at least once)", row.id, row.channel)
                crash_point("before_send")
                ref = ch.send(target, card, idempotency_key=row.idem_key)
                crash_point("after_send")
            message_id = ref.message_id
        else:
            message_id = _message_of(url, row)
            if message_id is None:  # its card was never delivered: nothing to edit
                _finish(url, row, "failed", error="the card this edit is for was never sent")
                return 0
            ch.update(MessageRef(row.channel, target, message_id), card)
    except TransportError as exc:
        _failed(cfg, channels, row, exc, now)
        return 0
    metrics.OUTBOUND.labels(row.channel, "ok").inc()
    _finish(url, row, "sent", message_id=message_id, now=now)
    return 1


def _message_of(url: str, row: Outbox) -> str | None:
    with Session(get_engine(url)) as s:
        return s.execute(select(AlertCard.message_id).where(
            AlertCard.card_key == row.card_key, AlertCard.channel == row.channel,
            AlertCard.target == row.target)).scalar()


def _finish(url: str, row: Outbox, state: str, message_id: str | None = None, error: str | None = None,
            now: datetime | None = None) -> None:
    """Record the outcome; for a send, the message id lands on the card in the same
    transaction (so a card is never `sent` without the id needed to edit it)."""
    with Session(get_engine(url)) as s:
        values: dict = {"state": state}
        if state == "sent":
            values.update(message_id=message_id, sent_at=now, last_error=None)
        if error is not None:
            values["last_error"] = error
        s.execute(update(Outbox).where(Outbox.id == row.id).values(**values)
                  .execution_options(synchronize_session=False))
        if state == "sent" and row.op == "send":
            s.execute(update(AlertCard).where(AlertCard.card_key == row.card_key, AlertCard.channel == row.channel,
                                              AlertCard.target == row.target).values(message_id=message_id)
                      .execution_options(synchronize_session=False))
        s.commit()
    if state == "failed":
        log.error("outbox #%s (%s %s to %s) failed: %s", row.id, row.op, row.card_key, row.channel, error)


def _failed(cfg: Config, channels: dict[str, Channel], row: Outbox, exc: TransportError, now: datetime) -> None:
    url = cfg.database.url
    if exc.permanent:
        metrics.OUTBOUND.labels(row.channel, "failed").inc()
        _finish(url, row, "failed", error=exc.message)
        if row.op == "send":  # the chat itself refuses us (bot removed, chat not found): stop using it
            disable_route(cfg, channels, row.channel, row.target, exc.message, now)
        return
    metrics.OUTBOUND.labels(row.channel, "retried").inc()
    if exc.retry_after is not None:  # the platform said when: that is not a failed attempt
        wait, attempts = exc.retry_after, row.attempts - 1
    elif row.attempts >= cfg.alerts.max_attempts:
        _finish(url, row, "failed", error=f"{exc.message} (gave up after {row.attempts} attempts)")
        return
    else:
        wait, attempts = min(cfg.alerts.retry_seconds * 2 ** (row.attempts - 1), MAX_BACKOFF), row.attempts
    with Session(get_engine(url)) as s:
        s.execute(update(Outbox).where(Outbox.id == row.id).values(
            state="pending", attempts=attempts, next_attempt_at=now + timedelta(seconds=wait), last_error=exc.message)
            .execution_options(synchronize_session=False))
        s.commit()
    log.info("outbox #%s (%s to %s): %s; next try in %.0fs", row.id, row.op, row.channel, exc.message, wait)


def disable_route(cfg: Config, channels: dict[str, Channel], channel: str, target: str, reason: str,
                  now: datetime) -> bool:
    """Stop sending to a route and tell the admins, once; -> whether this call disabled it."""
    url = cfg.database.url
    with Session(get_engine(url)) as s:
        s.add(AlertRoute(channel=channel, target=target, disabled_at=now, reason=reason))
        try:
            s.commit()
        except IntegrityError:  # disabled already (and the admins told then)
            s.rollback()
            return False
    log.error("alert route %s %s disabled after a permanent error: %s", channel, target, reason)
    notify_admins(cfg, channels, f"route_disabled:{channel}:{target}:{now.isoformat()}",
                  lambda w: text_card(w["route_disabled"], [w["route_disabled_text"].format(
                      channel=channel, target=target, error=reason)], key=f"route_disabled:{channel}:{target}"), now)
    return True


def notify_admins(cfg: Config, channels: dict[str, Channel], key: str, card_for: Callable[[dict], Card],
                  now: datetime) -> int:
    """Queue a one-off notice (a route disabled, a scheduled job that failed for good) to each
    `alerts.admin_routes` route, once per `key` and route, in the route's platform language
    (`card_for(ALERT_WORDS[lang])`); -> how many were queued. The caller drains (or the next
    drain sends them)."""
    queued = 0
    for r, stored, lang in usable_routes(cfg, channels, cfg.alerts.admin_routes):
        queued += enqueue_notice(cfg.database.url, f"notice:{key}:{r.channel}:{stored}", card_for(ALERT_WORDS[lang]),
                                 r.channel, stored, now)
    return queued


def enable_route(url: str, channel: str, target: str) -> bool:
    """Use a disabled route again; the cards it never got are sent by the next pass."""
    with Session(get_engine(url)) as s:
        row = s.get(AlertRoute, (channel, target))
        if row is None:
            return False
        s.delete(row)
        # cards whose first message never arrived there: forget them, so the next pass sends them anew
        never = select(AlertCard.id).where(AlertCard.channel == channel, AlertCard.target == target,
                                           AlertCard.message_id.is_(None))
        ids = list(s.execute(never).scalars())
        if ids:
            s.execute(update(Outbox).where(Outbox.channel == channel, Outbox.target == target,
                                           Outbox.state.in_(("pending", "failed"))).values(state="superseded")
                      .execution_options(synchronize_session=False))
            s.execute(delete(AlertCard).where(AlertCard.id.in_(ids)).execution_options(synchronize_session=False))
        s.commit()
        return True

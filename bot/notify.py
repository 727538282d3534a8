"""Post the open breaks of a merchant to its chat routes, once each, and keep the cards current.

A minimal delivery path (the alert pipeline of the scheduler issue replaces it with dedupe,
grouping, an outbox and escalation): per route, each open break not yet posted there is
sent as a card and the message id is stored (`chat_message`), so it is never posted twice
and can be edited in place later. More than `chat.max_cards_per_run` new breaks at once go
out as that many cards plus one digest. A channel that counts messages per chat (Telegram:
20 a minute per group) says how many more its target takes now (`room`); when the breaks do
not all fit, fewer cards go out and the digest takes the rest, so several merchants routed
to one group share its minute instead of queueing behind it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.actions import Workflow
from bot.cards import text_card
from bot.delivery import deliver
from bot.transport import Channel, MessageRef, TransportError
from core.config import Config
from core.money import display
from models.db import get_engine
from models.tables import Break, ChatMessage

log = logging.getLogger("reconbot.notify")


def routes_for(cfg: Config, merchant_id: str):
    return [r for r in cfg.chat.routes if r.merchant in ("*", merchant_id)]


def _unposted(url: str, merchant_id: str, kind: str, target: str) -> list[Break]:
    now = datetime.now(timezone.utc)
    posted = select(ChatMessage.break_id).where(ChatMessage.channel == kind, ChatMessage.target == target)
    q = select(Break).where(Break.merchant_id == merchant_id, Break.status == "open",
                            or_(Break.snoozed_until.is_(None), Break.snoozed_until <= now))
    if kind != "console":  # the console has no message to edit later: it shows every open break
        q = q.where(Break.id.not_in(posted))
    with Session(get_engine(url)) as s:
        return list(s.execute(q.order_by(func.abs(Break.difference).desc(), Break.id)).scalars())


def notify(cfg: Config, channels: dict[str, Channel], merchant_id: str,
           max_cards: int | None = None) -> list[MessageRef]:
    url = cfg.database.url
    max_cards = max_cards or cfg.chat.max_cards_per_run
    workflow = Workflow(cfg)
    sent: list[MessageRef] = []
    for route in routes_for(cfg, merchant_id):
        ch = channels[route.channel]
        target_id = getattr(ch, "stored_target", lambda t: t)(route.target)  # robots: a hash, not the key
        breaks = _unposted(url, merchant_id, ch.kind, target_id)
        cards = max_cards
        room = getattr(ch, "room", lambda _target: None)(route.target)
        if room is not None and len(breaks) > room:  # keep one of the places left for the digest
            cards = min(max_cards, max(room - 1, 0))
        for b in breaks[:cards]:
            card = workflow.card(b.id, ch.language)
            try:
                ref = deliver(ch.kind, f"card #{b.id}", lambda: ch.send(route.target, card))
            except TransportError as exc:
                log.error("card #%s not delivered to %s %s: %s", b.id, ch.kind, route.target, exc.message)
                continue
            sent.append(ref)
            if ch.kind != "console":
                remember(url, b.id, ref)
        rest = breaks[cards:]  # not posted: a later run gives them cards of their own
        if rest:
            lines = [f"#{b.id} {b.source} {b.type} {b.order_id or b.txn_id or ''} {display(b.difference, b.currency)}"
                     for b in rest[:20]] + (["…"] if len(rest) > 20 else []) + ["/recon pending"]
            digest = text_card(f"{merchant_id}: {len(rest)} more open breaks", lines, key=f"digest:{merchant_id}")
            try:
                sent.append(deliver(ch.kind, "digest", lambda: ch.send(route.target, digest)))
            except TransportError as exc:
                log.error("digest not delivered to %s %s: %s", ch.kind, route.target, exc.message)
    return sent


def remember(url: str, break_id: int, ref: MessageRef) -> None:
    with Session(get_engine(url)) as s:
        s.add(ChatMessage(break_id=break_id, channel=ref.channel, target=ref.target, message_id=ref.message_id))
        try:
            s.commit()
        except IntegrityError:  # posted there already (a concurrent notify): keep the first
            s.rollback()


def refresh(cfg: Config, channels: dict[str, Channel], break_id: int, skip: MessageRef | None = None) -> int:
    """Edit every posted copy of a break's card (after an action elsewhere); -> how many."""
    with Session(get_engine(cfg.database.url)) as s:
        posted = list(s.execute(select(ChatMessage).where(ChatMessage.break_id == break_id)).scalars())
    workflow = Workflow(cfg)
    done = 0
    for m in posted:
        ch = channels.get(m.channel)
        ref = MessageRef(m.channel, m.target, m.message_id)
        if ch is None or ref == skip or not getattr(ch, "edits_without_event", True):
            continue
        card = workflow.card(break_id, ch.language)
        try:
            deliver(ch.kind, f"update of #{break_id}", lambda: ch.update(ref, card))
            done += 1
        except TransportError as exc:
            log.warning("card #%s on %s %s not updated: %s", break_id, m.channel, m.target, exc.message)
    return done

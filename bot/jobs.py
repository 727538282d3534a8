"""Every call from the scheduler and the payment webhooks into alerting, in one place.

The alert pipeline (bot/alerts.py: dedupe, inhibit, silence, group, route, outbox,
escalate) is built on another branch. Until it is merged, these functions do the minimal
thing with what exists here (bot.notify, bot.delivery); each says what it is rewired to at
merge. Nothing else in the scheduler or the webhooks calls alerting directly, so the merge
changes this file only.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from bot.cards import text_card
from bot.delivery import deliver
from bot.transport import Channel, TransportError
from core.config import Config

log = logging.getLogger("reconbot.jobs")


def alert(cfg: Config, channels: dict[str, Channel], merchant_id: str, now: datetime | None = None) -> int:
    """After a run or a real-time check: bring the merchant's open breaks to its chats.

    Rewired to bot.alerts at merge: `bot.alerts.alert_merchant(cfg, channels, merchant_id, now)`.
    Today: bot.notify posts each open break not yet posted to each route, once.
    """
    from bot.notify import notify

    return len(notify(cfg, channels, merchant_id))


def drain(cfg: Config, channels: dict[str, Channel], now: datetime | None = None) -> int:
    """Send what waits in the outbox; -> how many were sent.

    Rewired to bot.alerts at merge: `bot.alerts.drain_outbox(cfg, channels, now)`.
    Today there is no outbox (bot.notify sends at once), so nothing waits: 0.
    """
    return 0


def escalate(cfg: Config, channels: dict[str, Channel], now: datetime | None = None) -> int:
    """Send the escalations that are due; -> how many.

    Rewired to bot.alerts at merge: `bot.alerts.escalate_due(cfg, channels, now)`, which
    keeps escalations as rows with due times (so a restart keeps them).
    Today no escalation is stored anywhere, so none is due: 0.
    """
    return 0


def pending_escalations(cfg: Config, now: datetime | None = None) -> list[dict]:
    """Escalations not sent yet, for `recon jobs`: [{"break": id, "level": n, "due": datetime}].

    Rewired at merge to read bot.alerts's escalation rows. Today there are none.
    """
    return []


def digest(cfg: Config, channels: dict[str, Channel], merchant_id: str, day: date,
           now: datetime | None = None) -> int:
    """The day's digest to the merchant's chats; -> how many messages went out.

    Rewired to bot.alerts at merge: `bot.alerts.send_digest(cfg, channels, merchant_id, day, now)`.
    Today: the day's summary (what `/recon DAY` answers) to each of the merchant's routes.
    """
    from bot.commands import Commands

    commands = Commands(cfg)
    sent = 0
    for route, ch in _routes(cfg, channels, merchant_id):
        card = commands.summary(merchant_id, day, ch.language)
        card = text_card(f"Digest · {card.title}" if ch.language == "en" else f"日报 · {card.title}",
                         card.text.splitlines(), card.fields, key=f"digest:{merchant_id}:{day}")
        sent += _send(ch, route.target, card, f"digest of {merchant_id} {day}")
    return sent


def notice(cfg: Config, channels: dict[str, Channel], merchant_id: str | None, title: str, lines: list[str]) -> int:
    """Tell people about a job that could not do its work (gave up, failed for good), when no
    break can say it; also logged. `merchant_id` None: every route.

    Rewired at merge to bot.alerts's admin route (the one a disabled route is reported to).
    """
    log.error("%s: %s", title, " ".join(lines))
    card = text_card(title, lines, key=f"notice:{merchant_id or '*'}:{title}")
    return sum(_send(ch, route.target, card, title) for route, ch in _routes(cfg, channels, merchant_id))


def _routes(cfg: Config, channels: dict[str, Channel], merchant_id: str | None):
    for route in cfg.chat.routes:
        if merchant_id is None or route.merchant in ("*", merchant_id):
            ch = channels.get(route.channel)
            if ch is not None:
                yield route, ch


def _send(ch: Channel, target: str, card, what: str) -> int:
    try:
        deliver(ch.kind, what, lambda: ch.send(target, card))
        return 1
    except TransportError as exc:
        log.error("%s not delivered to %s %s: %s", what, ch.kind, target, exc.message)
        return 0

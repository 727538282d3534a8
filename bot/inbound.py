"""What every platform's inbound path shares once its signature is verified.

- `fresh` and `ReplayGuard`: a request older than the window is stale; one whose identity
  (Slack signature, Telegram update_id, WeCom msg_signature + nonce) was seen before is a
  replay. Identities are kept in the database, so a replay is caught by any `recon serve`
  process on the same database, and after a restart.
- `Conversation`: the use-cases a channel calls (commands, clicks, background work),
  platform-neutral; the channel renders what they return.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot import metrics
from bot.actions import Outcome, Workflow, parse_click
from bot.cards import Card, text_card
from bot.commands import Commands, Reply
from bot.transport import Refused
from bot.users import identify
from core.config import Config
from models.db import get_engine
from models.tables import InboundSeen

log = logging.getLogger("reconbot.inbound")
KEEP_SEEN = timedelta(days=2)  # Telegram callbacks carry no time: keep their ids well past any retry


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def fresh(timestamp: str | None, max_age: int, now: float | None = None) -> int:
    """The request's Unix time; Refused("stale") outside ±max_age, ("malformed") if absent."""
    if not timestamp or not timestamp.isdigit():
        raise Refused("malformed", "no usable timestamp")
    ts = int(timestamp)
    now = time.time() if now is None else now
    if abs(now - ts) > max_age:
        raise Refused("stale", f"timestamp {ts} is {int(now - ts)}s from now (window {max_age}s)")
    return ts


class ReplayGuard:
    def __init__(self, url: str) -> None:
        self.url = url
        self._count = 0

    def first_time(self, platform: str, identity: str) -> None:
        """Record the identity; Refused("replayed") when it was seen before."""
        key = hashlib.sha256(identity.encode()).hexdigest()
        with Session(get_engine(self.url)) as s:
            s.add(InboundSeen(platform=platform, key=key))
            try:
                s.commit()
            except IntegrityError:
                raise Refused("replayed", f"{platform} request {key[:12]}… was seen before") from None
        self._count += 1
        if self._count % 500 == 0:
            self.purge()

    def purge(self) -> None:
        with Session(get_engine(self.url)) as s:
            s.execute(delete(InboundSeen).where(InboundSeen.seen_at < datetime.now(timezone.utc) - KEEP_SEEN))
            s.commit()


NOT_LINKED = {
    "en": "This account is not linked to a reconbot user: ask an admin for a code, then type /recon link CODE.",
    "zh": "该账号尚未关联 reconbot 用户：请管理员生成关联码，然后发送 /recon link 关联码。",
}
NOT_OURS = {"en": "That button is not one of ours.", "zh": "无法识别该按钮。"}


class Conversation:
    """The bot's side of every chat: one per configuration, shared by all channels."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workflow = Workflow(cfg)
        self.commands = Commands(cfg)
        self.replay = ReplayGuard(cfg.database.url)
        self.max_age = cfg.chat.server.max_age_seconds

    def command(self, platform: str, user_id: str, text: str, chat: str | None = None) -> Reply:
        return self.commands.answer(platform, user_id, text, chat)

    def click(self, platform: str, user_id: str, action: str, value: str, body: bytes, lang: str) -> Outcome:
        actor = identify(self.cfg.database.url, platform, user_id)
        if actor is None:
            outcome = Outcome("refused", NOT_LINKED[lang], None)
        else:
            try:
                click = parse_click(action, value, platform, request_hash(body))
            except ValueError as exc:
                log.warning("%s click by %s refused: %s", platform, user_id, exc)
                outcome = Outcome("refused", NOT_OURS[lang], None)
            else:
                outcome = self.workflow.act(actor, click, lang)
        metrics.ACTIONS.labels(action if action in ("approve", "assign_me", "assign_to", "snooze", "resolve",
                                                    "cancel") else "unknown", outcome.status).inc()
        if outcome.status == "refused":
            log.info("%s click %s by %s refused: %s", platform, action, user_id, outcome.message)
        return outcome

    def later(self, reply: Reply, send: Callable[[Card], None]) -> threading.Thread | None:
        """Run a reply's slow part in the background and send its cards when done."""
        if reply.later is None:
            return None

        def work():
            try:
                cards = reply.later()
            except Exception as exc:  # a failed run is reported in the chat, not swallowed
                log.exception("background command failed")
                cards = [text_card("Failed", [f"{exc.__class__.__name__}: {exc}"])]
            for card in cards:
                try:
                    send(card)
                except Exception:
                    log.exception("could not send a background result")

        t = threading.Thread(target=work, name="recon-later", daemon=True)
        t.start()
        return t

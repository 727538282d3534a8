"""What every platform's inbound path shares once its signature is verified.

- `fresh` and `ReplayGuard`: a request older than the window is stale; one whose identity
  (Slack signature, Telegram update_id, WeCom msg_signature + nonce) was seen before is a
  replay. Identities are kept in the database, so a replay is caught by any `recon serve`
  process on the same database, and after a restart.
- `Conversation`: the use-cases a channel calls (commands, clicks, background work),
  platform-neutral; the channel renders what they return.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot import metrics
from bot.actions import Outcome, Workflow, parse_click
from bot.cards import Card, text_card
from bot.commands import Commands, Reply
from bot.transport import Refused
from bot.users import identify
from core.config import Config
from models.db import get_engine, is_sqlite
from models.tables import InboundSeen

log = logging.getLogger("reconbot.inbound")
KEEP_SEEN = timedelta(days=2)  # Telegram callbacks carry no time: keep their ids well past any retry
# Clicks and commands are worked off the request path, by a few threads: the platform gets
# its answer as soon as the request is verified, and the work does not crowd that answer
# out of the interpreter.
WORKERS = 4
ANSWERS_FIRST = 0.5  # seconds a job may wait for the answers in flight
QUIET = 0.02  # ... and for this long without one (the burst is over)


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
        self.sqlite = is_sqlite(url)
        self._write_lock = threading.Lock() if self.sqlite else contextlib.nullcontext()
        self._count = 0

    def first_time(self, platform: str, identity: str) -> None:
        """Record the identity; Refused("replayed") when it was seen before.

        On the answer path of every inbound request, so kept lean: one INSERT in its own
        transaction. On SQLite that connection commits with synchronous=NORMAL (WAL): no
        fsync per request; a power cut may forget the last ids, which the timestamp window
        still covers for Slack and WeCom.
        """
        key = hashlib.sha256(identity.encode()).hexdigest()
        # SQLite has one writer at a time and makes the others poll with growing sleeps;
        # queueing this process's inserts on a lock instead keeps each one short
        with self._write_lock, get_engine(self.url).connect() as conn:
            if self.sqlite:
                conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
            try:
                conn.execute(insert(InboundSeen.__table__).values(
                    platform=platform, key=key, seen_at=datetime.now(timezone.utc)))
                conn.commit()
            except IntegrityError:
                conn.rollback()
                raise Refused("replayed", f"{platform} request {key[:12]}… was seen before") from None
            finally:
                if self.sqlite:  # back to the default for whoever uses this connection next
                    conn.exec_driver_sql("PRAGMA synchronous=FULL")
        self._count += 1
        if self._count % 500 == 0:
            self.purge()

    def purge(self) -> None:
        with Session(get_engine(self.url)) as s:
            s.execute(delete(InboundSeen).where(InboundSeen.seen_at < datetime.now(timezone.utc) - KEEP_SEEN))
            s.commit()


def received(platform: str, what: str, work: Callable[[], None]) -> bool:
    """Take one delivery that came over a connection we opened (Slack Socket Mode, Telegram
    polling): timed and counted like a request to `recon serve`; a refusal (a replay, a stale
    command) is logged and counted, not raised. -> whether it was accepted."""
    started = time.perf_counter()
    try:
        work()
    except Refused as exc:
        metrics.INBOUND.labels(platform, f"refused_{exc.kind}").inc()
        log.warning("refused %s %s: %s", platform, what, exc)
        return False
    finally:
        metrics.INBOUND_SECONDS.labels(platform).observe(time.perf_counter() - started)
    metrics.INBOUND.labels(platform, "accepted").inc()
    return True


NOT_LINKED = {
    "en": "This account is not linked to a reconbot user: ask an admin for a code, then type /recon link CODE.",
    "zh": "该账号尚未关联 reconbot 用户：请管理员生成关联码，然后发送 /recon link 关联码。",
}
NOT_OURS = {"en": "That button is not one of ours.", "zh": "无法识别该按钮。"}


class Conversation:
    """The bot's side of every chat: one per configuration, shared by all channels."""

    def __init__(self, cfg: Config, run_in_subprocess: bool = False) -> None:
        self.cfg = cfg
        self.workflow = Workflow(cfg)
        self.commands = Commands(cfg, run_in_subprocess)
        self.replay = ReplayGuard(cfg.database.url)
        self.max_age = cfg.chat.server.max_age_seconds
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="recon-work")
        self._answering = 0
        self._last_answer = 0.0
        self._quiet = threading.Condition()
        self._pending = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def answering(self):
        """Around the answer path of an inbound request: work waits while answers are due."""
        with self._quiet:
            self._answering += 1
        try:
            yield
        finally:
            with self._quiet:
                self._answering -= 1
                self._last_answer = time.monotonic()
                if not self._answering:
                    self._quiet.notify_all()

    def _wait_for_quiet(self) -> None:
        """Until no answer has been in flight for QUIET seconds (a burst is over), or
        ANSWERS_FIRST seconds at most."""
        deadline = time.monotonic() + ANSWERS_FIRST
        with self._quiet:
            while (now := time.monotonic()) < deadline:
                idle = now - self._last_answer
                if self._answering == 0 and idle >= QUIET:
                    return
                self._quiet.wait(min(deadline - now, QUIET - idle if self._answering == 0 else deadline - now))

    def submit(self, fn: Callable, *args) -> None:
        """Do `fn(*args)` after the platform has been answered; failures are logged.

        Platforms give an answer seconds at most (Slack 3 s, WeCom 5 s), and the work shares
        one interpreter with the answers: during a burst of clicks a job starts once no
        answer has been prepared for QUIET seconds, or after ANSWERS_FIRST at the latest.
        """
        def run():
            self._wait_for_quiet()
            try:
                fn(*args)
            except Exception:
                log.exception("chat work failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

        with self._idle:
            self._pending += 1
        self.pool.submit(run)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted job is done (shutdown, tests); -> False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def command(self, platform: str, user_id: str, text: str, chat: str | None = None, lang: str = "en") -> Reply:
        return self.commands.answer(platform, user_id, text, chat, lang)

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

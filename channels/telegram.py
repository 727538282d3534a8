"""Telegram: cards as HTML messages with inline keyboards, the /recon command, callbacks,
chart images with sendPhoto.

Webhook mode: Telegram posts every update to `/telegram/webhook` with the secret token
given to setWebhook in `X-Telegram-Bot-Api-Secret-Token`. It is compared in constant time
before the body is read; the update_id is then recorded (a re-delivered update is a replay);
a command older than the window is stale (callback queries carry no time of their own, so
for them the update_id is the guard). Every callback query is answered (answerCallbackQuery),
whatever the outcome, and the card is edited with editMessageText.

Limits: one message a second per chat and 20 a minute per group, and edits count the same as
messages (answerCallbackQuery does not). Every send and edit waits for its chat's slot
(`Pacer`), and what can be batched is: edits of one message waiting for a slot are folded
into one (the newest card), a command's cards without buttons share one message, and
`room()` tells the alert pipeline how many cards a group still takes this minute (the rest go
into its digest).

Polling mode (`mode = "polling"`, for a host Telegram cannot reach): python-telegram-bot's
Updater asks Telegram for updates (getUpdates, long polling) after removing any webhook
(deleteWebhook: Telegram refuses getUpdates while one is set). The Updater confirms each
batch with the next call's offset; an update Telegram offers again anyway (after a crash
before the confirmation) is caught by the same update_id record as a webhook replay. Each
update then takes the very same path as a webhook update (`dispatch`).

python-telegram-bot's Bot is asynchronous; it runs on a private event loop thread so the
rest of reconbot (and every other channel) stays synchronous.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import threading
import time
from collections import OrderedDict, deque

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Updater
from telegram.request import HTTPXRequest

from bot.cards import Card
from bot.delivery import deliver, deliver_reply
from bot.inbound import Conversation, received
from bot.transport import HttpRequest, HttpResponse, MessageRef, Refused, TransportError

log = logging.getLogger("reconbot.telegram")

# Bot API error descriptions (lower-case fragments) that no retry fixes.
PERMANENT_DESCRIPTIONS = (
    "chat not found", "bot was blocked by the user", "bot was kicked", "user is deactivated",
    "not enough rights", "have no rights", "message to edit not found", "message can't be edited",
    "message is too long", "button_data_invalid", "can't parse entities", "bot is not a member",
)
# Answers that mean the wanted state is already there.
BENIGN_DESCRIPTIONS = ("message is not modified",)
# Telegram's published limits: one message a second per chat, 20 a minute per group.
PER_CHAT_INTERVAL = 1.0
PER_GROUP_PER_MINUTE = 20
MAX_TEXT = 4096
NEWEST_KEPT = 1024  # messages whose newest wanted card is remembered, for folding edits together
MAX_CAPTION = 1024  # a photo's caption
CALLBACK_DATA_MAX = 64
SECRET_HEADER = "x-telegram-bot-api-secret-token"
ALLOWED_UPDATES = ["message", "callback_query"]  # all reconbot reads, webhook or polling


def render(card: Card) -> str:
    e = html.escape
    parts = [f"<b>{e(card.title)}</b>"]
    parts += [f"<b>{e(k)}</b>: {e(v)}" for k, v in card.fields]
    if card.text:
        parts += ["", e(card.text)]
    if card.evidence:
        parts += [f"<i>{e(x)}</i>" for x in card.evidence]
    if card.note:
        parts += ["", f"<b>{e(card.note)}</b>"]
    return "\n".join(parts)[:MAX_TEXT]


def batches(cards: list[Card]) -> list[tuple[str, InlineKeyboardMarkup | None]]:
    """The messages for several cards sent at once: cards without buttons share a message
    while it stays within Telegram's 4096 characters (every message takes one of the chat's
    slots); a card with buttons is a message of its own (its keyboard acts on it alone)."""
    out: list[tuple[str, InlineKeyboardMarkup | None]] = []
    for card in cards:
        text, markup = render(card), keyboard(card)
        if markup is None and out and out[-1][1] is None and len(out[-1][0]) + 2 + len(text) <= MAX_TEXT:
            out[-1] = (f"{out[-1][0]}\n\n{text}", None)
        else:
            out.append((text, markup))
    return out


def keyboard(card: Card) -> InlineKeyboardMarkup | None:
    if not card.buttons:
        return None
    buttons = [InlineKeyboardButton(b.label, callback_data=f"{b.action}|{b.value}"[:CALLBACK_DATA_MAX])
               for b in card.buttons]
    return InlineKeyboardMarkup([buttons[i:i + 2] for i in range(0, len(buttons), 2)])


def _transport_error(exc: TelegramError) -> TransportError:
    text = str(exc)
    low = text.lower()
    if isinstance(exc, RetryAfter):
        ra = getattr(exc, "_retry_after", None)  # a timedelta; the public int form is deprecated in v22
        seconds = ra.total_seconds() if ra is not None else 1.0
        return TransportError(f"Telegram 429: {text}", retry_after=seconds)
    if isinstance(exc, (Forbidden, InvalidToken)) or any(d in low for d in PERMANENT_DESCRIPTIONS):
        return TransportError(f"Telegram: {text}", permanent=True)
    if isinstance(exc, (TimedOut, NetworkError)) and not isinstance(exc, BadRequest):
        return TransportError(f"Telegram: {text}")
    return TransportError(f"Telegram: {text}", permanent=isinstance(exc, BadRequest))


class Pacer:
    """Waits as long as Telegram's limits need before the next message to a chat."""

    def __init__(self, clock=time.monotonic, sleep=time.sleep) -> None:
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.group_sends: dict[str, deque] = {}

    def delay(self, chat_id: str) -> float:
        """Reserve the next slot for `chat_id`; -> seconds to wait before sending."""
        with self.lock:
            now = self.clock()
            at = max(now, self.last.get(chat_id, -1e9) + PER_CHAT_INTERVAL)
            if chat_id.startswith("-"):  # groups, supergroups and channels have negative ids
                sends = self.group_sends.setdefault(chat_id, deque())
                while sends and sends[0] <= at - 60:
                    sends.popleft()
                if len(sends) >= PER_GROUP_PER_MINUTE:
                    at = max(at, sends[0] + 60)
                sends.append(at)
            self.last[chat_id] = at
            return at - now

    def wait(self, chat_id: str) -> None:
        d = self.delay(chat_id)
        if d > 0:
            self.sleep(d)

    def room(self, chat_id: str) -> int | None:
        """How many more messages a group takes in the current minute; None for a private
        chat (only the one-a-second spacing applies there)."""
        if not chat_id.startswith("-"):
            return None
        with self.lock:
            now = self.clock()
            recent = sum(1 for at in self.group_sends.get(chat_id, ()) if at > now - 60)
            return max(0, PER_GROUP_PER_MINUTE - recent)


class TelegramChannel:
    kind = "telegram"
    edits_without_event = True

    def __init__(self, bot_token: str, secret_token: str | None, base_url: str = "https://api.telegram.org/bot",
                 language: str = "en", conversation: Conversation | None = None, max_age: int = 300,
                 pacer: Pacer | None = None, poll_timeout: int | None = None) -> None:
        self.language = language
        self.secret_token = secret_token
        # polling mode when a poll timeout is given: updates come over our own getUpdates calls
        self.listener = Poller(self, poll_timeout) if poll_timeout is not None else None
        self.conversation = conversation
        self.max_age = max_age
        self.pacer = pacer or Pacer()
        self.bot = Bot(bot_token, base_url=base_url,
                       request=HTTPXRequest(connection_pool_size=32, read_timeout=10, pool_timeout=10))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="telegram-loop", daemon=True).start()
        self._ready = False
        self._init_lock = asyncio.Lock()  # used on the private loop only
        self._edits = threading.Lock()
        self._waiting: set[tuple[str, str]] = set()  # messages with an edit waiting for its slot
        self._newest: OrderedDict[tuple[str, str], Card] = OrderedDict()  # each message's newest wanted card
        self._attempt = threading.local()  # the edit this thread tried last and saw fail (deliver retries it)

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "TelegramChannel":
        c = cfg.chat.telegram
        polling = c.mode == "polling"
        return cls(c.bot_token, None if polling else c.secret_token, c.base_url, c.language, conversation,
                   cfg.chat.server.max_age_seconds, poll_timeout=c.poll_timeout_seconds if polling else None)

    async def _ready_bot(self) -> Bot:
        async with self._init_lock:
            if not self._ready:
                await self.bot.initialize()  # getMe, once
                self._ready = True
        return self.bot

    def _run(self, coro_fn, *args, **kwargs):
        """Run a Bot coroutine on the private loop; platform errors -> TransportError."""
        async def call():
            await self._ready_bot()
            return await coro_fn(*args, **kwargs)

        try:
            return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=60)
        except TelegramError as exc:
            if any(d in str(exc).lower() for d in BENIGN_DESCRIPTIONS):
                return None
            raise self._error(exc) from None

    def _error(self, exc: TelegramError) -> TransportError:
        err = _transport_error(exc)
        err.message = self.redact(err.message)
        return err

    def redact(self, text: str) -> str:
        return text.replace(self.bot.token, "<token>")  # the token rides in every URL

    # -- outbound ----------------------------------------------------------------------
    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef:
        # Telegram has no idempotency key and a bot cannot read a chat's history: a send
        # repeated after a crash in the outbox's window may show twice (bot/outbox.py)
        if card.image is not None:  # sendPhoto: multipart upload, the title as caption
            self.pacer.wait(str(target))
            img = card.image
            msg = self._run(self.bot.send_photo, chat_id=target, photo=img.png, filename=img.filename,
                            caption=card.title[:MAX_CAPTION])
            return MessageRef(self.kind, str(msg.chat_id), str(msg.message_id))
        return self._post(target, render(card), keyboard(card))

    def _post(self, target: str, text: str, markup: InlineKeyboardMarkup | None) -> MessageRef:
        self.pacer.wait(str(target))
        msg = self._run(self.bot.send_message, chat_id=target, text=text, parse_mode=ParseMode.HTML,
                        reply_markup=markup)
        return MessageRef(self.kind, str(msg.chat_id), str(msg.message_id))

    def room(self, target: str) -> int | None:
        """How many more messages the chat takes this minute (None: no count limit)."""
        return self.pacer.room(str(target))

    def update(self, ref: MessageRef, card: Card) -> None:
        """Edit a card in place, in the chat's next slot. An edit of a message that already has
        one waiting for its slot is folded into it and returns at once: the waiting edit sends
        the newest card when its slot comes (a burst of clicks on one card costs one or two
        edits, not one per click)."""
        key = (str(ref.target), str(ref.message_id))
        tried = getattr(self._attempt, "edit", None)
        retry = tried is not None and tried[0] == key and tried[1] is card  # deliver() again, after a failure
        with self._edits:
            if not retry:  # a new edit is the newest wanted state; a retried one is not newer than what was sent
                self._newest[key] = card
                self._newest.move_to_end(key)
                while len(self._newest) > NEWEST_KEPT:
                    self._newest.popitem(last=False)
            if key in self._waiting:
                return
            self._waiting.add(key)
        try:
            self.pacer.wait(key[0])
        finally:
            with self._edits:
                self._waiting.discard(key)
                newest = self._newest.get(key, card)
        self._attempt.edit = (key, card)
        self._run(self.bot.edit_message_text, chat_id=ref.target, message_id=int(ref.message_id), text=render(newest),
                  parse_mode=ParseMode.HTML, reply_markup=keyboard(newest))
        self._attempt.edit = None

    def answer(self, callback_query_id: str, text: str, alert: bool) -> None:
        self._run(self.bot.answer_callback_query, callback_query_id, text=text[:200] or None, show_alert=alert)

    def set_webhook(self, url: str) -> None:
        """Point Telegram at `recon serve` (run once: `recon telegram-webhook URL`)."""
        if not self.secret_token:
            raise TransportError('Telegram is in polling mode: set mode = "webhook" and a secret_token first',
                                 permanent=True)
        self._run(self.bot.set_webhook, url=url, secret_token=self.secret_token, allowed_updates=ALLOWED_UPDATES)

    # -- inbound -----------------------------------------------------------------------
    def verify(self, request: HttpRequest) -> None:
        if not self.secret_token:  # polling mode: nothing arrives over HTTP
            raise Refused("forged", "Telegram is in polling mode: no secret token to check a request against")
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret_token.encode()):
            raise Refused("forged", "Telegram secret token does not match")

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.verify(request)
        try:
            data = json.loads(request.body)
            update = Update.de_json(data, self.bot)
        except (ValueError, TypeError, KeyError) as exc:
            raise Refused("malformed", f"not a Telegram update: {exc.__class__.__name__}") from None
        if update is None or not isinstance(data.get("update_id"), int):
            raise Refused("malformed", "no update_id")
        self.dispatch(update, request.body)
        return HttpResponse(200, b"")

    def dispatch(self, update: Update, raw: bytes) -> None:
        """What a webhook update and a polled one share: a command older than the window is
        stale, the update_id is recorded once (a second delivery is a replay), and the work is
        handed to the conversation. `raw` is what the audit's request hash is taken over."""
        message = update.message
        if message is not None and message.date is not None and time.time() - message.date.timestamp() > self.max_age:
            raise Refused("stale", f"message of {message.date.isoformat()} is older than {self.max_age}s")
        self.conversation.replay.first_time(self.kind, f"{self.bot.token.split(':')[0]}:{update.update_id}")
        if update.callback_query is not None:
            self.conversation.submit(self._on_callback, update.callback_query, raw)
        elif message is not None and message.text and message.text.lstrip().lower().startswith("/recon"):
            self.conversation.submit(self._on_command, message)

    def _on_command(self, message) -> None:
        chat = str(message.chat_id)
        reply = self.conversation.command(self.kind, str(message.from_user.id), message.text, chat, self.language)
        for text, markup in batches(reply.cards):
            deliver(self.kind, "reply", lambda: self._post(chat, text, markup))
        self.conversation.later(reply, lambda card: deliver_reply(self.kind, lambda c: self.send(chat, c), card))

    def _on_callback(self, cq, body: bytes) -> None:
        action, _, value = (cq.data or "").partition("|")
        outcome = self.conversation.click(self.kind, str(cq.from_user.id), action, value, body, self.language)
        try:  # answered always, even when refused: the user's spinner stops either way
            deliver(self.kind, "answerCallbackQuery",
                    lambda: self.answer(cq.id, outcome.message, alert=outcome.status in ("lost", "refused", "stale")))
        except TransportError as exc:
            log.warning("answerCallbackQuery failed: %s", exc.message)
        if outcome.card is not None and cq.message is not None:
            ref = MessageRef(self.kind, str(cq.message.chat.id), str(cq.message.message_id))
            try:
                deliver(self.kind, "editMessageText", lambda: self.update(ref, outcome.card))
            except TransportError as exc:
                log.error("editMessageText failed: %s", exc.message)


class Poller:
    """Polling mode: python-telegram-bot's Updater on the channel's event loop. It removes any
    webhook (deleteWebhook), then long-polls getUpdates from the last offset + 1 and puts each
    update on a queue; we take them off in order and hand each to `dispatch`, exactly as the
    webhook endpoint does. Run one poller per bot: Telegram answers a second one with 409."""

    RETRY_WAIT = 1.0  # seconds before taking an update again that failed (doubling, up to 30 s)
    STOP_WAIT = 10.0  # seconds stopping waits for the fetched updates to be taken

    def __init__(self, channel: TelegramChannel, timeout: int) -> None:
        self.channel = channel
        self.timeout = timeout
        self.retry_wait = self.RETRY_WAIT
        self.updater: Updater | None = None
        self._taking: asyncio.Task | None = None

    def start(self) -> None:
        try:
            self._on_loop(self._start())
        except TelegramError as exc:
            raise self.channel._error(exc) from None

    def stop(self) -> None:
        if self.updater is not None:
            self._on_loop(self._stop())

    def connected(self) -> bool:
        return self.updater is not None and self.updater.running

    def _on_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.channel._loop).result(timeout=60)

    async def _start(self) -> None:
        updater = Updater(await self.channel._ready_bot(), asyncio.Queue())
        await updater.initialize()
        queue = await updater.start_polling(timeout=self.timeout, allowed_updates=ALLOWED_UPDATES,
                                            error_callback=self._failed)
        self._taking = asyncio.create_task(self._take_all(queue), name="telegram-updates")
        self.updater = updater

    async def _stop(self) -> None:
        # stop asking (the Updater's last call confirms to Telegram what it fetched), then
        # take everything fetched
        queue = self.updater.update_queue
        if self.updater.running:
            await self.updater.stop()
        try:
            await asyncio.wait_for(queue.join(), self.STOP_WAIT)
        except asyncio.TimeoutError:
            log.error("stopped with %d fetched Telegram update(s) not taken", queue.qsize() + 1)
        self._taking.cancel()
        self.updater = None

    async def _take_all(self, queue: asyncio.Queue) -> None:
        while True:
            update = await queue.get()
            wait = self.retry_wait
            try:
                while True:
                    try:
                        # the database and the conversation are synchronous: off the loop, in order
                        await asyncio.to_thread(self._take, update)
                        break
                    except Exception as exc:  # the database, most likely
                        # Telegram will not offer a fetched update again: try it again, do not drop it
                        log.error("Telegram update %s not taken (%s: %s); again in %.1fs", update.update_id,
                                  exc.__class__.__name__, self.channel.redact(str(exc))[:200], wait)
                        await asyncio.sleep(wait)
                        wait = min(wait * 2, 30.0)
            finally:
                queue.task_done()

    def _take(self, update: Update) -> None:
        raw = json.dumps(update.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        received(self.channel.kind, f"update {update.update_id}", lambda: self.channel.dispatch(update, raw))

    def _failed(self, exc: TelegramError) -> None:
        # the Updater retries by itself (1 s, growing to 30 s); a 409 means another poller or a webhook
        log.warning("Telegram getUpdates failed: %s", self.channel.redact(str(exc)))

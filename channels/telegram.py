"""Telegram: cards as HTML messages with inline keyboards, the /recon command, callbacks,
chart images with sendPhoto.

Webhook mode: Telegram posts every update to `/telegram/webhook` with the secret token
given to setWebhook in `X-Telegram-Bot-Api-Secret-Token`. It is compared in constant time
before the body is read; the update_id is then recorded (a re-delivered update is a replay);
a command older than the window is stale (callback queries carry no time of their own, so
for them the update_id is the guard). Every callback query is answered (answerCallbackQuery),
whatever the outcome, and the card is edited with editMessageText.

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
from collections import deque

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from bot.cards import Card
from bot.delivery import deliver, deliver_reply
from bot.inbound import Conversation
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
MAX_CAPTION = 1024  # a photo's caption
CALLBACK_DATA_MAX = 64
SECRET_HEADER = "x-telegram-bot-api-secret-token"


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


class TelegramChannel:
    kind = "telegram"
    edits_without_event = True

    def __init__(self, bot_token: str, secret_token: str, base_url: str = "https://api.telegram.org/bot",
                 language: str = "en", conversation: Conversation | None = None, max_age: int = 300,
                 pacer: Pacer | None = None) -> None:
        self.language = language
        self.secret_token = secret_token
        self.conversation = conversation
        self.max_age = max_age
        self.pacer = pacer or Pacer()
        self.bot = Bot(bot_token, base_url=base_url,
                       request=HTTPXRequest(connection_pool_size=32, read_timeout=10, pool_timeout=10))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="telegram-loop", daemon=True).start()
        self._ready = False
        self._init_lock = asyncio.Lock()  # used on the private loop only

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "TelegramChannel":
        c = cfg.chat.telegram
        return cls(c.bot_token, c.secret_token, c.base_url, c.language, conversation, cfg.chat.server.max_age_seconds)

    def _run(self, coro_fn, *args, **kwargs):
        """Run a Bot coroutine on the private loop; platform errors -> TransportError."""
        async def call():
            async with self._init_lock:
                if not self._ready:
                    await self.bot.initialize()  # getMe, once
                    self._ready = True
            return await coro_fn(*args, **kwargs)

        try:
            return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=60)
        except TelegramError as exc:
            if any(d in str(exc).lower() for d in BENIGN_DESCRIPTIONS):
                return None
            err = _transport_error(exc)
            err.message = err.message.replace(self.bot.token, "<token>")  # the token rides in every URL
            raise err from None

    # -- outbound ----------------------------------------------------------------------
    def send(self, target: str, card: Card) -> MessageRef:
        self.pacer.wait(str(target))
        if card.image is not None:  # sendPhoto: multipart upload, the title as caption
            img = card.image
            msg = self._run(self.bot.send_photo, chat_id=target, photo=img.png, filename=img.filename,
                            caption=card.title[:MAX_CAPTION])
            return MessageRef(self.kind, str(msg.chat_id), str(msg.message_id))
        msg = self._run(self.bot.send_message, chat_id=target, text=render(card), parse_mode=ParseMode.HTML,
                        reply_markup=keyboard(card))
        return MessageRef(self.kind, str(msg.chat_id), str(msg.message_id))

    def update(self, ref: MessageRef, card: Card) -> None:
        self._run(self.bot.edit_message_text, chat_id=ref.target, message_id=int(ref.message_id), text=render(card),
                  parse_mode=ParseMode.HTML, reply_markup=keyboard(card))

    def answer(self, callback_query_id: str, text: str, alert: bool) -> None:
        self._run(self.bot.answer_callback_query, callback_query_id, text=text[:200] or None, show_alert=alert)

    def set_webhook(self, url: str) -> None:
        """Point Telegram at `recon serve` (run once: `recon telegram-webhook URL`)."""
        self._run(self.bot.set_webhook, url=url, secret_token=self.secret_token,
                  allowed_updates=["message", "callback_query"])

    # -- inbound -----------------------------------------------------------------------
    def verify(self, request: HttpRequest) -> None:
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
        message = update.message
        if message is not None and message.date is not None and time.time() - message.date.timestamp() > self.max_age:
            raise Refused("stale", f"message of {message.date.isoformat()} is older than {self.max_age}s")
        self.conversation.replay.first_time(self.kind, f"{self.bot.token.split(':')[0]}:{update.update_id}")
        if update.callback_query is not None:
            self.conversation.submit(self._on_callback, update.callback_query, request.body)
        elif message is not None and message.text and message.text.lstrip().lower().startswith("/recon"):
            self.conversation.submit(self._on_command, message)
        return HttpResponse(200, b"")

    def _on_command(self, message) -> None:
        chat = str(message.chat_id)
        reply = self.conversation.command(self.kind, str(message.from_user.id), message.text, chat, self.language)
        for card in reply.cards:
            deliver(self.kind, "reply", lambda: self.send(chat, card))
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

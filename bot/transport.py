"""The tiny protocol every chat platform module implements (channels/*), and the
platform-neutral shapes of an inbound HTTP request and its answer.

    send(target, card, idempotency_key=None) -> MessageRef
                                             post a card to a chat / channel / user; a platform
                                             that has a way to recognise a repeated send uses
                                             the key (Slack message metadata, WeCom duplicate
                                             check), the others ignore it
    find_sent(target, idempotency_key)       optional: the message sent with that key, if the
                                             platform can tell (Slack); the outbox asks before
                                             re-sending a message a crash left in doubt
    update(ref, card)                        edit that card in place
    handle(request) -> HttpResponse          verify, parse and answer an inbound request
    listener -> Listener | None              set when inbound traffic comes over a connection
                                             the module opens itself (Slack Socket Mode,
                                             Telegram polling) instead of over HTTP

A platform module knows its own errors (a constant table in the module) and raises
`TransportError(message, permanent=False, retry_after=None)`; retrying is not its job
(bot/delivery.py does it, the same way for every platform).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bot.cards import Card


@dataclass(frozen=True)
class MessageRef:
    channel: str  # registry kind
    target: str  # chat id, channel id, WeCom user(s)
    message_id: str  # Slack ts, Telegram message_id, WeCom task_id


class TransportError(Exception):
    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str = ""


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """An inbound request that is not acted on: forged, stale, replayed or malformed."""

    STATUS = {"forged": 401, "stale": 401, "replayed": 409, "malformed": 400}

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def status(self) -> int:
        return self.STATUS[self.kind]


class Channel(Protocol):
    kind: str
    language: str

    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef: ...

    def update(self, ref: MessageRef, card: Card) -> None: ...


class Listener(Protocol):
    """An inbound path that connects out instead of being posted to (Slack Socket Mode,
    Telegram long polling): for a host no platform can reach. `recon serve` starts it once
    the app is up and stops it before finishing the work in flight."""

    def start(self) -> None: ...  # connect; TransportError when the platform refuses

    def stop(self) -> None: ...

    def connected(self) -> bool: ...  # for /healthz

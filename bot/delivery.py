"""One retry stage for every platform: honour Retry-After, back off on 5xx, stop on permanent;
and a reply whose image cannot be uploaded goes out as text."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, TypeVar

from bot import metrics
from bot.cards import Card
from bot.transport import TransportError

T = TypeVar("T")
log = logging.getLogger("reconbot.delivery")
ATTEMPTS = 4
BACKOFF = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd, 4th attempt when the platform gives no Retry-After
MAX_WAIT = 60.0  # a Retry-After longer than this is not waited for here (the outbox retries later)


def deliver(platform: str, what: str, fn: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    for attempt in range(ATTEMPTS):
        try:
            result = fn()
        except TransportError as exc:
            last = attempt == ATTEMPTS - 1
            wait = exc.retry_after if exc.retry_after is not None else BACKOFF[min(attempt, len(BACKOFF) - 1)]
            if exc.permanent or last or wait > MAX_WAIT:
                metrics.OUTBOUND.labels(platform, "failed").inc()
                log.warning("%s %s failed for good after %d attempt(s): %s", platform, what, attempt + 1, exc.message)
                raise
            metrics.OUTBOUND.labels(platform, "retried").inc()
            log.info("%s %s: %s; retrying in %.1fs", platform, what, exc.message, wait)
            sleep(wait)
        else:
            metrics.OUTBOUND.labels(platform, "ok").inc()
            return result
    raise AssertionError("unreachable")


def deliver_reply(platform: str, send: Callable[[Card], T], card: Card) -> T:
    """A command's reply card. One that carries an image (a chart) is uploaded; when the
    upload fails for good, the card goes out as text instead (its `text` says so), so the
    chat always gets an answer."""
    if card.image is None:
        return deliver(platform, "reply", lambda: send(card))
    try:
        ref = deliver(platform, "image", lambda: send(card))
    except TransportError as exc:
        metrics.IMAGES.labels(platform, "sent_as_text").inc()
        log.warning("%s: image %s not attached (%s); sending its text instead", platform, card.image.filename,
                    exc.message)
        return deliver(platform, "reply", lambda: send(replace(card, image=None)))
    metrics.IMAGES.labels(platform, "attached").inc()
    return ref

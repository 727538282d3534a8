"""Inbound payment notifications on `recon serve`: verified first, then recorded and checked.

    POST /webhooks/payments/<merchant>          a signed JSON notification (any channel, any sender)
    POST /webhooks/stripe/<merchant>/<source>   Stripe webhooks (payment_intent.succeeded,
                                                charge.succeeded, charge.refunded)

Nothing in a request is read before it is verified:
- *Generic*: `X-Recon-Timestamp: <unix seconds>` and `X-Recon-Signature: v1=<hex>`, the
  HMAC-SHA256 of `<timestamp>.<body>` with the merchant's `payments_webhook_secret`. The
  timestamp must be within `[chat.server] max_age_seconds`; the signature is compared in
  constant time, then recorded (`inbound_seen`), so the same signed request sent again is
  refused as a replay, by any process on the database.
- *Stripe*: the `Stripe-Signature` header is checked by the stripe package's own
  `Webhook.construct_event` with the source's `stripe_webhook_secret` (Stripe's scheme: v1
  HMAC-SHA256 of `t.payload`, timestamp tolerance), then recorded like the generic one.

A channel that sends a notification again (Stripe retries until it gets a 2xx, with a
fresh signature) is answered 200 and nothing changes: the notification's own id is its
identity in the store (core/realtime.py). Event types other than the three above are
answered 200 and ignored, so Stripe does not retry them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Callable

from bot.inbound import ReplayGuard, fresh
from bot.transport import HttpRequest, HttpResponse, Refused
from core import realtime
from core.config import Config, ConfigError, MerchantConfig
from core.money import to_minor

log = logging.getLogger("reconbot.payments")
STRIPE_EVENTS = ("payment_intent.succeeded", "charge.succeeded", "charge.refunded")
GENERIC_FIELDS = ("id", "source", "kind", "txn_id", "order_id", "amount", "currency", "status", "occurred_at",
                  "payer", "memo")


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The X-Recon-Signature value of a generic notification (senders compute the same)."""
    return "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class PaymentWebhooks:
    """`on_break(merchant_id)` is called when a check stored a break (the caller alerts)."""

    def __init__(self, cfg: Config, replay: ReplayGuard, on_break: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.replay = replay
        self.max_age = cfg.chat.server.max_age_seconds
        self.on_break = on_break

    def _merchant(self, merchant_id: str) -> MerchantConfig:
        try:
            return self.cfg.merchant(merchant_id)
        except ConfigError:
            raise Refused("forged", f"no merchant {merchant_id!r}") from None

    # -- POST /webhooks/payments/<merchant> -------------------------------------------------

    def generic(self, req: HttpRequest, merchant: str) -> HttpResponse:
        m = self._merchant(merchant)
        if m.payments_webhook_secret is None:
            raise Refused("forged", f"merchant {m.id} has no payments_webhook_secret: notifications are refused")
        ts = fresh(req.headers.get("x-recon-timestamp"), self.max_age)
        given = req.headers.get("x-recon-signature", "")
        expected = sign(m.payments_webhook_secret.get_secret_value(), ts, req.body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Refused("forged", "X-Recon-Signature does not match")
        self.replay.first_time("payments", f"{m.id}:{given}")
        try:
            data = json.loads(req.body, parse_float=Decimal)  # exact amounts: never a float
        except ValueError as exc:
            raise Refused("malformed", f"body is not JSON: {exc}") from None
        return self._receive(m, generic_notice(m, data))

    # -- POST /webhooks/stripe/<merchant>/<source> ------------------------------------------

    def stripe(self, req: HttpRequest, merchant: str, source: str) -> HttpResponse:
        import stripe

        m = self._merchant(merchant)
        src = m.source(source)
        if src is None or src.stripe_webhook_secret is None:
            raise Refused("forged", f"merchant {m.id} has no stripe source {source!r} with a stripe_webhook_secret")
        header = req.headers.get("stripe-signature")
        if not header:
            raise Refused("malformed", "no Stripe-Signature header")
        try:  # verifies the signature and its timestamp first; parses the body only then
            stripe.Webhook.construct_event(req.body, header, src.stripe_webhook_secret.get_secret_value(),
                                           tolerance=self.max_age)
        except stripe.SignatureVerificationError as exc:
            kind = "stale" if "tolerance" in str(exc).lower() else "forged"
            raise Refused(kind, f"Stripe-Signature: {exc.user_message or exc}") from None
        except ValueError as exc:
            raise Refused("malformed", f"body is not JSON: {exc}") from None
        self.replay.first_time("stripe", f"{m.id}:{header}")
        event = json.loads(req.body)
        if event.get("type") not in STRIPE_EVENTS:
            return _json(200, {"ignored": event.get("type")})
        return self._receive(m, stripe_notice(src, event))

    def _receive(self, m: MerchantConfig, notice: realtime.Notice) -> HttpResponse:
        try:
            checked = realtime.receive(self.cfg, m, notice)
        except ValueError as exc:
            raise Refused("malformed", str(exc)) from None
        log.info("%s notification %s (%s %s): %s", m.id, notice.event_id, notice.kind, notice.ref, checked.status)
        if checked.break_id is not None:
            self.on_break(m.id)
        return _json(200, checked.as_json())


def _json(status: int, body: dict) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, ensure_ascii=False), "application/json")


def _field(data: dict, name: str, required: bool = True):
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise Refused("malformed", f"{name}: missing")
        return None
    if name != "amount" and not isinstance(value, str):
        raise Refused("malformed", f"{name}={value!r}: not a string")
    return value


def generic_notice(m: MerchantConfig, data) -> realtime.Notice:
    """Our own notification format (README: "Payment notifications"); errors name the field."""
    if not isinstance(data, dict):
        raise Refused("malformed", "the body must be a JSON object")
    unknown = sorted(set(data) - set(GENERIC_FIELDS))
    if unknown:
        raise Refused("malformed", f"unknown field(s) {', '.join(unknown)} (known: {', '.join(GENERIC_FIELDS)})")
    source = _field(data, "source")
    src = m.source(source)
    if src is None or src.kind in realtime.INTERNAL_KINDS:
        raise Refused("malformed", f"source={source!r}: not a channel source of merchant {m.id}")
    kind = _field(data, "kind", required=False) or "payment"
    if kind not in ("payment", "refund"):
        raise Refused("malformed", f"kind={kind!r}: payment or refund")
    currency = (_field(data, "currency", required=False) or m.currency).upper()
    raw = _field(data, "amount")
    try:
        amount = to_minor(Decimal(str(raw)), currency)
    except (InvalidOperation, ValueError) as exc:
        raise Refused("malformed", f"amount={raw!r}: {exc if isinstance(exc, ValueError) else 'not a number'}") from None
    if amount <= 0:
        raise Refused("malformed", f"amount={raw!r}: give the amount as a positive number (kind says refund)")
    when = _field(data, "occurred_at")
    try:
        occurred = datetime.fromisoformat(when)
    except ValueError:
        raise Refused("malformed", f"occurred_at={when!r}: not an ISO-8601 date-time") from None
    if occurred.tzinfo is None:
        from zoneinfo import ZoneInfo

        occurred = occurred.replace(tzinfo=ZoneInfo(src.timezone))  # local to the source, as in its statements
    txn = _field(data, "txn_id")
    return realtime.Notice(
        source=source, event_id=_field(data, "id"), format="payments.webhook", kind=kind,
        ref=txn if kind == "payment" else f"{txn}:refund:{amount}", txn_id=txn,
        order_id=_field(data, "order_id", required=False), amount=amount if kind == "payment" else -amount,
        currency=currency, status=(_field(data, "status", required=False) or "success").lower(),
        occurred_at=occurred, payer=_field(data, "payer", required=False), memo=_field(data, "memo", required=False))


def _metadata_key(src) -> str:
    """The metadata key that holds our order id: as mapped for the Stripe report
    (`columns = {"payment_metadata[order_no]" = "order_id"}`), else order_id."""
    for column, field in src.columns.items():
        if field == "order_id" and column.startswith("payment_metadata[") and column.endswith("]"):
            return column[len("payment_metadata["):-1]
    return "order_id"


def stripe_notice(src, event: dict) -> realtime.Notice:
    """A Stripe event (already verified) as a notification. The payment's identity is its
    PaymentIntent (a charge without one: the charge), so payment_intent.succeeded and
    charge.succeeded of one payment are one record. A refund's is the charge and the total
    refunded so far (Stripe states charge.refunded with the cumulative amount_refunded)."""
    obj = event["data"]["object"]
    try:
        currency = obj["currency"].upper()
        metadata = obj.get("metadata") or {}
        order_id = metadata.get(_metadata_key(src))
        if event["type"] == "payment_intent.succeeded":
            return realtime.Notice(
                source=src.name, event_id=event["id"], format="stripe.webhook", kind="payment", ref=obj["id"],
                txn_id=obj["id"], order_id=order_id, amount=int(obj["amount_received"]), currency=currency,
                status="success" if obj["status"] == "succeeded" else obj["status"],
                occurred_at=datetime.fromtimestamp(obj["created"], timezone.utc), payer=obj.get("receipt_email"),
                memo=f"payment_intent.succeeded | {obj.get('description') or ''}".rstrip(" |"))
        intent = obj.get("payment_intent") or obj["id"]
        payer = (obj.get("billing_details") or {}).get("email") or obj.get("receipt_email")
        if event["type"] == "charge.succeeded":
            captured = bool(obj.get("captured"))
            return realtime.Notice(
                source=src.name, event_id=event["id"], format="stripe.webhook", kind="payment", ref=intent,
                txn_id=intent, order_id=order_id,
                amount=int(obj["amount_captured"] if captured else obj["amount"]), currency=currency,
                status="success" if captured else "authorized",
                occurred_at=datetime.fromtimestamp(obj["created"], timezone.utc), payer=payer,
                memo=f"charge.succeeded {obj['id']} | {obj.get('description') or ''}".rstrip(" |"))
        refunded = int(obj["amount_refunded"])
        return realtime.Notice(
            source=src.name, event_id=event["id"], format="stripe.webhook", kind="refund",
            ref=f"{obj['id']}:refunded:{refunded}", txn_id=intent, order_id=order_id, amount=-refunded,
            currency=currency, status="success",
            occurred_at=datetime.fromtimestamp(event["created"], timezone.utc), payer=payer,
            memo=f"charge.refunded {obj['id']} (amount_refunded, the total so far)")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Refused("malformed", f"{event.get('type')} {event.get('id')}: not the shape Stripe sends "
                                   f"({exc.__class__.__name__}: {exc})") from None

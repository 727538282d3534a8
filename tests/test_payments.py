"""Payment notifications on `recon serve`: the generic signed JSON webhook and Stripe's.

Stripe events are real event shapes (tests/data/stripe_events, API version 2024-06-20)
signed exactly as Stripe signs them: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"t.payload" with the endpoint secret>`. Alerts land in the fake Slack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from starlette.testclient import TestClient

from bot.payments import sign
from bot.server import create_app
from chat_setup import SLACK_CHANNEL, SLACK_SECRET
from core.config import from_dict
from core.ingest import ingest_file
from models.db import get_engine
from models.tables import Break, Ledger, Record, StatementFile

EVENTS = Path(__file__).parent / "data" / "stripe_events"
NOTIFY_SECRET = "notify-secret-0123456789abcdef"
STRIPE_SECRET = "whsec_RecOnTestEndpointSecret0123456789"
ORDERS = """order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id
W-9001,wechatpay,5800.00,CNY,paid,2026-11-20T10:00:00+08:00,0.00,4200009001
W-9002,wechatpay,12.00,CNY,paid,2026-11-20T10:05:00+08:00,0.00,4200009002
W-9003,wechatpay,6000.00,CNY,unpaid,2026-11-20T10:06:00+08:00,0.00,4200009003
ST-1,stripe,120.00,USD,paid,2026-11-20T18:00:00+08:00,0.00,pi_3QaRecon0001
ST-2,stripe,200.00,USD,paid,2026-11-20T18:10:00+08:00,0.00,pi_3QaRecon0002
"""


@pytest.fixture
def setup(tmp_path, db_url, slack):
    cfg = from_dict({
        "database": {"url": db_url},
        "fx": {"rates": {"USD/CNY": "7.10"}},
        "tolerance": {"large_transaction": "500.00"},
        "merchants": [{"id": "demo-shop", "name": "Demo", "timezone": "Asia/Shanghai", "currency": "CNY",
                       "payments_webhook_secret": NOTIFY_SECRET, "sources": [
                           {"name": "orders", "kind": "orders"},
                           {"name": "wechatpay", "kind": "wechatpay"},
                           {"name": "stripe", "kind": "stripe", "timezone": "UTC",
                            "stripe_webhook_secret": STRIPE_SECRET}]}],
        "chat": {"slack": {"bot_token": "xoxb-fake", "signing_secret": SLACK_SECRET, "base_url": slack.base_url},
                 "routes": [{"merchant": "*", "channel": "slack", "target": SLACK_CHANNEL}]},
    }, origin="test", base_dir=tmp_path)
    orders = tmp_path / "orders_2026-11-20.csv"
    orders.write_text(ORDERS, encoding="utf-8")
    ingest_file(cfg, cfg.merchants[0], orders)
    with TestClient(create_app(cfg)) as client:
        yield cfg, client


def notification(**over) -> dict:
    return {"id": "wx-notify-0001", "source": "wechatpay", "txn_id": "4200009001", "order_id": "W-9001",
            "amount": "5900.00", "currency": "CNY", "occurred_at": "2026-11-20T10:00:03+08:00", **over}


def post_generic(client, body: dict | bytes, ts: int | None = None, secret: str = NOTIFY_SECRET, signature=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = int(time.time()) if ts is None else ts
    headers = {"X-Recon-Timestamp": str(ts), "X-Recon-Signature": signature or sign(secret, ts, raw),
               "Content-Type": "application/json"}
    return client.post("/webhooks/payments/demo-shop", content=raw, headers=headers), headers, raw


def stripe_signed(payload: bytes, secret: str = STRIPE_SECRET, ts: int | None = None) -> dict:
    """Exactly Stripe's scheme: t=<timestamp>,v1=<HMAC-SHA256(secret, "<t>.<payload>")>."""
    ts = int(time.time()) if ts is None else ts
    v1 = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={v1}", "Content-Type": "application/json; charset=utf-8"}


def post_stripe(client, name: str, **sign_kw):
    payload = (EVENTS / f"{name}.json").read_bytes()
    headers = stripe_signed(payload, **sign_kw)
    return client.post("/webhooks/stripe/demo-shop/stripe", content=payload, headers=headers), headers, payload


def notified(url: str) -> list[Record]:
    with Session(get_engine(url)) as s:
        return list(s.execute(select(Record).join(Ledger, Ledger.id == Record.ledger_id)
                              .where(Ledger.side == "notified").order_by(Record.id)).scalars())


def realtime_breaks(url: str) -> list[Break]:
    with Session(get_engine(url)) as s:
        return list(s.execute(select(Break).where(Break.rule == "realtime").order_by(Break.id)).scalars())


def files(url: str) -> int:
    with Session(get_engine(url)) as s:
        return s.execute(select(func.count()).select_from(StatementFile)).scalar_one()


def cards(slack) -> list[dict]:
    return [c for c in slack.called("chat.postMessage") if any(b["type"] == "actions" for b in c.get("blocks", []))]


# -- the generic signed webhook ---------------------------------------------------------------

def test_a_large_notification_that_does_not_match_our_order_alerts_at_once(setup, slack):
    cfg, client = setup
    r, _h, _b = post_generic(client, notification())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recorded"] and body["check"] == "mismatch" and body["break"]
    assert client.app.state.conversation.drain()
    [b] = realtime_breaks(cfg.database.url)
    assert (b.type, b.status, b.severity, b.order_id, b.txn_id) == ("amount_mismatch", "open", "urgent", "W-9001",
                                                                    "4200009001")
    assert (b.internal_amount, b.channel_amount, b.difference) == (580000, 590000, 10000)
    assert "our books say ¥5,800.00 (difference ¥100.00)" in b.explanation
    evidence = json.loads(b.evidence)
    assert evidence[0] == {"side": "channel", "file": "payments.webhook:wechatpay/wx-notify-0001", "line": 1}
    assert evidence[1]["side"] == "internal" and evidence[1]["file"].endswith("orders_2026-11-20.csv")
    [card] = cards(slack)
    assert card["channel"] == SLACK_CHANNEL and f'"{b.id}:1"' in json.dumps(card["blocks"])
    [rec] = notified(cfg.database.url)
    assert (rec.kind, rec.ref, rec.amount, rec.currency, rec.order_id) == ("payment", "4200009001", 590000, "CNY",
                                                                          "W-9001")


def test_a_small_notification_is_recorded_without_an_alert(setup, slack):
    cfg, client = setup
    r, _h, _b = post_generic(client, notification(id="wx-notify-small", txn_id="4200009002", order_id="W-9002",
                                                  amount=13.5))  # a JSON number: read exactly, never a float
    assert r.status_code == 200 and r.json()["check"] == "small"
    assert client.app.state.conversation.drain()
    [rec] = notified(cfg.database.url)
    assert rec.amount == 1350
    assert realtime_breaks(cfg.database.url) == [] and cards(slack) == []


def test_a_large_notification_that_agrees_records_only(setup, slack):
    cfg, client = setup
    r, _h, _b = post_generic(client, notification(id="wx-notify-ok", amount="5800.00"))
    assert r.json()["check"] == "agrees"
    assert realtime_breaks(cfg.database.url) == [] and cards(slack) == []


def test_our_books_saying_unpaid_is_a_status_mismatch(setup):
    cfg, client = setup
    r, _h, _b = post_generic(client, notification(id="wx-notify-unpaid", txn_id="4200009003", order_id="W-9003",
                                                  amount="6000.00"))
    assert r.json()["check"] == "mismatch"
    [b] = realtime_breaks(cfg.database.url)
    assert b.type == "status_mismatch" and "our books say the order is unpaid" in b.explanation


def test_an_order_our_books_cannot_know_yet_is_not_judged(setup):
    cfg, client = setup
    r, _h, _b = post_generic(client, notification(id="wx-notify-tomorrow", txn_id="4200009999", order_id="W-9999",
                                                  occurred_at="2026-11-21T09:00:00+08:00"))
    assert r.json()["check"] == "not_known_yet" and "our books reach only 2026-11-20" in r.json()["reason"]
    assert realtime_breaks(cfg.database.url) == []
    r, _h, _b = post_generic(client, notification(id="wx-notify-unknown", txn_id="4200009998", order_id="W-9998"))
    assert r.json()["check"] == "mismatch"  # the same day as our books: a payment we have no order for
    assert realtime_breaks(cfg.database.url)[0].type == "long"


def test_redelivery_of_the_same_notification_changes_nothing(setup, slack):
    cfg, client = setup
    first, _h, _b = post_generic(client, notification())
    assert client.app.state.conversation.drain()
    before = (files(cfg.database.url), len(notified(cfg.database.url)), len(realtime_breaks(cfg.database.url)))
    again, _h, _b = post_generic(client, notification(), ts=int(time.time()) + 1)  # re-sent: a new signature
    assert again.status_code == 200
    assert again.json() == {**first.json(), "recorded": False}
    assert client.app.state.conversation.drain()
    assert (files(cfg.database.url), len(notified(cfg.database.url)), len(realtime_breaks(cfg.database.url))) == before
    assert len(cards(slack)) == 1


def test_forged_stale_and_replayed_requests_are_refused_before_anything_is_read(setup):
    cfg, client = setup
    n0 = files(cfg.database.url)
    r, _h, _b = post_generic(client, notification(), secret="someone-elses-secret-000")
    assert r.status_code == 401 and r.text == "forged"
    r, _h, _b = post_generic(client, b"not even json", signature="v1=" + "0" * 64)
    assert r.status_code == 401  # a bad signature is refused before the body is parsed
    r, _h, _b = post_generic(client, notification(), ts=int(time.time()) - 3600)
    assert r.status_code == 401 and r.text == "stale"
    ok, headers, raw = post_generic(client, notification())
    assert ok.status_code == 200
    replay = client.post("/webhooks/payments/demo-shop", content=raw, headers=headers)
    assert replay.status_code == 409 and replay.text == "replayed"
    r = client.post("/webhooks/payments/no-such-shop", content=raw, headers=headers)
    assert r.status_code == 401
    assert files(cfg.database.url) == n0 + 1  # only the genuine one


def test_a_bad_field_is_named_and_nothing_is_written(setup):
    cfg, client = setup
    n0 = files(cfg.database.url)
    for body, words in ((notification(amount="58.001"), "amount='58.001': 58.001 has more decimals than CNY allows"),
                        (notification(source="orders"), "source='orders': not a channel source"),
                        (notification(occurred_at="yesterday"), "occurred_at='yesterday': not an ISO-8601"),
                        (notification(colour="red"), "unknown field(s) colour"),
                        ({k: v for k, v in notification().items() if k != "txn_id"}, "txn_id: missing")):
        r, _h, _b = post_generic(client, body)
        assert r.status_code == 400, body
    assert files(cfg.database.url) == n0


# -- Stripe ------------------------------------------------------------------------------------

def test_stripe_payment_intent_that_matches_our_order_is_recorded_once_with_its_charge(setup, slack):
    cfg, client = setup
    r, _h, _b = post_stripe(client, "payment_intent.succeeded")
    assert r.status_code == 200, r.text
    assert r.json()["check"] == "agrees"  # $120.00 = ¥852, above ¥500: large, and it matches ST-1
    [rec] = notified(cfg.database.url)
    assert (rec.kind, rec.ref, rec.txn_id, rec.order_id, rec.amount, rec.currency, rec.payer) == (
        "payment", "pi_3QaRecon0001", "pi_3QaRecon0001", "ST-1", 12000, "USD", "buyer@example.com")
    assert cards(slack) == []


def test_stripe_charge_that_does_not_add_up_alerts(setup, slack):
    cfg, client = setup
    r, _h, _b = post_stripe(client, "charge.succeeded")
    assert r.status_code == 200 and r.json()["check"] == "mismatch"
    assert client.app.state.conversation.drain()
    [b] = realtime_breaks(cfg.database.url)
    assert (b.type, b.order_id, b.txn_id, b.internal_amount, b.channel_amount, b.currency) == (
        "amount_mismatch", "ST-2", "pi_3QaRecon0002", 20000, 25000, "USD")
    assert len(cards(slack)) == 1


def test_stripe_refund_our_books_do_not_have_alerts(setup, slack):
    cfg, client = setup
    r, _h, _b = post_stripe(client, "charge.refunded")
    assert r.status_code == 200 and r.json()["check"] == "mismatch"
    [b] = realtime_breaks(cfg.database.url)
    assert b.type == "status_mismatch" and b.channel_amount == -12000
    [rec] = notified(cfg.database.url)
    assert (rec.kind, rec.ref, rec.amount) == ("refund", "ch_3QaRecon0001:refunded:12000", -12000)
    assert client.app.state.conversation.drain() and len(cards(slack)) == 1


def test_stripe_signature_forged_stale_replayed_and_other_events(setup):
    cfg, client = setup
    r, _h, _b = post_stripe(client, "charge.succeeded", secret="whsec_NotTheEndpointSecret000000")
    assert r.status_code == 401 and r.text == "forged"
    r, _h, _b = post_stripe(client, "charge.succeeded", ts=int(time.time()) - 3600)
    assert r.status_code == 401 and r.text == "stale"
    ok, headers, payload = post_stripe(client, "charge.succeeded")
    assert ok.status_code == 200
    replay = client.post("/webhooks/stripe/demo-shop/stripe", content=payload, headers=headers)
    assert replay.status_code == 409
    redelivered, _h, _b = post_stripe(client, "charge.succeeded", ts=int(time.time()) + 1)  # Stripe's own retry
    assert redelivered.status_code == 200 and redelivered.json()["recorded"] is False
    other = json.dumps({"id": "evt_RecOnCustomer", "object": "event", "type": "customer.created", "created": 1795168800,
                        "data": {"object": {"id": "cus_RecOn", "object": "customer"}}}).encode()
    r = client.post("/webhooks/stripe/demo-shop/stripe", content=other, headers=stripe_signed(other))
    assert r.status_code == 200 and r.json() == {"ignored": "customer.created"}
    r = client.post("/webhooks/stripe/demo-shop/wechatpay", content=other, headers=stripe_signed(other))
    assert r.status_code == 401  # no Stripe secret on that source
    assert len(notified(cfg.database.url)) == 1


def test_notifications_are_not_counted_as_the_days_statement(setup):
    """A notification is not the channel's statement: the day is not 'arrived' for completeness,
    and the run does not count the payment twice."""
    from core.completeness import arrived
    from core.runs import run_day

    cfg, client = setup
    post_generic(client, notification(amount="5800.00", id="wx-ok"))
    assert not arrived(cfg.database.url, "demo-shop", "wechatpay", __import__("datetime").date(2026, 11, 20))
    summary = run_day(cfg, cfg.merchants[0], __import__("datetime").date(2026, 11, 20))
    wx = next(s for s in summary.sources if s.source == "wechatpay")
    assert wx.channel_payments == 0

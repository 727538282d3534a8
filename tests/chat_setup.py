"""Shared setup of the chat tests: a configuration pointing at the fakes, users, breaks."""

from __future__ import annotations

import json
from datetime import date

from sqlmodel import Session

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_APP_TOKEN = "xapp-1-A0RECON-1-fakeapptoken"
TG_TOKEN = "123456:ABC-fake-token"
TG_SECRET = "webhook-secret-0123456789"
WECOM = dict(corp_id="wx5823bf96d3bd56c7", agent_id=1000002, secret="corp-app-secret", token="QDG6eK",
             encoding_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C")
SLACK_CHANNEL, TG_CHAT, WECOM_USERS = "C0FIN", "-100500", "alice|bob"
DAY = date(2026, 11, 20)


# The secrets as a config file refers to them (`${NAME}`), for tests that run recon as a process
ENV_SECRETS = {"SLACK_SIGNING_SECRET": SLACK_SECRET, "TELEGRAM_SECRET": TG_SECRET,
               "WECOM_AES_KEY": WECOM["encoding_aes_key"]}


def platforms_toml(slack, telegram, wecom, secrets_from_env: bool = False) -> str:
    """The [chat.slack], [chat.telegram] and [chat.wecom] sections for the three fakes; with
    `secrets_from_env`, the secrets as ${...} references to ENV_SECRETS' names."""
    secret = ({k: f"${{{k}}}" for k in ENV_SECRETS} if secrets_from_env else ENV_SECRETS)
    return f"""
[chat.slack]
bot_token = "xoxb-fake"
signing_secret = "{secret['SLACK_SIGNING_SECRET']}"
base_url = "{slack.base_url}"
[chat.telegram]
bot_token = "{TG_TOKEN}"
secret_token = "{secret['TELEGRAM_SECRET']}"
base_url = "{telegram.base_url}"
[chat.wecom]
corp_id = "{WECOM['corp_id']}"
agent_id = {WECOM['agent_id']}
secret = "{WECOM['secret']}"
token = "{WECOM['token']}"
encoding_aes_key = "{secret['WECOM_AES_KEY']}"
base_url = "{wecom.base_url}"
"""


def chat_config(db_url: str, slack=None, telegram=None, wecom=None, routes=None, slack_mode: str = "http",
                telegram_mode: str = "webhook", **chat):
    from core.config import from_dict

    section: dict = {"two_approvers_from": "1000.00", "confirm_from": "500.00", **chat}
    default_routes = []
    if slack:
        section["slack"] = {"bot_token": "xoxb-fake", "base_url": slack.base_url, "mode": slack_mode,
                            **({"app_token": SLACK_APP_TOKEN} if slack_mode == "socket"
                               else {"signing_secret": SLACK_SECRET})}
        default_routes.append({"merchant": "*", "channel": "slack", "target": SLACK_CHANNEL})
    if telegram:
        section["telegram"] = {"bot_token": TG_TOKEN, "base_url": telegram.base_url, "mode": telegram_mode,
                               **({"secret_token": TG_SECRET} if telegram_mode == "webhook"
                                  else {"poll_timeout_seconds": 5})}
        default_routes.append({"merchant": "demo-shop", "channel": "telegram", "target": TG_CHAT})
    if wecom:
        section["wecom"] = {**WECOM, "base_url": wecom.base_url}
        default_routes.append({"merchant": "demo-shop", "channel": "wecom", "target": WECOM_USERS})
    section["routes"] = routes if routes is not None else (default_routes or [{"merchant": "*", "channel": "console"}])
    sources = [
        {"name": "orders", "kind": "orders"},
        {"name": "wechatpay", "kind": "wechatpay", "settlement_lag_days": 1, "fee_rate": "0.006"},
        {"name": "alipay", "kind": "alipay", "settlement_lag_days": 1, "fee_rate": "0.006"},
    ]
    return from_dict({
        "database": {"url": db_url},
        "fx": {"rates": {"USD/CNY": "7.10"}},
        "merchants": [{"id": "demo-shop", "name": "Demo", "timezone": "Asia/Shanghai", "currency": "CNY",
                       "sources": sources},
                      {"id": "other-shop", "name": "Other", "timezone": "UTC", "currency": "CNY"}],
        "chat": section,
    })


def seed_break(url: str, difference: int = -3200, merchant: str = "demo-shop", btype: str = "short",
               order_id: str = "W-1005", status: str = "open", day: date = DAY, source: str = "wechatpay") -> int:
    """One break as a run would have stored it (with its merchant and run rows)."""
    from models.db import get_engine
    from models.tables import Break, Merchant, ReconRun

    with Session(get_engine(url)) as s:
        if s.get(Merchant, merchant) is None:
            s.add(Merchant(id=merchant, name=merchant, timezone="Asia/Shanghai", currency="CNY"))
        run = ReconRun(merchant_id=merchant, business_day=day, status="done", stats=json.dumps({
            source: {"internal_payments": 10, "internal_amount": 100000, "channel_payments": 9,
                     "channel_amount": 96800, "matched": 9, "fees": 581, "in_transit": 0}}))
        s.add(run)
        s.flush()
        b = Break(merchant_id=merchant, business_day=day, source=source, type=btype, status=status,
                  key=f"{source}:{btype}:payment:internal:{order_id}", order_id=order_id, txn_id=None,
                  internal_amount=-difference if difference < 0 else None,
                  channel_amount=difference if difference > 0 else None, difference=difference, currency="CNY",
                  rule="exact_order_id", explanation=f"Order {order_id}: a difference of {difference}.",
                  evidence=json.dumps([{"side": "internal", "file": "/data/orders.csv", "line": 12}]),
                  first_run_id=run.id, last_run_id=run.id)
        s.add(b)
        s.commit()
        return b.id


def people(url: str) -> dict:
    """alice, bob, carol: approvers; rita: reviewer; vic: viewer; otto: approver of other-shop only;
    lim: approver up to 10.00. Each linked on every platform as <platform id>."""
    from bot.users import add_user, link_identity

    spec = {
        "alice": ("approver", "*", None, "U0ALICE", "1001"), "bob": ("approver", "*", None, "U0BOB", "1002"),
        "carol": ("approver", "*", None, "U0CAROL", "1003"), "rita": ("reviewer", "*", None, "U0RITA", "1004"),
        "vic": ("viewer", "*", None, "U0VIC", "1005"), "otto": ("approver", "other-shop", None, "U0OTTO", "1006"),
        "lim": ("approver", "*", "10.00", "U0LIM", "1007"),
    }
    out = {}
    for name, (role, scope, limit, slack_id, tg_id) in spec.items():
        out[name] = add_user(url, name, role, scope, limit)
        link_identity(url, name, "slack", slack_id)
        link_identity(url, name, "telegram", tg_id)
        link_identity(url, name, "wecom", name)
    return out


class VirtualClock:
    """Time that passes only when someone waits: a Telegram Pacer's clock and sleep in tests,
    so pacing is asserted (every wait is recorded) without a test ever sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def pacer(self):
        from channels.telegram import Pacer

        return Pacer(clock=self, sleep=self.sleep)

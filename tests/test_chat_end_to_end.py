"""A break found by `recon run` reaches Slack, Telegram and WeCom as a card with buttons; a
signed click approves it once and edits the card; `/recon today` answers on all three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import (ENV_SECRETS, SLACK_CHANNEL, SLACK_SECRET, TG_CHAT, TG_SECRET, TG_TOKEN, WECOM, chat_config,
                        people, platforms_toml)
from conftest import EXAMPLES, demo_config_toml
from chat_fakes import (FakeSlack, FakeTelegram, FakeWecom, slack_click_body, slack_command_body, slack_signed,
                        telegram_click, telegram_command, telegram_headers, wecom_click_xml, wecom_post, wecom_text_xml)
from models.db import get_engine
from models.tables import Adjustment, AlertCard, AuditEvent, Break

RECON = str(Path(sys.executable).parent / "recon")


@pytest.fixture
def fakes():
    f = FakeSlack(), FakeTelegram(TG_TOKEN), FakeWecom()
    yield f
    for x in f:
        x.close()


def test_recon_run_posts_cards_and_one_signed_click_per_platform_approves_once(tmp_path, fakes):
    slack, tg, wecom = fakes
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    cfg = chat_config(url, slack=slack, telegram=tg, wecom=wecom)
    # the same configuration as a file, with the secrets in the environment, for the real CLI
    chat = cfg.chat
    routes = "\n".join(f'[[chat.routes]]\nmerchant = "{r.merchant}"\nchannel = "{r.channel}"\ntarget = "{r.target}"'
                       for r in chat.routes)
    (tmp_path / "recon.toml").write_text(demo_config_toml(url) + f"""
[chat]
two_approvers_from = "1000.00"
max_cards_per_run = 2
{platforms_toml(slack, tg, wecom, secrets_from_env=True)}
{routes}
""", encoding="utf-8")

    def recon(*args):
        r = subprocess.run([RECON, *args, "--config", str(tmp_path / "recon.toml")], capture_output=True, text=True,
                           env={**os.environ, **ENV_SECRETS, "COLUMNS": "200"}, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    recon("db", "upgrade")
    recon("ingest", *[str(p) for p in sorted(EXAMPLES.glob("*_2026-11-20.csv")) + sorted(EXAMPLES.glob("*20261120*"))])
    recon("run", "--day", "2026-11-20")

    # every platform got the alipay breaks as cards of their own (two: too few for a digest)
    # and wechatpay's five small ones as one digest, with a button for the three auto-adjustable
    with Session(get_engine(url)) as s:
        open_ids = list(s.exec(select(Break.id).where(Break.status == "open")).all())
        cards = s.exec(select(AlertCard)).all()
        posted = {(m.channel, m.break_id): m for m in cards if m.break_id is not None}
        wechat_open = s.exec(select(Break.id).where(Break.status == "open", Break.source == "wechatpay")).all()
    assert len(open_ids) == 7 and len(wechat_open) == 5
    slack_cards = [c for c in slack.called("chat.postMessage") if any(b["type"] == "actions" for b in c["blocks"])]
    tg_cards = [c for c in tg.called("sendMessage") if "reply_markup" in c]
    wecom_cards = [c for c in wecom.called("message/send") if c["msgtype"] == "template_card"]
    assert len(slack_cards) == len(tg_cards) == len(wecom_cards) == 3
    assert sum(1 for k in posted if k[0] == "slack") == 2  # remembered, to be edited in place later
    assert all(m.message_id for m in cards) and len(cards) == 9  # 3 cards on each of the 3 platforms
    digest = next(m["text"] for m in tg_cards if "open breaks" in m["text"])
    assert digest.startswith("<b>demo-shop · wechatpay · 2026-11-20: 5 open breaks</b>")
    assert json.loads(next(m for m in tg_cards if "open breaks" in m["text"])["reply_markup"])[
        "inline_keyboard"][0][0]["text"] == "Approve 3 small adjustments"

    people(url)
    # the largest open break, as posted on each platform
    bid, ref = next((b, m) for (ch, b), m in posted.items() if ch == "slack")
    with TestClient(create_app(chat_config(url, slack=slack, telegram=tg, wecom=wecom))) as client:
        # Slack: the click's value is what the card carried
        slack_card = next(c for c in slack_cards if f'"{bid}:1"' in json.dumps(c["blocks"]))
        value = next(e["value"] for b in slack_card["blocks"] if b["type"] == "actions" for e in b["elements"]
                     if e["action_id"].startswith("recon.approve"))
        body = slack_click_body("recon.approve.0", value, user="U0ALICE", ts=ref.message_id)
        assert client.post("/slack/events", content=body, headers=slack_signed(SLACK_SECRET, body)).status_code == 200
        [upd] = slack.wait_for("chat.update")
        assert (upd["channel"], upd["ts"]) == (SLACK_CHANNEL, ref.message_id)
        # Telegram and WeCom: clicks on the same break's card lose, and are told who won
        tg_ref = posted[("telegram", bid)]
        client.post("/telegram/webhook", content=telegram_click(900, f"approve|{value}", user_id=1002,
                                                               message_id=int(tg_ref.message_id)),
                    headers=telegram_headers(TG_SECRET))
        assert client.app.state.conversation.drain()  # answered first, worked after
        assert tg.called("answerCallbackQuery")[0]["text"].startswith("Already done: Approved by alice")
        [edit] = tg.called("editMessageText")
        assert (edit["chat_id"], edit["message_id"]) == (TG_CHAT, tg_ref.message_id)
        wq, wb = wecom_post(WECOM["token"], WECOM["encoding_aes_key"], WECOM["corp_id"], WECOM["agent_id"],
                            wecom_click_xml(WECOM["corp_id"], WECOM["agent_id"], "carol", f"approve|{value}",
                                            posted[("wecom", bid)].message_id, "RC-e2e"))
        assert client.post("/wecom/callback", params=wq, content=wb).status_code == 200
        assert client.app.state.conversation.drain()
        [wupd] = wecom.called("message/update_template_card")
        assert (wupd["response_code"], wupd["agentid"]) == ("RC-e2e", WECOM["agent_id"])

        # /recon today on all three (the demo day, asked for by date)
        body = slack_command_body("2026-11-20", user="U0BOB")
        today = client.post("/slack/events", content=body, headers=slack_signed(SLACK_SECRET, body)).json()
        assert today["blocks"][0]["text"]["text"] == "demo-shop · 2026-11-20"
        client.post("/telegram/webhook", content=telegram_command(901, "/recon 2026-11-20", user_id=1002),
                    headers=telegram_headers(TG_SECRET))
        assert client.app.state.conversation.drain()
        assert tg.called("sendMessage")[-1]["text"].startswith("<b>demo-shop · 2026-11-20</b>\n<b>alipay</b>: ours")
        wq, wb = wecom_post(WECOM["token"], WECOM["encoding_aes_key"], WECOM["corp_id"], WECOM["agent_id"],
                            wecom_text_xml(WECOM["corp_id"], WECOM["agent_id"], "bob", "/recon 2026-11-20"))
        client.post("/wecom/callback", params=wq, content=wb)
        assert client.app.state.conversation.drain()
        # the last text message (the day's chart may follow it as an image message)
        answer = [m for m in wecom.called("message/send") if m["msgtype"] == "markdown"][-1]["markdown"]["content"]
        assert answer.startswith("**demo-shop · 2026-11-20**\n> alipay: 我方 ")  # in Chinese on WeCom

    with Session(get_engine(url)) as s:
        assert s.get(Break, bid).status == "adjusted"
        assert len(s.exec(select(Adjustment).where(Adjustment.break_id == bid)).all()) == 1
        [ev] = s.exec(select(AuditEvent).where(AuditEvent.action == "approve")).all()
        assert (ev.actor, ev.platform, ev.subject_id) == ("alice", "slack", str(bid))
        assert ev.request_hash and len(ev.request_hash) == 64


def test_healthz_and_metrics(db_url):
    cfg = chat_config(db_url)
    with TestClient(create_app(cfg)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "platforms": []}
        text = client.get("/metrics").text
        assert "# TYPE recon_inbound_requests_total counter" in text
        assert client.post("/slack/events").status_code == 404  # no endpoint for an unconfigured platform


def test_recon_serve_as_its_own_process(tmp_path):
    """The real entry point: pooled SQLite, uvicorn, a proxy trusted, one signed click."""
    import httpx

    from chat_fakes import free_port
    from chat_setup import seed_break
    from models.db import upgrade

    slack = FakeSlack()
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    people(url)
    bid = seed_break(url, -3200)
    port = free_port()
    (tmp_path / "recon.toml").write_text(f"""
[database]
url = "{url}"
[[merchants]]
id = "demo-shop"
name = "Demo"
[chat.server]
port = {port}
forwarded_allow_ips = ["127.0.0.1"]
[chat.slack]
bot_token = "xoxb-fake"
signing_secret = "{SLACK_SECRET}"
base_url = "{slack.base_url}"
""", encoding="utf-8")
    proc = subprocess.Popen([RECON, "serve", "--config", str(tmp_path / "recon.toml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(base + "/healthz", timeout=1).json() == {"status": "ok", "platforms": ["slack"]}:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("recon serve did not come up")
        body = slack_click_body("recon.approve.0", f"{bid}:1", ts="1764000009.000100")
        r = httpx.post(base + "/slack/events", content=body, headers={**slack_signed(SLACK_SECRET, body),
                                                                     "X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 200
        [upd] = slack.wait_for("chat.update")
        assert (upd["channel"], upd["ts"]) == (SLACK_CHANNEL, "1764000009.000100")
        forged = httpx.post(base + "/slack/events", content=body,
                            headers={**slack_signed("wrong", body), "X-Forwarded-For": "203.0.113.7"})
        assert forged.status_code == 401
        assert 'outcome="accepted",platform="slack"} 1.0' in httpx.get(base + "/metrics").text
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
        slack.close()
    # logged, with the client's address as the trusted proxy (127.0.0.1) forwarded it
    assert "refused slack request from 203.0.113.7: forged" in err

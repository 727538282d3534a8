"""Slack through `recon serve`: signed requests in, exact Web API calls out (a local fake)."""

from __future__ import annotations

import json
import re
import time

import pytest
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import SLACK_CHANNEL, SLACK_SECRET, chat_config, people, seed_break
from chat_fakes import slack_click_body, slack_command_body, slack_signed
from sqlmodel import Session, select
from models.db import get_engine
from models.tables import Adjustment, AuditEvent, Break


@pytest.fixture
def client(db_url, slack):
    cfg = chat_config(db_url, slack=slack)
    people(db_url)
    with TestClient(create_app(cfg)) as c:
        c.cfg = cfg
        yield c


def post(client, body: bytes, **sign):
    return client.post("/slack/events", content=body, headers=slack_signed(SLACK_SECRET, body, **sign))


def _break(url, bid):
    with Session(get_engine(url)) as s:
        return s.get(Break, bid)


def test_slash_command_answers_in_the_response(client):
    r = post(client, slack_command_body("/recon pending".removeprefix("/recon ")))
    assert r.status_code == 200
    body = r.json()
    assert body["response_type"] == "in_channel"
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Open breaks", "emoji": True}}
    r = post(client, slack_command_body("approve everything"))
    assert "I did not understand" in json.dumps(r.json(), ensure_ascii=False)


def test_a_click_acks_at_once_then_approves_and_edits_the_card(client, slack):
    bid = seed_break(client.cfg.database.url, -3200)
    started = time.perf_counter()
    r = post(client, slack_click_body("recon.approve.0", f"{bid}:1", ts="1764000001.000100"))
    assert r.status_code == 200 and time.perf_counter() - started < 3
    [update] = slack.wait_for("chat.update")
    assert (update["channel"], update["ts"]) == (SLACK_CHANNEL, "1764000001.000100")
    assert not any(b["type"] == "actions" for b in update["blocks"])  # buttons removed
    assert "Approved by alice at" in json.dumps(update["blocks"])
    assert _break(client.cfg.database.url, bid).status == "adjusted"


def test_a_double_click_approves_once_and_tells_the_loser_who_won(client, slack):
    url = client.cfg.database.url
    bid = seed_break(url, -3200)
    for user in ("U0ALICE", "U0BOB"):  # two distinct, validly signed deliveries of the same button
        assert post(client, slack_click_body("recon.approve.0", f"{bid}:1", user=user)).status_code == 200
    slack.wait_for("chat.update", 2)
    [note] = slack.wait_for("chat.postEphemeral")
    assert note["channel"] == SLACK_CHANNEL and note["text"].startswith("Already done: Approved by ")
    with Session(get_engine(url)) as s:
        assert len(s.exec(select(Adjustment).where(Adjustment.break_id == bid)).all()) == 1
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "approve")).all()) == 1


@pytest.mark.parametrize("case", ["forged", "stale", "replayed", "unsigned"])
def test_forged_stale_replayed_and_unsigned_requests_are_refused(client, slack, case, caplog):
    url = client.cfg.database.url
    bid = seed_break(url, -3200)
    body = slack_click_body("recon.approve.0", f"{bid}:1")
    if case == "forged":
        headers = slack_signed("not-the-secret", body)
    elif case == "stale":
        headers = slack_signed(SLACK_SECRET, body, timestamp=int(time.time()) - 301)
    elif case == "unsigned":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    else:
        headers = slack_signed(SLACK_SECRET, body)
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        slack.wait_for("chat.update")
    r = client.post("/slack/events", content=body, headers=headers)
    assert r.status_code == {"forged": 401, "stale": 401, "replayed": 409, "unsigned": 400}[case]
    assert "refused slack request" in caplog.text
    time.sleep(0.2)
    expected = 1 if case == "replayed" else 0
    assert len(slack.called("chat.update")) == expected
    assert (_break(url, bid).status == "adjusted") == (case == "replayed")
    metrics = client.get("/metrics").text
    refused = {"forged": "forged", "stale": "stale", "replayed": "replayed", "unsigned": "malformed"}[case]
    assert f'recon_inbound_requests_total{{outcome="refused_{refused}",platform="slack"}}' in metrics


def test_a_tampered_body_with_a_valid_looking_signature_is_refused(client):
    bid = seed_break(client.cfg.database.url, -3200)
    body = slack_click_body("recon.resolve.0", f"{bid}:1")
    headers = slack_signed(SLACK_SECRET, body)
    tampered = body.replace(b"U0ALICE", b"U0BOB__")
    assert client.post("/slack/events", content=tampered, headers=headers).status_code == 401


def test_an_unlinked_user_is_refused_and_told_why(client, slack):
    bid = seed_break(client.cfg.database.url, -3200)
    post(client, slack_click_body("recon.approve.0", f"{bid}:1", user="U0STRANGER"))
    [note] = slack.wait_for("chat.postEphemeral")
    assert note["user"] == "U0STRANGER" and "/recon link" in note["text"]
    assert slack.called("chat.update") == [] and _break(client.cfg.database.url, bid).status == "open"


def test_429_is_retried_after_retry_after_and_5xx_with_backoff(client, slack):
    bid = seed_break(client.cfg.database.url, -3200)
    slack.fail("chat.update", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
    slack.fail("chat.update", 503, {"ok": False, "error": "service_unavailable"})
    started = time.monotonic()
    post(client, slack_click_body("recon.resolve.0", f"{bid}:1"))
    calls = slack.wait_for("chat.update", 3)
    assert time.monotonic() - started >= 1.0 + 0.5  # Retry-After: 1, then the first backoff step
    assert calls[0] == calls[2]  # the same edit, delivered once it went through
    assert _break(client.cfg.database.url, bid).status == "resolved"


def test_cards_carry_buttons_with_opaque_values_and_a_confirm_above_the_threshold(db_url, slack):
    from bot.actions import Workflow
    from channels.slack import SlackChannel, blocks

    cfg = chat_config(db_url, slack=slack)
    big = seed_break(db_url, -80000)  # ¥800 >= confirm_from ¥500
    ch = SlackChannel.from_config(cfg)
    ref = ch.send(SLACK_CHANNEL, Workflow(cfg).card(big))
    [sent] = slack.called("chat.postMessage")
    assert ref.target == SLACK_CHANNEL and re.fullmatch(r"\d+\.000100", ref.message_id)  # the ts Slack gave
    actions = next(b for b in sent["blocks"] if b["type"] == "actions")
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("recon.approve.0", f"{big}:1"), ("recon.assign_me.1", f"{big}:1"), ("recon.assign_to.2", f"{big}:1"),
        ("recon.snooze.3", f"{big}:1"), ("recon.resolve.4", f"{big}:1")]
    assert actions["elements"][0]["confirm"]["text"]["text"] == "Approve an adjustment of ¥800.00?"
    small = Workflow(cfg).card(seed_break(db_url, -3200, order_id="W-9"))
    assert "confirm" not in next(b for b in blocks(small) if b["type"] == "actions")["elements"][0]

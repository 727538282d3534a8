"""Telegram through `recon serve`: secret-token webhooks in, exact Bot API calls out (a local fake)."""

from __future__ import annotations

import json
import time

import pytest
from sqlmodel import Session
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import TG_CHAT, TG_SECRET, TG_TOKEN, chat_config, people, seed_break
from chat_fakes import FakeTelegram, telegram_click, telegram_command, telegram_headers
from models.db import get_engine
from models.tables import Break


@pytest.fixture
def tg():
    fake = FakeTelegram(TG_TOKEN)
    yield fake
    fake.close()


@pytest.fixture
def client(db_url, tg):
    cfg = chat_config(db_url, telegram=tg)
    people(db_url)
    with TestClient(create_app(cfg)) as c:
        c.cfg = cfg
        yield c


def post(client, body: bytes, secret: str = TG_SECRET):
    """Deliver an update; the answer comes first, the work after it: wait for the work."""
    r = client.post("/telegram/webhook", content=body, headers=telegram_headers(secret))
    assert client.app.state.conversation.drain()
    return r


def _status(url, bid):
    with Session(get_engine(url)) as s:
        return s.get(Break, bid).status


def test_recon_today_is_answered_in_the_chat(client, tg):
    assert post(client, telegram_command(1, "/recon@recon_bot today")).status_code == 200
    [msg] = tg.called("sendMessage")
    assert msg["chat_id"] == TG_CHAT and msg["parse_mode"] == "HTML"
    assert msg["text"].startswith("<b>demo-shop · ") and "Not reconciled yet" in msg["text"]


def test_a_click_answers_the_callback_and_edits_the_message(client, tg):
    bid = seed_break(client.cfg.database.url, -3200)
    r = post(client, telegram_click(10, f"approve|{bid}:1", message_id=555))
    assert r.status_code == 200
    [answer] = tg.called("answerCallbackQuery")
    assert answer["callback_query_id"] == "cq10" and answer["text"].startswith("Approved by alice")
    [edit] = tg.called("editMessageText")
    assert (edit["chat_id"], edit["message_id"]) == (TG_CHAT, "555")
    assert "reply_markup" not in edit  # no buttons left
    assert "<b>Approved by alice at " in edit["text"]
    assert _status(client.cfg.database.url, bid) == "adjusted"


def test_every_callback_is_answered_even_when_refused(client, tg):
    bid = seed_break(client.cfg.database.url, -3200)
    post(client, telegram_click(20, f"approve|{bid}:1", user_id=999))  # not linked
    post(client, telegram_click(21, f"approve|{bid}:1", user_id=1005))  # vic, a viewer
    post(client, telegram_click(22, "approve|garbage"))  # not one of our buttons
    answers = tg.called("answerCallbackQuery")
    assert [a["callback_query_id"] for a in answers] == ["cq20", "cq21", "cq22"]
    assert all(a["show_alert"] == "true" for a in answers)
    assert "/recon link" in answers[0]["text"] and "viewer" in answers[1]["text"]
    assert "not one of ours" in answers[2]["text"]
    assert tg.called("editMessageText") == [] and _status(client.cfg.database.url, bid) == "open"


def test_a_double_click_approves_once(client, tg):
    bid = seed_break(client.cfg.database.url, -3200)
    post(client, telegram_click(30, f"approve|{bid}:1", user_id=1001))
    post(client, telegram_click(31, f"approve|{bid}:1", user_id=1002))
    first, second = tg.called("answerCallbackQuery")
    assert first["text"].startswith("Approved by alice")
    assert second["text"].startswith("Already done: Approved by alice")
    assert len(tg.called("editMessageText")) == 2  # the loser's card is refreshed too


@pytest.mark.parametrize("case", ["forged", "missing", "replayed", "stale"])
def test_forged_replayed_and_stale_updates_are_refused(client, tg, case):
    bid = seed_break(client.cfg.database.url, -3200)
    if case == "forged":
        r = post(client, telegram_click(40, f"resolve|{bid}:1"), secret="guessed-secret-0123456789")
    elif case == "missing":
        r = client.post("/telegram/webhook", content=telegram_click(40, f"resolve|{bid}:1"))
    elif case == "replayed":
        body = telegram_click(40, f"resolve|{bid}:1")
        assert post(client, body).status_code == 200
        r = post(client, body)
    else:
        r = post(client, telegram_command(41, "/recon today", date=int(time.time()) - 600))
    assert r.status_code == {"forged": 401, "missing": 401, "replayed": 409, "stale": 401}[case]
    assert len(tg.called("answerCallbackQuery")) == (1 if case == "replayed" else 0)
    assert tg.called("sendMessage") == []


def test_429_retry_after_is_honoured(client, tg):
    bid = seed_break(client.cfg.database.url, -3200)
    tg.fail("editMessageText", 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                                     "parameters": {"retry_after": 1}})
    tg.fail("editMessageText", 500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})
    started = time.monotonic()
    post(client, telegram_click(50, f"resolve|{bid}:1"))
    assert len(tg.called("editMessageText")) == 3 and time.monotonic() - started >= 1.5


def test_pacing_keeps_one_message_a_second_per_chat_and_twenty_a_minute_per_group():
    from channels.telegram import Pacer

    now = [1000.0]
    waits = []

    def sleep(d):
        waits.append(d)
        now[0] += d

    p = Pacer(clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        p.wait("42")  # a private chat
    assert waits == [1.0, 1.0]
    waits.clear()
    for _ in range(21):
        p.wait("-100500")  # a group: 1/s for 20 messages, then wait for the minute to pass
    assert waits[:19] == [1.0] * 19 and waits[19] == pytest.approx(41.0)
    assert sum(waits) == pytest.approx(60.0)


def test_send_renders_an_inline_keyboard_with_opaque_callback_data(db_url, tg):
    from bot.actions import Workflow
    from channels.telegram import TelegramChannel

    cfg = chat_config(db_url, telegram=tg)
    bid = seed_break(db_url, -3200)
    ref = TelegramChannel.from_config(cfg).send(TG_CHAT, Workflow(cfg).card(bid))
    [sent] = tg.called("sendMessage")
    rows = json.loads(sent["reply_markup"])["inline_keyboard"]
    assert [[b["callback_data"] for b in row] for row in rows] == [
        [f"approve|{bid}:1", f"assign_me|{bid}:1"], [f"assign_to|{bid}:1", f"snooze|{bid}:1"], [f"resolve|{bid}:1"]]
    assert ref.target == TG_CHAT and ref.message_id.isdigit()

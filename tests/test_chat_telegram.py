"""Telegram through `recon serve`: secret-token webhooks in, exact Bot API calls out (a local fake)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlmodel import Session
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import TG_CHAT, TG_SECRET, VirtualClock, chat_config, people, seed_break
from chat_fakes import telegram_click, telegram_command, telegram_headers
from models.db import get_engine
from models.tables import Break


@pytest.fixture
def client(db_url, tg):
    cfg = chat_config(db_url, telegram=tg)
    people(db_url)
    with TestClient(create_app(cfg)) as c:
        c.cfg = cfg
        c.clock = VirtualClock()  # messages and edits are paced on it: no test waits for Telegram's slots
        c.app.state.channels["telegram"].pacer = c.clock.pacer()
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
    clock = VirtualClock()
    p = clock.pacer()
    for _ in range(3):
        p.wait("42")  # a private chat
    assert clock.waits == [1.0, 1.0] and p.room("42") is None
    clock.waits.clear()
    assert p.room("-100500") == 20
    for _ in range(21):
        p.wait("-100500")  # a group: 1/s for 20 messages, then wait for the minute to pass
    assert clock.waits[:19] == [1.0] * 19 and clock.waits[19] == pytest.approx(41.0)
    assert sum(clock.waits) == pytest.approx(60.0)
    assert p.room("-100500") == 0  # 20 within the last minute
    clock.sleep(30)
    assert p.room("-100500") == 19  # those of more than a minute ago no longer count


def _paced(cfg, clock):
    from channels.telegram import TelegramChannel

    ch = TelegramChannel.from_config(cfg)
    ch.pacer = clock.pacer()
    return ch


def test_edits_wait_for_the_chats_slot_like_messages(db_url, tg):
    """Telegram counts an edit like a message (answerCallbackQuery is free)."""
    from bot.cards import text_card

    clock = VirtualClock()
    ch = _paced(chat_config(db_url, telegram=tg), clock)
    ref = ch.send(TG_CHAT, text_card("Card", ["v1"]))
    ch.update(ref, text_card("Card", ["v2"]))
    ch.update(ref, text_card("Card", ["v3"]))
    assert clock.waits == [1.0, 1.0]
    assert [e["text"] for e in tg.called("editMessageText")] == ["<b>Card</b>\n\nv2", "<b>Card</b>\n\nv3"]


class _Gate:
    """A pacer's sleep that holds the waiting thread until the test lets it go (no real time)."""

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    def sleep(self, _seconds: float) -> None:
        self.entered.set()
        assert self.go.wait(10)


def _held(db_url, tg):
    """A channel whose next edit of a just-sent card waits for its slot until released."""
    from bot.cards import text_card
    from channels.telegram import Pacer

    gate = _Gate()
    ch = _paced(chat_config(db_url, telegram=tg), VirtualClock())
    ref = ch.send(TG_CHAT, text_card("Card", ["sent"]))
    ch.pacer = Pacer(clock=lambda: 0.0, sleep=gate.sleep)
    ch.pacer.delay(TG_CHAT)  # the chat's slot for now is taken: the next edit waits
    return ch, ref, gate


def test_edits_of_one_message_waiting_for_their_slot_are_folded_into_the_newest(db_url, tg):
    from bot.cards import text_card

    ch, ref, gate = _held(db_url, tg)
    first = threading.Thread(target=ch.update, args=(ref, text_card("Card", ["click 1"])))
    first.start()
    assert gate.entered.wait(10)  # the first edit waits for the slot...
    for n in (2, 3):  # ...and the next clicks' edits join it and return at once
        ch.update(ref, text_card("Card", [f"click {n}"]))
    assert tg.called("editMessageText") == []
    gate.go.set()
    first.join(10)
    [edit] = tg.called("editMessageText")
    assert edit["text"] == "<b>Card</b>\n\nclick 3" and edit["message_id"] == ref.message_id


def test_a_retried_edit_sends_the_newest_card_not_the_one_it_started_with(db_url, tg):
    from bot.cards import text_card
    from bot.delivery import deliver

    ch, ref, gate = _held(db_url, tg)
    tg.fail("editMessageText", 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    old = text_card("Card", ["click 1"])
    first = threading.Thread(target=deliver, args=("telegram", "edit", lambda: ch.update(ref, old)),
                             kwargs={"sleep": lambda _s: None})
    first.start()
    assert gate.entered.wait(10)
    ch.update(ref, text_card("Card", ["click 2"]))  # folded into the waiting edit
    gate.go.set()
    first.join(10)
    edits = tg.called("editMessageText")  # the 502, then deliver()'s retry: both with click 2
    assert [e["text"] for e in edits] == ["<b>Card</b>\n\nclick 2"] * 2


def test_a_commands_cards_without_buttons_share_one_message(db_url):
    from bot.actions import Workflow
    from bot.cards import text_card
    from channels.telegram import MAX_TEXT, batches

    cfg = chat_config(db_url)
    with_buttons = Workflow(cfg).card(seed_break(db_url, -3200))
    texts = [text_card(f"Shop {i}", ["summary"]) for i in range(3)]
    out = batches([*texts, with_buttons, texts[0]])
    assert [m is not None for _t, m in out] == [False, True, False]
    assert out[0][0] == "\n\n".join(f"<b>Shop {i}</b>\n\nsummary" for i in range(3))
    long = [text_card("x" * 3000, []), text_card("y" * 3000, [])]
    assert len(batches(long)) == 2 and all(len(t) <= MAX_TEXT for t, _m in batches(long))


def test_a_group_with_little_room_left_this_minute_gets_fewer_cards_and_the_digest(db_url, tg):
    from bot.alerts import alert_merchant
    from chat_setup import DAY

    clock = VirtualClock()
    cfg = chat_config(db_url, telegram=tg)
    ch = _paced(cfg, clock)
    for _ in range(16):  # other merchants' cards went to this group in the last seconds
        ch.pacer.wait(TG_CHAT)
    clock.sleep(1)
    clock.waits.clear()
    assert ch.room(TG_CHAT) == 4
    for i in range(6):  # each above the alert threshold: a card of its own
        seed_break(db_url, -10000 * (i + 1), order_id=f"W-{i}", day=DAY)
    report = alert_merchant(cfg, {"telegram": ch}, "demo-shop")
    messages = tg.called("sendMessage")
    assert report.delivered == len(messages) == 4  # 3 cards and the digest: exactly the room there was
    assert report.deferred == 3
    assert messages[-1]["text"].startswith("<b>demo-shop · wechatpay · 2026-11-20: 3 open breaks</b>")
    assert ch.room(TG_CHAT) == 0 and max(clock.waits) <= 1.0  # nothing waited for the minute to pass
    # the 3 in the digest got no card yet: the next pass (a minute later) gives them cards,
    # and the digest, now empty, is edited to say so
    clock.sleep(60)
    alert_merchant(cfg, {"telegram": ch}, "demo-shop")
    assert sum(1 for m in tg.called("sendMessage") if "reply_markup" in m) == 6
    [edit] = tg.called("editMessageText")
    assert edit["text"].startswith("<b>demo-shop · wechatpay · 2026-11-20: nothing open</b>")


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

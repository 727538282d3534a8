"""Telegram in polling mode through `recon serve`: python-telegram-bot's Updater long-polls the
fake Bot API (getUpdates with offsets, after deleteWebhook); each update takes the webhook's
path from there, and the same Bot API calls go out."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select
from starlette.testclient import TestClient

from bot.server import create_app
from chat_fakes import FakeTelegram, telegram_click, telegram_command
from chat_setup import TG_CHAT, TG_TOKEN, VirtualClock, chat_config, people, seed_break
from models.db import get_engine
from models.tables import Adjustment, AuditEvent, Break


@pytest.fixture
def tg():
    fake = FakeTelegram(TG_TOKEN)
    fake.webhook_url = "https://old-host.example/telegram/webhook"  # left over from webhook mode
    yield fake
    fake.close()


@pytest.fixture
def cfg(db_url, tg):
    people(db_url)
    return chat_config(db_url, telegram=tg, telegram_mode="polling")


def _count(outcome: str) -> float:
    from bot.metrics import REGISTRY

    return REGISTRY.get_sample_value("recon_inbound_requests_total", {"platform": "telegram", "outcome": outcome}) or 0


def _offsets(tg, since: int = 0) -> list[int]:
    return [int(p.get("offset") or 0) for p in tg.called("getUpdates")[since:]]


def _confirmed(tg, offset: int, since: int = 0) -> None:
    """Until a getUpdates call (the `since`-th or later) has confirmed every update below
    `offset`: they were fetched and put in line to be taken."""
    deadline = time.monotonic() + 10
    while max(_offsets(tg, since), default=0) < offset:
        assert time.monotonic() < deadline, f"offsets asked: {_offsets(tg)}"
        time.sleep(0.01)


def _status(url, bid):
    with Session(get_engine(url)) as s:
        return s.get(Break, bid).status


def test_the_webhook_is_removed_before_polling_and_no_http_endpoint_is_served(cfg, tg):
    with TestClient(create_app(cfg)) as client:
        tg.wait_for("getUpdates")
        assert client.post("/telegram/webhook", content=b"{}").status_code == 404  # no public URL needed
        assert client.get("/healthz").json()["connections"] == {"telegram": "up"}
    names = [n for n, _p, _h in tg.calls]
    assert names.index("deleteWebhook") < names.index("getUpdates") and tg.webhook_url == ""
    [first, *_] = tg.called("getUpdates")
    assert first["timeout"] == "5" and first["allowed_updates"] == '["message", "callback_query"]'


def test_a_polled_click_is_answered_edits_the_card_and_every_update_is_taken_once(cfg, tg):
    url = cfg.database.url
    bid = seed_break(url, -3200)
    accepted, replayed = _count("accepted"), _count("refused_replayed")
    with TestClient(create_app(cfg)) as client:
        client.app.state.channels["telegram"].pacer = VirtualClock().pacer()  # no waiting for slots here
        tg.offer(telegram_click(10, f"approve|{bid}:1", message_id=555))
        tg.offer(telegram_click(11, f"approve|{bid}:1", user_id=1002, message_id=555))  # Bob, a moment later
        tg.offer(telegram_command(12, "/recon pending", user_id=1002))
        _confirmed(tg, 13)  # all three fetched, in order, and confirmed with the next offset
        assert client.app.state.conversation.drain()
        answers = tg.wait_for("answerCallbackQuery", 2)
    # both are worked at once, like two webhook deliveries: one wins, the other is told who
    texts = sorted(a["text"] for a in answers)
    assert sorted(a["callback_query_id"] for a in answers) == ["cq10", "cq11"]
    winner = texts[1].removeprefix("Approved by ").split()[0]
    assert winner in ("alice", "bob") and texts[0].startswith(f"Already done: Approved by {winner}")
    edits = tg.called("editMessageText")  # one or two: an edit waiting for its slot takes the newer card along
    assert {(e["chat_id"], e["message_id"]) for e in edits} == {(TG_CHAT, "555")}
    assert f"<b>Approved by {winner} at " in edits[-1]["text"] and "reply_markup" not in edits[-1]
    [reply] = tg.called("sendMessage")
    assert reply["chat_id"] == TG_CHAT and reply["text"].startswith("<b>Open breaks")
    assert _status(url, bid) == "adjusted"
    assert _count("accepted") - accepted == 3 and _count("refused_replayed") == replayed
    offsets = _offsets(tg)
    assert offsets == sorted(offsets) and offsets[-1] == 13  # stopping confirms what was fetched

    # The process died before confirming update 10, so Telegram offers it again to the next one:
    # the update_id is already recorded, so it is not acted on (or answered) a second time.
    tg.offer(telegram_click(10, f"approve|{bid}:1", message_id=555))
    restarted = len(tg.called("getUpdates"))
    with TestClient(create_app(cfg)):
        _confirmed(tg, 11, since=restarted)
    assert _offsets(tg, restarted)[0] == 0  # a new poller starts from whatever Telegram still holds
    assert _count("refused_replayed") - replayed == 1
    assert len(tg.called("answerCallbackQuery")) == 2 and len(tg.called("editMessageText")) == len(edits)
    with Session(get_engine(url)) as s:
        assert len(s.exec(select(Adjustment).where(Adjustment.break_id == bid)).all()) == 1
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "approve")).all()) == 1


def test_an_old_command_fetched_late_is_refused_as_stale(cfg, tg):
    stale = _count("refused_stale")
    tg.offer(telegram_command(30, "/recon today", date=int(time.time()) - 600))  # waited while nobody polled
    with TestClient(create_app(cfg)):
        _confirmed(tg, 31)
    assert _count("refused_stale") - stale == 1 and tg.called("sendMessage") == []


def test_setting_a_webhook_is_refused_in_polling_mode(cfg):
    from bot.transport import TransportError
    from channels.telegram import TelegramChannel

    with pytest.raises(TransportError, match="polling mode"):
        TelegramChannel.from_config(cfg).set_webhook("https://example.com/telegram/webhook")


def test_webhook_mode_needs_a_secret_token_and_polling_does_not(db_url):
    from core.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r'chat.telegram: mode = "webhook" needs secret_token'):
        from_dict({"database": {"url": db_url}, "chat": {"telegram": {"bot_token": TG_TOKEN}}})
    cfg = from_dict({"database": {"url": db_url}, "chat": {"telegram": {"bot_token": TG_TOKEN, "mode": "polling"}}})
    assert cfg.chat.telegram.secret_token is None and cfg.chat.telegram.poll_timeout_seconds == 30


def test_an_update_that_cannot_be_taken_now_is_tried_again_not_dropped(cfg, tg, caplog):
    """Telegram will not offer an update again once it is fetched: when the database refuses
    it, the poller keeps it and tries again (a webhook would answer 5xx and be re-posted)."""
    from sqlalchemy import text

    url = cfg.database.url
    bid = seed_break(url, -3200)
    with TestClient(create_app(cfg)) as client:
        client.app.state.channels["telegram"].listener.retry_wait = 0.01
        with get_engine(url).begin() as conn:  # where update ids are recorded: gone for a moment
            conn.execute(text("ALTER TABLE inbound_seen RENAME TO inbound_seen_away"))
        tg.offer(telegram_click(40, f"resolve|{bid}:1"))
        deadline = time.monotonic() + 10
        while caplog.text.count("Telegram update 40 not taken") < 2:  # tried, and tried again
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.01)
        with get_engine(url).begin() as conn:
            conn.execute(text("ALTER TABLE inbound_seen_away RENAME TO inbound_seen"))
        [answer] = tg.wait_for("answerCallbackQuery")
    assert answer["callback_query_id"] == "cq40" and _status(url, bid) == "resolved"

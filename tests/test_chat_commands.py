"""`/recon ...`: one grammar for every platform, and what each command answers."""

from __future__ import annotations

import pytest

from bot.commands import Command, Commands, parse
from chat_setup import DAY, chat_config, people, seed_break


@pytest.mark.parametrize("text, expected", [
    ("/recon today", Command("summary", day="today")),
    ("today", Command("summary", day="today")),
    ("/recon@recon_bot yesterday", Command("summary", day="yesterday")),
    ("/RECON Today", Command("summary", day="today")),
    ("recon 2026-11-20", Command("summary", day="2026-11-20")),
    ("/recon 今天", Command("summary", day="today")),
    ("/recon pending", Command("pending")),
    ("/recon 待处理", Command("pending")),
    ("/recon mine", Command("mine")),
    ("/recon run", Command("run", day="yesterday")),
    ("/recon run 2026-11-20", Command("run", day="2026-11-20")),
    ("/recon link 1a2b3c4d", Command("link", arg="1a2b3c4d")),
    ("/recon help", Command("help")),
    ("/recon", Command("help")),
    ("", Command("help")),
    ("/recon approve everything", Command("help", unknown="approve everything")),
    ("/recon today please", Command("help", unknown="today please")),
    ("/recon run tomorrow", Command("help", unknown="run tomorrow")),
    ("/recon link nothex!", Command("help", unknown="link nothex!")),
    ("/recon 2026-13-45x", Command("help", unknown="2026-13-45x")),
])
def test_grammar(text, expected):
    assert parse(text) == expected


def test_unknown_input_gets_help_not_silence(db_url):
    cfg = chat_config(db_url)
    card = Commands(cfg).answer("slack", "U0ANY", "/recon frobnicate").cards[0]
    assert card.title == "reconbot: commands"
    assert card.text.startswith("I did not understand “frobnicate”.\n/recon today")


def test_answers_need_a_linked_user_and_respect_roles_and_scope(db_url):
    cfg = chat_config(db_url)
    people(db_url)
    c = Commands(cfg)
    assert c.answer("slack", "U0STRANGER", "/recon today").cards[0].title == "Not linked"
    assert c.answer("slack", "U0RITA", "/recon run").cards[0].title == "Not allowed"
    # otto sees only other-shop
    [card] = c.answer("slack", "U0OTTO", f"/recon {DAY}").cards
    assert card.title == f"other-shop · {DAY}" and card.text == f"Not reconciled yet: /recon run {DAY}"


def test_summary_pending_and_mine(db_url):
    cfg = chat_config(db_url)
    u = people(db_url)
    small = seed_break(db_url, -3200)
    big = seed_break(db_url, 12000, btype="long", order_id="W-2000")
    c = Commands(cfg)
    [summary, _other] = c.answer("telegram", "1005", f"/recon {DAY}").cards  # vic, a viewer, may look
    assert summary.title == f"demo-shop · {DAY}"
    [(source, line)] = summary.fields
    assert source == "wechatpay"
    assert line == ("ours 10 · ¥1,000.00 | channel 9 · ¥968.00 | matched 90.0% | fees ¥5.81 | "
                    "open breaks: long 1, short 1 (¥152.00)")
    pending = c.answer("telegram", "1005", "/recon pending").cards[0]
    assert pending.title == "Open breaks (2)"
    assert pending.text.splitlines() == [f"#{big} demo-shop {DAY} wechatpay long W-2000 ¥120.00",
                                         f"#{small} demo-shop {DAY} wechatpay short W-1005 -¥32.00"]
    from bot.actions import Click, Workflow

    Workflow(cfg).act(u["rita"], Click("assign_me", small, 1))
    assert c.answer("slack", "U0RITA", "/recon mine").cards[0].text.endswith("short W-1005 -¥32.00")
    assert c.answer("slack", "U0BOB", "/recon mine").cards[0].text == "Nothing assigned to you."


def test_run_answers_at_once_and_reports_when_done(db_url):
    cfg = chat_config(db_url)
    people(db_url)
    reply = Commands(cfg).answer("wecom", "alice", f"/recon run {DAY}")
    assert reply.cards[0].title == "Run started"
    assert reply.later is not None
    cards = reply.later()  # what the channel sends to the chat when the run is done
    assert cards[0].title == f"demo-shop · {DAY}" and cards[0].text.startswith("run #")

"""The alert pipeline, stage by stage, against the fake platforms: dedupe, inhibit, silence,
group (with bulk approval), route, escalate; and the outbox's retries, claims and routes.
Time travel (time-machine) for silences and escalations: no test waits for the clock."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import update
from sqlmodel import Session, select

from bot.actions import Click, Workflow
from bot.alerts import alert_merchant, drain_outbox, escalate_due, pending_escalations, send_digest
from chat_fakes import FakeSlack
from chat_setup import DAY, SLACK_CHANNEL, TG_CHAT, VirtualClock, chat_config, people, seed_break
from core.config import from_dict
from models.db import get_engine
from models.tables import (Adjustment, AlertCard, AlertRoute, AuditEvent, Break, BreakApproval, Escalation, Outbox,
                           Silence)

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
LEAD_CHAT = "-100777"  # escalation level 1: the finance lead's chat
MANAGERS = "C0MANAGERS"  # escalation level 2


def config(db_url, alerts: dict | None = None, language: str | None = None, **kw):
    """chat_setup's configuration with an [alerts] section (and a merchant language)."""
    data = chat_config(db_url, **kw).model_dump(exclude={"base_dir", "origin"}, mode="json")
    data["alerts"] = {**data["alerts"], **(alerts or {})}
    if language:
        data["merchants"][0]["language"] = language
    return from_dict(data)


def channels(cfg, clock: VirtualClock | None = None) -> dict:
    import channels as registry

    built = registry.build(cfg)
    if "telegram" in built:  # Telegram's pacing on a clock of its own: no test sleeps
        built["telegram"].pacer = (clock or VirtualClock()).pacer()
    if "console" in built:
        import io

        from rich.console import Console

        built["console"].console = Console(file=io.StringIO())
    return built


def rows(url, model, *where):
    with Session(get_engine(url)) as s:
        return list(s.exec(select(model).where(*where)).all())


def set_break(url, bid, **values):
    """What a later run does to a break (new amounts, another status): version moves on."""
    with Session(get_engine(url)) as s:
        b = s.get(Break, bid)
        s.execute(update(Break).where(Break.id == bid).values(version=b.version + 1, **values))
        if values.get("status") == "cleared":
            s.add(AuditEvent(actor="reconbot", action="cleared", subject_type="break", subject_id=str(bid)))
        s.commit()


def slack_posts(slack):
    return slack.called("chat.postMessage")


# -- dedupe ---------------------------------------------------------------------------------------

def test_a_rerun_edits_the_live_card_and_sends_nothing_new(db_url, slack):
    cfg = config(db_url, slack=slack)
    bid = seed_break(db_url, -32000)  # ¥320: above the threshold (auto_adjust_below = 100)
    first = alert_merchant(cfg, channels(cfg), "demo-shop")
    [post] = slack_posts(slack)
    assert (first.sends, first.delivered) == (1, 1) and post["text"] == f"#{bid} Short payment 短款"
    [card] = rows(db_url, AlertCard)
    assert card.message_id and card.break_id == bid and card.channel == "slack"

    again = alert_merchant(cfg, channels(cfg), "demo-shop")  # nothing changed: nothing to say
    assert (again.sends, again.updates, again.delivered) == (0, 0, 0)
    assert len(slack_posts(slack)) == 1 and slack.called("chat.update") == []

    set_break(db_url, bid, difference=-35000, internal_amount=35000, explanation="Order W-1005: ¥350 short.")
    third = alert_merchant(cfg, channels(cfg), "demo-shop")
    assert (third.sends, third.updates) == (0, 1)
    [upd] = slack.called("chat.update")
    assert (upd["channel"], upd["ts"]) == (SLACK_CHANNEL, card.message_id)
    assert "¥350 short" in json.dumps(upd["blocks"], ensure_ascii=False)
    assert len(slack_posts(slack)) == 1


def test_a_cleared_break_gets_its_card_edited_and_its_escalations_stop(db_url, slack, tg):
    cfg = config(db_url, slack=slack, telegram=tg,
                 alerts={"escalation": [{"routes": [{"channel": "telegram", "target": LEAD_CHAT}]}]})
    bid = seed_break(db_url, -32000)
    alert_merchant(cfg, channels(cfg), "demo-shop", now=T0)
    [esc] = rows(db_url, Escalation)
    assert (esc.state, esc.level) == ("pending", 1)

    set_break(db_url, bid, status="cleared")  # the money arrived T+1: the run cleared it
    report = alert_merchant(cfg, channels(cfg), "demo-shop", now=T0 + timedelta(minutes=5))
    assert report.updates == 2  # its card on Slack and on Telegram
    [upd] = slack.called("chat.update")
    assert "cleared" in json.dumps(upd["blocks"]) and not any(b["type"] == "actions" for b in upd["blocks"])
    [edit] = tg.called("editMessageText")
    assert "<b>Status</b>: cleared" in edit["text"] and "reply_markup" not in edit
    [esc] = rows(db_url, Escalation)
    assert (esc.state, esc.reason) == ("cancelled", "cleared")
    assert {c.state for c in rows(db_url, AlertCard)} == {"closed"}
    assert escalate_due(cfg, channels(cfg), now=T0 + timedelta(hours=1)) == 0
    assert [m["chat_id"] for m in tg.called("sendMessage")] == [TG_CHAT]  # the lead never got it
    # and nothing more is said about it
    later = alert_merchant(cfg, channels(cfg), "demo-shop", now=T0 + timedelta(hours=2))
    assert (later.sends, later.updates) == (0, 0)


# -- inhibit --------------------------------------------------------------------------------------

def test_a_late_statement_is_one_card_and_the_findings_it_mutes_get_none(db_url, slack):
    cfg = config(db_url, slack=slack)
    late = seed_break(db_url, 0, btype="late", order_id="x")
    with Session(get_engine(db_url)) as s:  # the key a late break has: source:late:statement:side:day
        s.execute(update(Break).where(Break.id == late).values(key=f"wechatpay:late:statement:channel:{DAY}"))
        s.commit()
    for i in range(4):
        bid = seed_break(db_url, -50000 * (i + 1), order_id=f"W-{i}")  # large, but muted: the statement is late
        set_break(db_url, bid, severity="muted")
    other = seed_break(db_url, -60000, order_id="A-1", source="alipay")  # another source: not muted
    report = alert_merchant(cfg, channels(cfg), "demo-shop")
    assert report.muted == 4 and report.sends == 2
    posts = slack_posts(slack)
    assert sorted(p["text"] for p in posts) == sorted([f"#{late} Late statement 账单未到",
                                                       f"#{other} Short payment 短款"])
    late_card = json.dumps(next(p for p in posts if "Late" in p["text"])["blocks"], ensure_ascii=False)
    assert "4 per-order findings of this source and day are held back" in late_card
    assert alert_merchant(cfg, channels(cfg), "demo-shop").sends == 0  # said once


# -- silence --------------------------------------------------------------------------------------

def test_a_silence_holds_new_cards_until_it_ends(db_url, slack):
    from bot.silences import Matchers, SilenceError, add, parse_duration
    from bot.users import get_user

    cfg = config(db_url, slack=slack)
    people(db_url)
    with time_machine.travel(T0, tick=False):
        with pytest.raises(SilenceError, match="needs an approver"):
            add(cfg, get_user(db_url, "rita"), Matchers("demo-shop", "wechatpay"), parse_duration("2d"), "holiday")
        sil = add(cfg, get_user(db_url, "alice"), Matchers("demo-shop", "wechatpay"), parse_duration("2d"),
                  "bank holiday, T+2 expected")
        held = seed_break(db_url, -32000)
        other = seed_break(db_url, -41000, order_id="A-7", source="alipay")  # not matched
        report = alert_merchant(cfg, channels(cfg), "demo-shop")
    assert report.silenced == 1 and [p["text"] for p in slack_posts(slack)] == [f"#{other} Short payment 短款"]
    [ev] = rows(db_url, AuditEvent, AuditEvent.action == "silence_add")
    assert (ev.actor, ev.subject_id) == ("alice", str(sil.id)) and "bank holiday" in ev.detail
    with time_machine.travel(T0 + timedelta(days=1, hours=23), tick=False):
        assert alert_merchant(cfg, channels(cfg), "demo-shop").sends == 0  # still silenced
    with time_machine.travel(T0 + timedelta(days=2, minutes=1), tick=False):
        after = alert_merchant(cfg, channels(cfg), "demo-shop")  # the next pass after it ends
    assert after.sends == 1 and slack_posts(slack)[-1]["text"] == f"#{held} Short payment 短款"


def test_silence_from_the_command_line_and_from_chat(tmp_path, slack):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bot.commands import Commands
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    people(url)
    seed_break(url, -32000)
    (tmp_path / "recon.toml").write_text(f"""
[database]
url = "{url}"
[[merchants]]
id = "demo-shop"
name = "Demo"
[[merchants.sources]]
name = "wechatpay"
kind = "wechatpay"
[[merchants.sources]]
name = "alipay"
kind = "alipay"
[chat.slack]
bot_token = "xoxb-fake"
signing_secret = "secret"
base_url = "{slack.base_url}"
[[chat.routes]]
channel = "slack"
target = "{SLACK_CHANNEL}"
""", encoding="utf-8")
    recon = str(Path(sys.executable).parent / "recon")

    def run(*args):
        return subprocess.run([recon, *args, "--config", str(tmp_path / "recon.toml")], capture_output=True,
                              text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)

    r = run("silence", "add", "--source", "wechatpay", "--for", "2d", "--reason", "bank holiday, T+2 expected",
            "--as", "vic")
    assert r.returncode == 2 and "vic is a viewer; silencing needs an approver" in r.stderr
    r = run("silence", "add", "--source", "wechatpay", "--for", "2d", "--reason", "bank holiday, T+2 expected",
            "--as", "bob")
    assert r.returncode == 0, r.stderr
    assert "silence #1: demo-shop source=wechatpay until" in r.stdout and "by bob: bank holiday" in r.stdout
    assert run("alerts", "send").returncode == 0 and slack_posts(slack) == []  # held
    listed = run("silence", "list").stdout
    assert "bank holiday, T+2 expected" in listed and "active" in listed
    # in chat: the same grammar, parsed once; a viewer may list but not end it
    from core.config import load

    cfg = load(tmp_path / "recon.toml")
    cmds = Commands(cfg)
    shown = cmds.answer("slack", "U0VIC", "/recon silence list")
    assert "#1 demo-shop source=wechatpay" in shown.cards[0].text
    refused = cmds.answer("slack", "U0VIC", "/recon silence end 1")
    assert refused.cards[0].title == "Not silenced" and "viewer" in refused.cards[0].text
    r = run("silence", "end", "1", "--as", "alice")
    assert r.returncode == 0 and "silence #1 ended by alice" in r.stdout
    assert len(slack_posts(slack)) == 1  # what it held went out at once
    assert [e.action for e in rows(url, AuditEvent, AuditEvent.subject_type == "silence")] == [
        "silence_add", "silence_end"]
    unknown = cmds.answer("slack", "U0CAROL", "/recon silence source=paypal for=1d no such source")
    assert unknown.cards[0].title == "Not silenced" and "no source 'paypal'" in unknown.cards[0].text
    made = cmds.answer("slack", "U0CAROL", "/recon silence source=alipay type=short for=36h Alipay maintenance")
    assert made.cards[0].title == "Silenced" and "by carol: Alipay maintenance" in made.cards[0].text
    [s2] = rows(url, Silence, Silence.id == 2)
    assert (s2.source, s2.type, s2.author) == ("alipay", "short", "carol")


# -- group ----------------------------------------------------------------------------------------

def _small_run(db_url):
    """One run's breaks: four small ones of wechatpay (three auto-adjustable), one large."""
    small = [seed_break(db_url, d, btype=t, order_id=f"W-{i}") for i, (d, t) in enumerate(
        [(-500, "amount_mismatch"), (200, "fx_difference"), (-65, "fee_mismatch"), (-4500, "short")])]
    large = seed_break(db_url, -32000, order_id="W-BIG")
    return small, large


def test_small_breaks_become_one_digest_card_per_source_and_the_large_one_its_own(db_url, slack):
    cfg = config(db_url, slack=slack)
    small, large = _small_run(db_url)
    report = alert_merchant(cfg, channels(cfg), "demo-shop")
    assert (report.sends, report.digests) == (2, 1)
    posts = {p["text"]: p for p in slack_posts(slack)}
    assert set(posts) == {f"#{large} Short payment 短款", "demo-shop · wechatpay · 2026-11-20: 4 open breaks"}
    blocks = posts["demo-shop · wechatpay · 2026-11-20: 4 open breaks"]["blocks"]
    fields = [f["text"] for b in blocks if b["type"] == "section" and "fields" in b for f in b["fields"]]
    assert fields == ["*Amount mismatch 错账*\n1 · -¥5.00", "*Fee deviation 手续费不符*\n1 · -¥0.65",
                      "*FX difference 汇兑差异*\n1 · ¥2.00", "*Short payment 短款*\n1 · -¥45.00"]
    text = next(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert text.splitlines()[:3] == ["Largest:", f"#{small[3]} Short payment 短款 W-3 -¥45.00",
                                     f"#{small[0]} Amount mismatch 错账 W-0 -¥5.00"]
    [button] = next(b["elements"] for b in blocks if b["type"] == "actions")
    assert button["text"]["text"] == "Approve 3 small adjustments"
    assert button["confirm"]["text"]["text"] == "Approve 3 adjustments, ¥7.65 in all?"


def test_bulk_approval_from_a_digest_applies_once_under_a_double_click(db_url, slack):
    from bot.users import get_user

    cfg = config(db_url, slack=slack)
    people(db_url)
    small, _large = _small_run(db_url)
    alert_merchant(cfg, channels(cfg), "demo-shop")
    post = next(p for p in slack_posts(slack) if "open breaks" in p["text"])
    value = next(e["value"] for b in post["blocks"] if b["type"] == "actions" for e in b["elements"])
    alice, bob = get_user(db_url, "alice"), get_user(db_url, "bob")
    workflow = Workflow(cfg)
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def click(actor):
        barrier.wait()
        digest_id, n = value.split(":")
        outcomes[actor.name] = workflow.act(actor, Click("approve_all", int(digest_id), int(n), None, "slack"))

    threads = [threading.Thread(target=click, args=(a,)) for a in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    approvals = rows(db_url, AuditEvent, AuditEvent.action == "approve")
    assert sorted(int(e.subject_id) for e in approvals) == sorted(small[:3])  # each auto one, exactly once
    assert len(rows(db_url, Adjustment)) == 3 and len(rows(db_url, BreakApproval)) == 3
    assert {rows(db_url, Break, Break.id == b)[0].status for b in small[:3]} == {"adjusted"}
    assert rows(db_url, Break, Break.id == small[3])[0].status == "open"  # a short payment is not auto
    statuses = sorted(o.status for o in outcomes.values())
    assert statuses in (["applied", "lost"], ["applied", "applied"])  # two clickers may split the work
    total = sum(int(o.message.split()[1]) for o in outcomes.values() if o.status == "applied")
    assert total == 3
    again = workflow.act(alice, Click("approve_all", *map(int, value.split(":")), None, "slack"))
    assert again.status == "lost" and len(rows(db_url, AuditEvent, AuditEvent.action == "approve")) == 3
    viewer = workflow.act(get_user(db_url, "vic"), Click("approve_all", *map(int, value.split(":")), None, "slack"))
    assert viewer.status == "refused"
    # one small break is left: too few for a digest, so it gets its own card and the digest
    # card says it is done (no button any more)
    report = alert_merchant(cfg, channels(cfg), "demo-shop")
    assert (report.sends, report.updates) == (1, 1)
    [upd] = slack.called("chat.update")
    assert upd["ts"] and upd["text"] == "demo-shop · wechatpay · 2026-11-20: nothing open"
    assert not any(b["type"] == "actions" for b in upd["blocks"])
    assert slack_posts(slack)[-1]["text"] == f"#{small[3]} Short payment 短款"


# -- route ----------------------------------------------------------------------------------------

def test_routes_by_severity_and_cards_in_the_merchants_language(db_url, slack, tg):
    routes = [{"merchant": "demo-shop", "channel": "slack", "target": SLACK_CHANNEL, "severity": ["urgent"]},
              {"merchant": "*", "channel": "telegram", "target": TG_CHAT}]
    cfg = config(db_url, slack=slack, telegram=tg, routes=routes, language="zh")
    normal = seed_break(db_url, -32000)
    urgent = seed_break(db_url, -900000, order_id="W-HUGE")
    set_break(db_url, urgent, severity="urgent")
    alert_merchant(cfg, channels(cfg), "demo-shop")
    assert [p["text"] for p in slack_posts(slack)] == [f"#{urgent} 短款"]  # the managers' channel: urgent only
    titles = sorted(m["text"].splitlines()[0] for m in tg.called("sendMessage"))
    assert titles == sorted([f"<b>#{normal} 短款</b>", f"<b>#{urgent} 短款</b>"])  # zh: the merchant's language
    assert "<b>差额</b>: -¥320.00" in next(m["text"] for m in tg.called("sendMessage") if f"#{normal}" in m["text"])


# -- escalate -------------------------------------------------------------------------------------

def test_unanswered_breaks_escalate_after_10_then_30_minutes_and_an_action_cancels(db_url, slack, tg):
    from bot.users import get_user

    cfg = config(db_url, slack=slack, telegram=tg, alerts={"escalation": [
        {"routes": [{"channel": "telegram", "target": LEAD_CHAT}]},
        {"routes": [{"channel": "slack", "target": MANAGERS}]}]})
    people(db_url)
    ignored = seed_break(db_url, -32000)
    handled = seed_break(db_url, -45000, order_id="W-2")
    small = seed_break(db_url, -1200, order_id="W-3")  # below the threshold: never escalates
    with time_machine.travel(T0, tick=False):
        alert_merchant(cfg, channels(cfg), "demo-shop")
    assert sorted((e.break_id, e.level) for e in pending_escalations(db_url)) == [
        (ignored, 1), (ignored, 2), (handled, 1), (handled, 2)]
    assert all(e.break_id != small for e in pending_escalations(db_url))
    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):  # someone takes one
        out = Workflow(cfg).act(get_user(db_url, "rita"), Click("assign_me", handled, 1, None, "slack"))
        assert out.status == "applied"
    assert [(e.state, e.reason) for e in rows(db_url, Escalation, Escalation.break_id == handled)] == [
        ("cancelled", "assign"), ("cancelled", "assign")]
    with time_machine.travel(T0 + timedelta(minutes=9, seconds=59), tick=False):
        assert escalate_due(cfg, channels(cfg)) == 0
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        assert escalate_due(cfg, channels(cfg)) == 1
    lead = [m for m in tg.called("sendMessage") if m["chat_id"] == LEAD_CHAT]
    assert len(lead) == 1 and lead[0]["text"].startswith(f"<b>#{ignored} Short payment")
    assert "Escalated (level 1): no action for 10 minutes." in lead[0]["text"]
    with time_machine.travel(T0 + timedelta(minutes=10, seconds=30), tick=False):
        assert escalate_due(cfg, channels(cfg)) == 0  # level 1 went once
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        assert escalate_due(cfg, channels(cfg)) == 1
    managers = [p for p in slack_posts(slack) if p["channel"] == MANAGERS]
    assert [p["text"] for p in managers] == [f"#{ignored} Short payment 短款"]
    assert "Escalated (level 2): no action for 30 minutes." in json.dumps(managers[0]["blocks"])
    assert [e.state for e in rows(db_url, Escalation, Escalation.break_id == ignored)] == ["sent", "sent"]
    assert pending_escalations(db_url) == []
    assert not [p for p in slack_posts(slack) if f"#{handled}" in p["text"] and p["channel"] == MANAGERS]


def test_escalation_levels_are_validated():
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="escalation level 3 needs after_minutes"):
        from_dict({"alerts": {"escalation": [{"routes": [{"channel": "console"}]}] * 3}})
    with pytest.raises(ConfigError, match="must grow"):
        from_dict({"alerts": {"escalation": [{"after_minutes": 30, "routes": [{"channel": "console"}]},
                                             {"after_minutes": 20, "routes": [{"channel": "console"}]}]}})


# -- the daily digest -----------------------------------------------------------------------------

def test_daily_digest_goes_out_once_per_day_and_route(db_url, slack):
    cfg = config(db_url, slack=slack)
    seed_break(db_url, -32000)
    assert send_digest(cfg, channels(cfg), "demo-shop", DAY) == 1
    assert send_digest(cfg, channels(cfg), "demo-shop", DAY) == 0
    [post] = slack_posts(slack)
    assert post["text"] == "demo-shop · 2026-11-20: daily digest"
    assert "*wechatpay*\\nopen 1 (¥320.00) · in transit 0" in json.dumps(post["blocks"], ensure_ascii=False)


# -- outbox ---------------------------------------------------------------------------------------

def test_429_reschedules_the_row_with_retry_after_and_does_not_wait(db_url, slack):
    cfg = config(db_url, slack=slack)
    seed_break(db_url, -32000)
    slack.fail("chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"})
    report = alert_merchant(cfg, channels(cfg), "demo-shop", now=T0)
    assert report.delivered == 0 and len(slack_posts(slack)) == 1  # one try, no sleeping on it
    [row] = rows(db_url, Outbox)
    assert (row.state, row.attempts, row.last_error) == ("pending", 0, "Slack 429 ratelimited")
    assert row.next_attempt_at.replace(tzinfo=timezone.utc) == T0 + timedelta(seconds=30)
    assert drain_outbox(cfg, channels(cfg), now=T0 + timedelta(seconds=29)) == 0  # not due yet
    assert drain_outbox(cfg, channels(cfg), now=T0 + timedelta(seconds=30)) == 1
    [row] = rows(db_url, Outbox)
    assert row.state == "sent" and row.message_id and row.last_error is None
    assert rows(db_url, AlertCard)[0].message_id == row.message_id  # recorded with the row, to edit it later


def test_5xx_backs_off_doubling_and_gives_up_after_max_attempts(db_url, slack):
    cfg = config(db_url, slack=slack, alerts={"retry_seconds": 10, "max_attempts": 3})
    seed_break(db_url, -32000)
    slack.fail("chat.postMessage", 503, {"ok": False, "error": "service_unavailable"}, times=3)
    alert_merchant(cfg, channels(cfg), "demo-shop", now=T0)
    [row] = rows(db_url, Outbox)
    assert (row.attempts, row.next_attempt_at.replace(tzinfo=timezone.utc)) == (1, T0 + timedelta(seconds=10))
    assert drain_outbox(cfg, channels(cfg), now=T0 + timedelta(seconds=10)) == 0
    [row] = rows(db_url, Outbox)
    assert (row.attempts, row.next_attempt_at.replace(tzinfo=timezone.utc)) == (2, T0 + timedelta(seconds=30))
    assert drain_outbox(cfg, channels(cfg), now=T0 + timedelta(seconds=30)) == 0
    [row] = rows(db_url, Outbox)
    assert row.state == "failed" and "gave up after 3 attempts" in row.last_error
    assert len(slack_posts(slack)) == 3 and rows(db_url, AlertRoute) == []  # transient: the route stays


def test_a_permanent_error_disables_the_route_and_tells_the_admins_once(db_url, slack, tg):
    cfg = config(db_url, slack=slack, telegram=tg, routes=[
        {"merchant": "*", "channel": "slack", "target": SLACK_CHANNEL}],
        alerts={"admin_routes": [{"channel": "telegram", "target": "42"}, {"channel": "console"}]})
    seed_break(db_url, -32000)
    seed_break(db_url, -45000, order_id="W-2")
    slack.fail("chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    alert_merchant(cfg, channels(cfg), "demo-shop")
    assert len(slack_posts(slack)) == 1  # the second card was not tried on a dead route
    [route] = rows(db_url, AlertRoute)
    assert (route.channel, route.target) == ("slack", SLACK_CHANNEL) and "channel_not_found" in route.reason
    [notice] = tg.called("sendMessage")
    assert notice["chat_id"] == "42" and notice["text"].startswith("<b>Alert route disabled</b>")
    assert f"slack {SLACK_CHANNEL} was disabled after a permanent error: Slack 200 channel_not_found" in notice["text"]
    assert {r.state for r in rows(db_url, Outbox, Outbox.channel == "slack")} == {"failed"}
    # later passes: nothing for the dead route, and the admins are not told again
    seed_break(db_url, -51000, order_id="W-3")
    alert_merchant(cfg, channels(cfg), "demo-shop")
    assert len(slack_posts(slack)) == 1 and len(tg.called("sendMessage")) == 1
    # fixed and enabled again: the cards it missed go out
    from bot.outbox import enable_route

    assert enable_route(db_url, "slack", SLACK_CHANNEL)
    assert alert_merchant(cfg, channels(cfg), "demo-shop").delivered == 3
    assert len(slack_posts(slack)) == 4


def test_two_drainers_send_each_row_once(db_url, slack):
    """Two processes' drains at once (threads here, each claiming as a process would):
    each message reaches Slack once."""
    cfg = config(db_url, slack=slack, max_cards_per_run=50)
    for i in range(12):
        seed_break(db_url, -30000 - i * 100, order_id=f"W-{i}")
    from bot.alerts import collect, dedupe, group, inhibit, outbox, route, silence, AlertReport

    # write the outbox without draining it
    report = AlertReport("demo-shop")
    chans = channels(cfg)
    breaks, live = collect(cfg, "demo-shop")
    held = inhibit(breaks, report) | silence(cfg, "demo-shop", breaks, T0, report)
    plans = group(cfg, "demo-shop", breaks, held, live, report, T0)
    outbox(cfg, dedupe(cfg, route(cfg, chans, "demo-shop", plans, live, report)), T0, report)
    assert report.sends == 12
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def drain():
        barrier.wait()
        counts.append(drain_outbox(cfg, channels(cfg)))

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 12
    keys = [json.dumps(p["metadata"]) for p in slack_posts(slack)]
    assert len(keys) == len(set(keys)) == 12
    assert {r.state for r in rows(db_url, Outbox)} == {"sent"}


def test_migration_keeps_the_cards_the_old_notifier_posted(tmp_path):
    """0005 folds chat_message into alert_card: a card posted before the upgrade is still
    edited in place (its hash is unknown, so the first pass edits it once), never re-sent."""
    from sqlalchemy import text

    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004_anomaly")
    with get_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO merchant VALUES ('demo-shop', 'Demo', 'Asia/Shanghai', 'CNY')"))
        conn.execute(text("INSERT INTO recon_run (id, merchant_id, business_day, started_at, status, stats) "
                          "VALUES (1, 'demo-shop', '2026-11-20', '2026-11-21 02:00:00', 'done', '{}')"))
        conn.execute(text(
            "INSERT INTO break (id, merchant_id, business_day, source, type, status, severity, key, order_id, "
            "internal_amount, difference, currency, rule, tolerance, explanation, evidence, first_run_id, "
            "last_run_id, version, created_at, updated_at) VALUES (1, 'demo-shop', '2026-11-20', 'wechatpay', "
            "'short', 'open', 'normal', 'k', 'W-1', 32000, -32000, 'CNY', 'r', 0, 'short', '[]', 1, 1, 1, "
            "'2026-11-21 02:00:00', '2026-11-21 02:00:00')"))
        conn.execute(text("INSERT INTO chat_message (break_id, channel, target, message_id, sent_at) "
                          "VALUES (1, 'slack', 'C0FIN', '1764000001.000100', '2026-11-21 02:00:01')"))
    upgrade(url)
    [card] = rows(url, AlertCard)
    assert (card.card_key, card.channel, card.target, card.message_id, card.state) == (
        "break:1", "slack", "C0FIN", "1764000001.000100", "live")
    slack = FakeSlack()
    try:
        cfg = config(url, slack=slack)
        report = alert_merchant(cfg, channels(cfg), "demo-shop")
        assert (report.sends, report.updates) == (0, 1) and slack_posts(slack) == []
        [upd] = slack.called("chat.update")
        assert upd["ts"] == "1764000001.000100"
    finally:
        slack.close()

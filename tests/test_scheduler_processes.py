"""The scheduler as real processes.

- End to end, in accelerated time: `recon serve` started with its clock set to 09:29:50
  Beijing time on 2021-01-29 (time-machine, started before reconbot is imported: reconbot has
  no clock hook of its own). At 09:30 it pulls the real WeChat Pay sample bill of the 28th from
  the fake WeChat Pay API and our orders from a drop folder, each in a `recon jobs run` process
  of its own, reconciles the day, alerts into the fake Slack through the outbox, sends the
  daily digest, and runs the escalate job every 2 s. The child processes run on the real clock
  and are told the time they stand for. Then the clock jumps: it is stopped and started
  again at 09:41 on the same database; the escalation stored at 09:30 (due after 10
  minutes) goes to the finance lead's chat and the card says so.
- Two `recon scheduler` processes on one PostgreSQL database firing the same jobs at the same
  moments: each run is done by one process (the logs of both name every run once), the
  daily digest reaches Slack once, and each process saw the other win some.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from chat_fakes import FakeSlack
from chat_setup import SLACK_CHANNEL, SLACK_SECRET
from fakes.keys import private_pem
from fakes.wechatpay import MCHID, MERCHANT_SERIAL, FakeWeChatPay
from models.db import get_engine
from models.tables import AlertCard, Break, Escalation, JobRun

REPO = Path(__file__).resolve().parents[1]
LEAD_CHANNEL = "C0LEAD"  # escalation level 1: the finance lead
# `python -c` with the clock set first, then the real CLI: argv = [-c, DESTINATION, recon args...]
TRAVELLING_RECON = ("import sys, datetime, time_machine; "
                    "time_machine.travel(datetime.datetime.fromisoformat(sys.argv.pop(1)), tick=True).start(); "
                    "from bot.entry import main; main()")
ORDERS = """order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id
S20210128170702357723,wechatpay,0.01,CNY,paid,2021-01-28T17:07:11+08:00,0.00,4200000925202101284997714292
S20210128153505214586,wechatpay,0.01,CNY,paid,2021-01-28T15:35:18+08:00,0.00,4200000910202101282955148400
S20210128165824499930,wechatpay,0.10,CNY,paid,2021-01-28T16:59:46+08:00,0.00,4200000926202101281412639609
"""


def recon_env(extra: dict | None = None) -> dict:
    return {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), **(extra or {})}


def serve_at(clock: str, config: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """`recon serve` (any free port) with its clock set to `clock`, ticking from there."""
    return subprocess.Popen([sys.executable, "-c", TRAVELLING_RECON, clock, "serve", "--port", "0", "--config",
                             str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd)


def assert_stopped_cleanly(proc: subprocess.Popen, output: str) -> None:
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal for its exit status
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output


def slack_toml(slack) -> str:
    """The fake Slack, and every merchant's alerts to its finance channel."""
    return (f'[chat.slack]\nbot_token = "xoxb-fake"\nsigning_secret = "{SLACK_SECRET}"\nbase_url = "{slack.base_url}"\n'
            f'[[chat.routes]]\nmerchant = "*"\nchannel = "slack"\ntarget = "{SLACK_CHANNEL}"\n')


def runs(url: str) -> list[JobRun]:
    with Session(get_engine(url)) as s:
        out = list(s.execute(select(JobRun).order_by(JobRun.scheduled_for, JobRun.id)).scalars())
    for r in out:  # SQLite gives the UTC time back naive, PostgreSQL in the session's zone
        at = r.scheduled_for
        r.scheduled_for = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    return out


def wait_for(predicate, what: str, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the scheduler process ended ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


def test_recon_serve_pulls_reconciles_alerts_digests_and_escalates_on_schedule(tmp_path, slack, samples,
                                                                                monkeypatch):
    key = private_pem("wechat-merchant")
    with FakeWeChatPay() as wechat:
        wechat.add_bill("/v3/bill/tradebill", "2021-01-28",
                        (samples / "wechatpay" / "gunsluo_tradebill_ALL.csv.gz").read_bytes())
        (tmp_path / "platform.pem").write_text(wechat.platform_certificate)
        drop = tmp_path / "drop"
        drop.mkdir()
        (drop / "orders_2021-01-28.csv").write_text(ORDERS, encoding="utf-8")
        url = f"sqlite:///{tmp_path / 'recon.db'}"
        config = tmp_path / "recon.toml"
        config.write_text(f"""
[database]
url = "{url}"
[anomaly]
enabled = false
[schedule]
pull = "0 30 9 * * *"
reconcile = ""
digest = "12 30 9 * * *"
escalate_seconds = 2
drain_seconds = 2
reconcile_after_pull_seconds = 2
[alerts]
threshold = "0.05"
[[alerts.escalation]]
after_minutes = 10
routes = [{{ channel = "slack", target = "{LEAD_CHANNEL}" }}]
[[merchants]]
id = "shop"
name = "Shop"
timezone = "Asia/Shanghai"
  [[merchants.sources]]
  name = "orders"
  kind = "orders"
  folder = "drop"
  settle_seconds = 0
  settlement_lag_days = 0
  [[merchants.sources]]
  name = "wechatpay"
  kind = "wechatpay"
  expected_by = "10:00"
    [merchants.sources.pull]
    api_base = "{wechat.url}"
    mchid = "{MCHID}"
    serial_no = "{MERCHANT_SERIAL}"
    private_key = "${{RECON_TEST_WX_KEY}}"
    platform_certificate = "platform.pem"
{slack_toml(slack)}""", encoding="utf-8")
        env = recon_env({"RECON_TEST_WX_KEY": key})
        from models.db import upgrade

        upgrade(url)
        started = time.monotonic()
        proc = serve_at("2021-01-29T09:29:50+08:00", config, env, tmp_path)
        try:
            wait_for(lambda: [c for c in slack.called("chat.postMessage")
                              if "daily digest" in c.get("text", "")], "the digest", 60, proc)
            cards = wait_for(lambda: [c for c in slack.called("chat.postMessage")
                                      if any(b["type"] == "actions" for b in c.get("blocks", []))], "a card", 30, proc)
            wait_for(lambda: len([r for r in runs(url) if r.job_id == "escalate"]) >= 3, "escalations", 30, proc)
        finally:
            output = stop(proc)
        assert_stopped_cleanly(proc, output)
        print(f"recon serve: pulled, reconciled, alerted and digested in {time.monotonic() - started:.1f} s")
    first_runs = runs(url)
    by_job = {}
    for r in first_runs:
        by_job.setdefault(r.job_id, []).append(r)
    at = lambda h, m, s=0: datetime(2021, 1, 29, h, m, s, tzinfo=timezone.utc)  # noqa: E731
    [wx] = by_job["pull:shop:wechatpay"]
    assert (wx.scheduled_for, wx.status) == (at(1, 30), "done"), output
    assert "ingested: wechatpay.trade_bill (2021-01-28): 3 rows, 3 new" in wx.detail
    [orders] = by_job["pull:shop:orders"]
    assert orders.status == "done" and "orders.export (2021-01-28): 3 rows, 3 new" in orders.detail
    [rec] = by_job["reconcile:shop:2021-01-28"]
    assert rec.status == "done" and "of shop 2021-01-28: 1 new" in rec.detail
    with Session(get_engine(url)) as s:
        [b] = s.execute(select(Break)).scalars().all()
    assert (b.type, b.order_id, b.difference) == ("amount_mismatch", "S20210128165824499930", -9)
    assert [c["channel"] for c in cards] == [SLACK_CHANNEL] and f'"{b.id}:1"' in json.dumps(cards[0]["blocks"])
    [digest] = [c for c in slack.called("chat.postMessage") if "daily digest" in c.get("text", "")]
    assert digest["text"] == "shop · 2021-01-28: daily digest"
    esc = [r.scheduled_for for r in by_job["escalate"]]
    assert all(b - a == timedelta(seconds=2) for a, b in zip(esc, esc[1:]))
    assert all(r.detail == "0 escalations sent" for r in by_job["escalate"])  # not due before 09:40
    assert all(r.claimed_by.endswith(f":{proc.pid}") for r in first_runs)  # the parent claims; children only work
    with Session(get_engine(url)) as s:
        [pending] = s.execute(select(Escalation)).scalars().all()
    assert (pending.break_id, pending.level, pending.state) == (b.id, 1, "pending")
    sent_at = pending.due_at.replace(tzinfo=timezone.utc) - timedelta(minutes=10)
    assert at(1, 30) <= sent_at < at(1, 31)  # the card went out at 09:30 Beijing time

    from typer.testing import CliRunner

    from bot.cli import app

    listed = CliRunner().invoke(app, ["jobs", "--format", "json", "--config", str(config)], env=env)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert {r["job"] for r in data["schedule"]} == {"pull:shop:orders", "pull:shop:wechatpay", "digest:shop",
                                                    "escalate", "drain"}
    assert "escalate" in {r["job"] for r in data["recent"]}
    assert [(e["break"], e["level"]) for e in data["escalations"]] == [(b.id, 1)]

    # the clock jumps past the escalation: `recon serve` on the same database at 09:41
    serve = serve_at("2021-01-29T09:41:00+08:00", config, env, tmp_path)
    try:
        [lead] = wait_for(lambda: [c for c in slack.called("chat.postMessage") if c["channel"] == LEAD_CHANNEL],
                          "the escalation", 60, serve)
        edited = wait_for(lambda: [u for u in slack.called("chat.update") if "Escalated (level 1)" in json.dumps(u)],
                          "the card saying it escalated", 30, serve)
    finally:
        output = stop(serve)
    assert_stopped_cleanly(serve, output)
    assert f'"{b.id}:1"' in json.dumps(lead["blocks"])  # the break's own card, with its buttons
    with Session(get_engine(url)) as s:
        [done] = s.execute(select(Escalation)).scalars().all()
        [first_card] = s.execute(select(AlertCard).where(AlertCard.channel == "slack",
                                                        AlertCard.target == SLACK_CHANNEL)).scalars().all()
    assert done.state == "sent"
    # the card in the finance chat, edited in place (the message the first pass posted)
    assert [(u["channel"], u["ts"]) for u in edited] == [(SLACK_CHANNEL, first_card.message_id)]
    [esc_run] = [r for r in runs(url) if r.job_id == "escalate" and r.detail == "1 escalations sent"]
    assert esc_run.claimed_by.endswith(f":{serve.pid}")


@pytest.mark.postgres
def test_two_schedulers_on_one_postgresql_database_run_each_job_once(tmp_path, slack):
    from conftest import fresh_database

    with fresh_database("postgres", tmp_path) as url:
        config = tmp_path / "recon.toml"
        config.write_text(f"""
[database]
url = "{url}"
[anomaly]
enabled = false
[schedule]
pull = ""
reconcile = ""
digest = "*/2 * * * * *"
escalate_seconds = 1
drain_seconds = 3600
[[merchants]]
id = "shop"
name = "Shop"
{slack_toml(slack)}""", encoding="utf-8")
        cmd = [sys.executable, "-c", "from bot.entry import main; main()", "scheduler", "--config", str(config)]
        procs = [subprocess.Popen(cmd, env=recon_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        try:
            wait_for(lambda: len([r for r in runs(url) if r.job_id == "digest:shop"]) >= 6, "six digest runs", 60)
        finally:
            outputs = [stop(p) for p in procs]
        digests = [r for r in runs(url) if r.job_id == "digest:shop"]
        posted = [c for c in slack.called("chat.postMessage") if "daily digest" in c.get("text", "")]
        # every run that was claimed was done by one process: each names the runs it did
        done_here = [{datetime.fromisoformat(t) for t in re.findall(r"digest:shop \((\S+)\): done:", o)}
                     for o in outputs]
        assert not done_here[0] & done_here[1]
        assert done_here[0] | done_here[1] == {r.scheduled_for for r in digests if r.status == "done"}
        assert len({r.scheduled_for for r in digests}) == len(digests)
        # the daily digest is once per day and route, however many runs (and processes) send it
        assert len(posted) == 1
        # both processes fired the same runs: each lost some of them to the other's claim
        pids = {p.pid for p in procs}
        winners = {int(r.claimed_by.rsplit(":", 1)[1]) for r in runs(url)}
        assert winners <= pids
        skipped = [o.count("claimed by another process, not run here") for o in outputs]
        print(f"digest runs {len(digests)}, messages {len(posted)}, skipped per process {skipped}, winners {len(winners)} processes")
        assert sum(skipped) >= 3, outputs

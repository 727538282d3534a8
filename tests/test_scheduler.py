"""The scheduler in this process, on a travelling clock (time-machine): cron times in each
job's zone, pull retries until the `expected_by` deadline and then the `late` break,
coalesced misfires, the escalate cadence, a failed job retried, the claim, a restart that
keeps a pending retry, and `recon jobs`.

APScheduler's loop waits on the real clock; after each jump of the travelling clock the test
wakes it (`aps.wakeup()`) and waits for the runs to end (`travel_to`).
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select
from sqlmodel import Session

from bot.scheduler import Scheduler, listing
from core import schedule as S
from core.config import ConfigError, from_dict
from fakes.keys import private_pem
from fakes.wechatpay import MCHID, MERCHANT_SERIAL, FakeWeChatPay
from models.db import get_engine
from models.tables import Break, JobRun

SH = ZoneInfo("Asia/Shanghai")
WX_DAY = date(2021, 1, 28)  # the real gunsluo trade bill's day
FAST = {"retries": 1, "retry_wait_seconds": 0.01, "timeout_seconds": 5}


def config(tmp_path, url: str, schedule: dict | None = None, sources: list[dict] | None = None, **merchant):
    return from_dict({
        "database": {"url": url},
        "anomaly": {"enabled": False},
        "schedule": {"escalate_seconds": 60, "drain_seconds": 3600, "pull": "", "reconcile": "", "digest": "",
                     **(schedule or {})},
        "merchants": [{"id": "shop", "name": "Shop", "timezone": "Asia/Shanghai", "currency": "CNY",
                       "sources": sources or [{"name": "orders", "kind": "orders"}], **merchant}],
    }, origin="test", base_dir=tmp_path)


def runs(url: str, job_id: str | None = None) -> list[JobRun]:
    with Session(get_engine(url)) as s:
        q = select(JobRun).order_by(JobRun.scheduled_for, JobRun.id)
        if job_id:
            q = q.where(JobRun.job_id == job_id)
        out = list(s.execute(q).scalars())
    for r in out:  # SQLite hands the UTC times back without their zone
        r.scheduled_for = r.scheduled_for.replace(tzinfo=timezone.utc)
    return out


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def utc(y, mo, d, h, mi, s=0, tz=SH) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=tz).astimezone(timezone.utc)


@pytest.fixture
def url(tmp_path):
    from models.db import upgrade

    u = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(u)
    return u


class _Finished:
    """Runs that have ended (APScheduler's events), to wait on without touching the database
    while a job may be working: in this process a pull or reconcile uses ADBC's SQLite, which
    must not hold the file at the same moment as Python's (models/db.py)."""

    def __init__(self, sched):
        import threading

        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED

        self.ids: list[str] = []
        self.cond = threading.Condition()
        sched.aps.add_listener(self._on, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def _on(self, event):
        with self.cond:
            self.ids.append(event.job_id)
            self.cond.notify_all()

    def wait(self, job_id: str, count: int = 1, timeout: float = 30.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.ids.count(job_id) >= count, timeout):
                raise AssertionError(f"gave up waiting for run {count} of {job_id} (ended: {self.ids})")


def travel_to(clock, sched, when: datetime, job_id: str, count: int = 1) -> None:
    """Move the travelling clock to `when`, wake APScheduler's loop (it sleeps on the real
    clock), and wait until run `count` of `job_id` has ended."""
    clock.move_to(when)
    sched.aps.wakeup()
    sched.finished.wait(job_id, count)


@pytest.fixture
def scheduler_factory():
    """Schedulers running in this process. A test stops them before its clock travel ends
    (with the real clock back, every stored job would be due at once); stopping here again
    is only the safety net of a failed test."""
    made = []

    def make(cfg, channels=None):
        if channels is None:  # the console, printing into a buffer
            import io

            from rich.console import Console

            import channels as registry

            channels = registry.build(cfg)
            channels["console"].console = Console(file=io.StringIO(), width=200)
        s = Scheduler(cfg, channels, isolate=False)
        s.finished = _Finished(s)
        made.append(s)
        return s

    yield make
    for s in made:
        s.shutdown(wait=True)


# -- configuration -----------------------------------------------------------------------------

def test_cron_expressions_are_checked_at_load_with_the_key_named():
    with pytest.raises(ConfigError) as e:
        from_dict({"schedule": {"reconcile": "0 26 * * *"}}, origin="recon.toml")
    assert "recon.toml: schedule.reconcile: '0 26 * * *' is not a valid cron expression" in str(e.value)
    with pytest.raises(ConfigError) as e:
        from_dict({"merchants": [{"id": "m", "name": "M", "sources": [
            {"name": "wechatpay", "kind": "wechatpay", "schedule": {"pull": "30 9 * *"}}]}]}, origin="recon.toml")
    assert ("recon.toml: merchants[0] (m).sources[0] (wechatpay).schedule.pull: '30 9 * *' is not a cron "
            "expression: give 5 fields (minute hour day month weekday), or 6 with seconds first; it has 4") \
        in str(e.value)
    with pytest.raises(ConfigError, match=r"merchants\[0\] \(m\)\.schedule\.digest: .*weekday '9' is out of range"):
        from_dict({"merchants": [{"id": "m", "name": "M", "schedule": {"digest": "0 9 * * 9"}}]}, origin="recon.toml")


def test_crontab_weekdays_count_from_sunday():
    from core.cron import trigger

    # 2026-11-20 is a Friday; "1-5" in crontab is Monday to Friday, "0" Sunday
    start = datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc)  # Saturday
    assert trigger("0 9 * * 1-5", "UTC").get_next_fire_time(None, start) == datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    assert trigger("0 9 * * 0", "UTC").get_next_fire_time(None, start) == datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    assert trigger("0 9 * * 7", "UTC").get_next_fire_time(None, start) == datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)


def test_plan_follows_the_seed_practice(tmp_path, url):
    cfg = from_dict({
        "database": {"url": url},
        "merchants": [{"id": "shop", "name": "Shop", "timezone": "Asia/Shanghai", "sources": [
            {"name": "orders", "kind": "orders", "folder": "drop", "settlement_lag_days": 0,
             "schedule": {"pull": "15 1 * * *"}},
            {"name": "wechatpay", "kind": "wechatpay", "pull": {"mchid": MCHID}, "expected_by": "10:00"},
            {"name": "bank", "kind": "mt940"},  # nothing to pull: no pull job
            {"name": "stripe", "kind": "stripe", "timezone": "UTC", "pull": {}, "schedule": {"pull": "0 13 * * *"}}]},
            {"id": "t0", "name": "T0 shop", "timezone": "Asia/Shanghai", "sources": [
                {"name": "alipay", "kind": "alipay", "settlement_lag_days": 0}], "schedule": {"digest": ""}}],
    }, base_dir=tmp_path)
    jobs = {j.id: j.schedule for j in S.plan(cfg)}
    assert jobs == {
        "pull:shop:orders": "cron 15 1 * * * (Asia/Shanghai)",
        "pull:shop:wechatpay": "cron 30 9 * * * (Asia/Shanghai)",
        "pull:shop:stripe": "cron 0 13 * * * (UTC)",
        "reconcile:shop": "cron 0 2 * * * (Asia/Shanghai)",
        "digest:shop": "cron 30 10 * * * (Asia/Shanghai)",
        "reconcile:t0": "cron 0 2 * * * (Asia/Shanghai)",
        "hourly:t0": "cron 5 * * * * (Asia/Shanghai)",  # a T+0 channel: hourly batches
        "retrain": "cron 30 3 * * * (Asia/Shanghai)",
        "escalate": "every 60 s",
        "drain": "every 30 s",
    }


# -- cron next-run times in the jobs' zones ------------------------------------------------------

def test_next_runs_are_in_each_sources_zone_and_listed_in_utc_and_local(tmp_path, url, scheduler_factory):
    cfg = config(tmp_path, url, {"pull": "30 9 * * *", "reconcile": "0 2 * * *"}, sources=[
        {"name": "orders", "kind": "orders", "folder": "drop"},
        {"name": "stripe", "kind": "stripe", "timezone": "America/New_York", "pull": {}}])
    (tmp_path / "drop").mkdir()
    with time_machine.travel(datetime(2026, 3, 7, 23, 0, tzinfo=timezone.utc), tick=False):
        # before anything is stored, `recon jobs` computes next runs from the config
        before = {r["job"]: r for r in listing(cfg)["schedule"]}
        sched = scheduler_factory(cfg)
        sched.start()
        stored = {j.id: j.next_run_time for j in sched.aps.get_jobs()}
        after = {r["job"]: r for r in listing(cfg)["schedule"]}
        sched.shutdown()
    # 23:00 UTC is 07:00 on the 8th in Shanghai: its 09:30 is 01:30 UTC on the 8th
    assert stored["pull:shop:orders"] == datetime(2026, 3, 8, 1, 30, tzinfo=timezone.utc)
    assert stored["reconcile:shop"] == datetime(2026, 3, 8, 18, 0, tzinfo=timezone.utc)  # 02:00 on the 9th
    # New York's clocks go forward on 8 March 2026: 09:30 EDT is 13:30 UTC, a day after 14:30 UTC (EST)
    assert stored["pull:shop:stripe"] == datetime(2026, 3, 8, 13, 30, tzinfo=timezone.utc)
    assert after["pull:shop:stripe"]["next_local"].isoformat() == "2026-03-08T09:30:00-04:00"
    assert before["pull:shop:stripe"]["next_utc"] == after["pull:shop:stripe"]["next_utc"]
    assert after["pull:shop:stripe"]["stored"] and not before["pull:shop:stripe"]["stored"]


# -- pull retries until the deadline, then the late break -----------------------------------------

@pytest.fixture
def wechat(monkeypatch):
    monkeypatch.setenv("RECON_TEST_WX_KEY", private_pem("wechat-merchant"))
    with FakeWeChatPay() as fake:
        yield fake


def wx_cfg(tmp_path, url, fake, **schedule):
    (tmp_path / "platform.pem").write_text(fake.platform_certificate)
    return config(tmp_path, url, {"pull": "30 9 * * *", "retry_first_minutes": 10, "retry_max_minutes": 15,
                                  "reconcile_after_pull_seconds": 30, **schedule}, sources=[
        {"name": "orders", "kind": "orders"},
        {"name": "wechatpay", "kind": "wechatpay", "expected_by": "10:00", "settlement_lag_days": 1,
         "pull": {"api_base": fake.url, "mchid": MCHID, "serial_no": MERCHANT_SERIAL,
                  "private_key": "${RECON_TEST_WX_KEY}", "platform_certificate": "platform.pem", **FAST}}])


def test_a_missing_bill_is_retried_with_backoff_until_expected_by_then_the_day_is_late(tmp_path, url, wechat,
                                                                                      scheduler_factory, samples):
    cfg = wx_cfg(tmp_path, url, wechat)
    with time_machine.travel(datetime(2021, 1, 29, 9, 29, 0, tzinfo=SH), tick=True) as clock:
        sched = scheduler_factory(cfg)
        sched.start()
        travel_to(clock, sched, datetime(2021, 1, 29, 9, 30, 0, tzinfo=SH), "pull:shop:wechatpay")
        [first] = runs(url, "pull:shop:wechatpay")
        assert first.status == "waiting" and first.scheduled_for == utc(2021, 1, 29, 9, 30)
        assert "NO_STATEMENT_EXIST" in first.detail and "next try at 2021-01-29 01:40:00 UTC" in first.detail
        [retry] = [j for j in sched.aps.get_jobs() if j.id == "pull:shop:wechatpay:2021-01-28"]
        assert retry.next_run_time == utc(2021, 1, 29, 9, 40) and retry.kwargs["attempt"] == 1

        travel_to(clock, sched, datetime(2021, 1, 29, 9, 40, 0, tzinfo=SH), "pull:shop:wechatpay:2021-01-28")
        retries = runs(url, "pull:shop:wechatpay:2021-01-28")
        assert retries[0].status == "waiting" and retries[0].attempt == 1
        # doubled to 20 min, capped by retry_max_minutes (15) and then by the deadline
        [retry] = [j for j in sched.aps.get_jobs() if j.id == "pull:shop:wechatpay:2021-01-28"]
        assert retry.next_run_time == utc(2021, 1, 29, 9, 55)
        assert not [b for b in _breaks(url) if b.type == "late"]

        travel_to(clock, sched, datetime(2021, 1, 29, 9, 55, 0, tzinfo=SH), "pull:shop:wechatpay:2021-01-28", 2)
        [retry] = [j for j in sched.aps.get_jobs() if j.id == "pull:shop:wechatpay:2021-01-28"]
        assert retry.next_run_time == utc(2021, 1, 29, 10, 0)  # the last try is at the deadline itself

        travel_to(clock, sched, datetime(2021, 1, 29, 10, 0, 0, tzinfo=SH), "pull:shop:wechatpay:2021-01-28", 3)
        last = [r for r in runs(url, "pull:shop:wechatpay:2021-01-28") if r.status != "waiting"]
        sched.shutdown()
    assert last[0].status == "late" and "statement missing at its deadline" in last[0].detail
    [late] = [b for b in _breaks(url) if b.type == "late"]
    assert (late.source, late.business_day, late.status) == ("wechatpay", WX_DAY, "open")
    assert "10:00" in late.explanation
    assert len(wechat.calls("/v3/bill/tradebill")) == 4  # 09:30, 09:40, 09:55, 10:00
    assert not [j for j in sched.aps.get_jobs() if j.id.startswith("pull:shop:wechatpay:")]  # no more tries


def test_a_bill_that_arrives_on_a_retry_is_ingested_and_its_day_reconciled_without_a_late_break(
        tmp_path, url, wechat, scheduler_factory, samples):
    cfg = wx_cfg(tmp_path, url, wechat)
    with time_machine.travel(datetime(2021, 1, 29, 9, 29, 0, tzinfo=SH), tick=True) as clock:
        sched = scheduler_factory(cfg)
        sched.start()
        travel_to(clock, sched, datetime(2021, 1, 29, 9, 30, 0, tzinfo=SH), "pull:shop:wechatpay")
        wechat.add_bill("/v3/bill/tradebill", WX_DAY.isoformat(),
                        (samples / "wechatpay" / "gunsluo_tradebill_ALL.csv.gz").read_bytes())
        travel_to(clock, sched, datetime(2021, 1, 29, 9, 40, 0, tzinfo=SH), "pull:shop:wechatpay:2021-01-28")
        [got] = runs(url, "pull:shop:wechatpay:2021-01-28")
        assert "ingested: wechatpay.trade_bill (2021-01-28): 3 rows, 3 new" in got.detail
        [follow] = [j for j in sched.aps.get_jobs() if j.id == "reconcile:shop:2021-01-28"]
        # reconcile_after_pull_seconds after the pull brought the bill
        assert timedelta(seconds=30) <= follow.next_run_time - utc(2021, 1, 29, 9, 40) < timedelta(seconds=40)
        # past the deadline: it arrived, so not late
        travel_to(clock, sched, datetime(2021, 1, 29, 10, 5, 0, tzinfo=SH), "reconcile:shop:2021-01-28")
        [rec] = runs(url, "reconcile:shop:2021-01-28")
        sched.shutdown()
    assert rec.status == "done" and "run #1 of shop 2021-01-28" in rec.detail
    assert not [b for b in _breaks(url) if b.type == "late"]


def _breaks(url):
    with Session(get_engine(url)) as s:
        return list(s.execute(select(Break)).scalars())


# -- misfires, cadence, failures, claims, restart --------------------------------------------------

def test_runs_missed_while_down_run_once_not_once_each(tmp_path, url, scheduler_factory):
    cfg = config(tmp_path, url, {"escalate_seconds": 60, "digest": "*/5 * * * *"})
    t0 = datetime(2026, 11, 21, 8, 0, 30, tzinfo=timezone.utc)
    with time_machine.travel(t0, tick=False):
        first = scheduler_factory(cfg)
        first.start()
        first.shutdown()
    with time_machine.travel(t0 + timedelta(minutes=47), tick=True):  # 47 escalations, 9 digests missed
        again = scheduler_factory(cfg)
        again.start()
        again.finished.wait("escalate")
        again.finished.wait("digest:shop")
        time.sleep(0.5)  # any further (wrong) run would have been submitted together with these
        again.shutdown()
    esc, dig = runs(url, "escalate"), runs(url, "digest:shop")
    assert [r.scheduled_for for r in esc] == [datetime(2026, 11, 21, 8, 47, 30, tzinfo=timezone.utc)]
    assert [r.scheduled_for for r in dig] == [datetime(2026, 11, 21, 8, 45, tzinfo=timezone.utc)]


def test_a_run_missed_beyond_the_grace_time_is_recorded_not_run(tmp_path, url, scheduler_factory):
    cfg = config(tmp_path, url, {"digest": "0 9 * * *", "misfire_grace_minutes": 30})
    with time_machine.travel(datetime(2026, 11, 21, 8, 0, tzinfo=SH), tick=False):
        first = scheduler_factory(cfg)
        first.start()
        first.shutdown()
    with time_machine.travel(datetime(2026, 11, 21, 9, 45, tzinfo=SH), tick=True):
        again = scheduler_factory(cfg)
        again.start()
        again.finished.wait("digest:shop")
        [missed] = runs(url, "digest:shop")
        again.shutdown()
    assert missed.status == "missed" and missed.scheduled_for == utc(2026, 11, 21, 9, 0)
    assert "grace 30 min" in missed.detail


def test_escalate_runs_every_escalate_seconds(tmp_path, url, scheduler_factory):
    cfg = config(tmp_path, url, {"escalate_seconds": 60})
    t0 = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc)
    with time_machine.travel(t0, tick=True) as clock:
        sched = scheduler_factory(cfg)
        sched.start()
        for n, step in enumerate((60, 60, 30, 30), start=1):
            clock.shift(step)
            sched.aps.wakeup()
            expected = {1: 1, 2: 2, 3: 2, 4: 3}[n]
            sched.finished.wait("escalate", expected)
        time.sleep(0.3)
        sched.shutdown()
    times = [r.scheduled_for for r in runs(url, "escalate")]
    assert len(times) == 3 and timedelta(seconds=60) <= times[0] - t0 < timedelta(seconds=61)
    assert [b - a for a, b in zip(times, times[1:])] == [timedelta(seconds=60)] * 2
    assert all(r.detail == "0 escalations sent" for r in runs(url, "escalate"))


def test_a_failed_job_is_logged_recorded_and_retried_with_backoff(tmp_path, url, scheduler_factory, caplog,
                                                                  monkeypatch):
    cfg = config(tmp_path, url, {"reconcile": "0 2 * * *", "job_retries": 2, "job_retry_seconds": 60})
    calls = []

    def broken(*args, **kw):  # the database (or anything) fails under the run
        calls.append(kw.get("now"))
        raise RuntimeError("database is locked")

    monkeypatch.setattr("core.runs.run_day", broken)
    with time_machine.travel(datetime(2026, 11, 21, 1, 59, 0, tzinfo=SH), tick=True) as clock:
        sched = scheduler_factory(cfg)
        sched.start()
        travel_to(clock, sched, datetime(2026, 11, 21, 2, 0, tzinfo=SH), "reconcile:shop")
        [failed] = runs(url, "reconcile:shop")
        assert failed.detail == "RuntimeError: database is locked"
        retry = wait_for(lambda: [j for j in sched.aps.get_jobs() if j.id == "reconcile:shop#retry"], "the retry")[0]
        assert retry.kwargs["day"] == "2026-11-20" and retry.kwargs["failures"] == 1
        assert timedelta(seconds=59) <= retry.next_run_time - utc(2026, 11, 21, 2, 0) <= timedelta(seconds=62)
        travel_to(clock, sched, retry.next_run_time, "reconcile:shop#retry")
        assert runs(url, "reconcile:shop#retry")[0].status == "failed"
        again = wait_for(lambda: [j for j in sched.aps.get_jobs() if j.id == "reconcile:shop#retry"
                                  and j.kwargs["failures"] == 2], "the second retry")[0]
        assert again.next_run_time - retry.next_run_time >= timedelta(seconds=119)  # backed off: twice as long
        assert not outbox(url)  # nobody is told while it is being retried
        # the third failure; its error listener (the notice) ran before the test's own listener
        travel_to(clock, sched, again.next_run_time, "reconcile:shop#retry", 2)
        assert not [j for j in sched.aps.get_jobs() if j.id.endswith("#retry")]  # retries used up
        sched.shutdown()
    assert "reconcile:shop failed (RuntimeError: database is locked); retry 1 of 2 in 60s" in caplog.text
    # then the admins are told, through the outbox (admin_routes' default: the console)
    [notice] = outbox(url)
    assert notice.idem_key.startswith("notice:job_failed:reconcile:shop#retry:") and notice.channel == "console"
    assert notice.state == "sent"
    shown = sched.channels["console"].console.file.getvalue()
    assert "reconbot: a scheduled job failed" in shown and "reconcile:shop#retry (2026-11-20) failed 3 times" in shown
    assert "RuntimeError: database is locked" in shown


def outbox(url):
    from models.tables import Outbox

    with Session(get_engine(url)) as s:
        return list(s.execute(select(Outbox)).scalars())


def test_a_run_is_claimed_once(url):
    at = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
    first = S.claim(url, "reconcile:shop", "reconcile", at)
    assert first is not None
    assert S.claim(url, "reconcile:shop", "reconcile", at) is None  # the other process (or a second firing)
    assert S.claim(url, "reconcile:shop", "reconcile", at + timedelta(days=1)) is not None


def test_a_pending_retry_survives_a_restart(tmp_path, url, wechat, scheduler_factory):
    cfg = wx_cfg(tmp_path, url, wechat)
    with time_machine.travel(datetime(2021, 1, 29, 9, 29, 0, tzinfo=SH), tick=True) as clock:
        first = scheduler_factory(cfg)
        first.start()
        travel_to(clock, first, datetime(2021, 1, 29, 9, 30, 0, tzinfo=SH), "pull:shop:wechatpay")
        first.shutdown()  # the process goes away; only the database remains
        pending = listing(cfg)["pending"]
        assert [(p["job"], p["day"], p["attempt"], p["at_local"].isoformat()) for p in pending] == [
            ("pull:shop:wechatpay:2021-01-28", "2021-01-28", 1, "2021-01-29T09:40:00+08:00")]
        clock.move_to(datetime(2021, 1, 29, 9, 41, 0, tzinfo=SH))  # it comes back a minute after the retry was due
        second = scheduler_factory(cfg)
        second.start()
        second.finished.wait("pull:shop:wechatpay:2021-01-28")
        [retried] = runs(url, "pull:shop:wechatpay:2021-01-28")
        second.shutdown()
    assert retried.status == "waiting" and retried.attempt == 1
    assert retried.scheduled_for == utc(2021, 1, 29, 9, 40)
    assert len(wechat.calls("/v3/bill/tradebill")) == 2


def test_a_changed_schedule_replaces_the_stored_job_and_a_removed_one_goes(tmp_path, url, scheduler_factory):
    with time_machine.travel(datetime(2026, 11, 21, 8, 0, tzinfo=SH), tick=False):
        a = scheduler_factory(config(tmp_path, url, {"digest": "0 9 * * *"}))
        a.start()
        a.shutdown()
        b = scheduler_factory(config(tmp_path, url, {"digest": "30 10 * * *", "drain_seconds": 60}))
        b.start()
        jobs = {j.id: j for j in b.aps.get_jobs()}
        b.shutdown()
        c = scheduler_factory(config(tmp_path, url, {"digest": ""}))
        c.start()
        left = {j.id for j in c.aps.get_jobs()}
        c.shutdown()
    assert jobs["digest:shop"].next_run_time == utc(2026, 11, 21, 10, 30)
    assert "digest:shop" not in left and {"escalate", "drain"} <= left


def test_recon_serve_runs_the_scheduler_with_the_app(tmp_path, url):
    from starlette.testclient import TestClient

    from bot.server import create_app

    config = tmp_path / "recon.toml"
    config.write_text(f'[database]\nurl = "{url}"\n[schedule]\ndigest = "0 9 * * *"\n'
                      '[[merchants]]\nid = "shop"\nname = "Shop"\n', encoding="utf-8")
    from core.config import load

    cfg = load(config)
    app = create_app(cfg, scheduler=True)
    with TestClient(app) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert app.state.scheduler.aps.running
        assert {j.id for j in app.state.scheduler.aps.get_jobs()} == {"reconcile:shop", "digest:shop", "retrain",
                                                                      "escalate", "drain"}
    assert not app.state.scheduler.aps.running  # stopped with the app
    assert not create_app(cfg).state.scheduler  # tests and `recon serve --no-scheduler`: none


# -- the other jobs, one run each ----------------------------------------------------------------

def test_hourly_batch_pulls_the_same_day_sources_and_reconciles_today(tmp_path, url):
    from conftest import EXAMPLES

    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "orders_2026-11-20.csv").write_bytes((EXAMPLES / "orders_2026-11-20.csv").read_bytes())
    cfg = config(tmp_path, url, sources=[
        {"name": "orders", "kind": "orders", "folder": "drop", "settle_seconds": 0, "settlement_lag_days": 0},
        {"name": "wechatpay", "kind": "wechatpay", "settlement_lag_days": 0},
        {"name": "alipay", "kind": "alipay"}])
    assert [j.id for j in S.plan(cfg) if j.kind == "hourly"] == ["hourly:shop"]  # a T+0 channel
    result = S.work(cfg, "hourly", "shop", now=utc(2026, 11, 20, 15, 5))
    assert result.status == "done" and result.alert == ["shop"]
    assert "orders: ingested: orders.export (2026-11-20): 52 rows, 52 new" in result.detail
    assert "run #1 of shop 2026-11-20" in result.detail  # today, merchant time


def test_retrain_with_nothing_stored_says_so(tmp_path, url):
    cfg = from_dict({"database": {"url": url}, "merchants": [{"id": "shop", "name": "Shop"}]},
                    origin="test", base_dir=tmp_path)
    assert S.work(cfg, "retrain").detail == "nothing to train on yet"


def test_a_source_without_expected_by_gives_up_and_says_so(tmp_path, url, wechat):
    (tmp_path / "platform.pem").write_text(wechat.platform_certificate)
    cfg = config(tmp_path, url, {"give_up_after_minutes": 60}, sources=[
        {"name": "wechatpay", "kind": "wechatpay",
         "pull": {"api_base": wechat.url, "mchid": MCHID, "serial_no": MERCHANT_SERIAL,
                  "private_key": "${RECON_TEST_WX_KEY}", "platform_certificate": "platform.pem", **FAST}}])
    first = utc(2021, 1, 29, 9, 30)
    with time_machine.travel(first, tick=False):
        early = S.work(cfg, "pull", "shop", "wechatpay", WX_DAY, first, 0, first, first)
    assert early.status == "waiting" and early.follow_ups[0].at == first + timedelta(minutes=10)
    late = first + timedelta(minutes=61)
    with time_machine.travel(late, tick=False):
        result = S.work(cfg, "pull", "shop", "wechatpay", WX_DAY, late, 4, first, late)
    assert result.status == "gave_up" and not result.follow_ups
    assert "shop: gave up pulling wechatpay for 2021-01-28 after 5 tries (since 2021-01-29 01:30 UTC)" in result.notice
    assert "Set expected_by on the source" in result.notice


def test_recon_jobs_lists_the_schedule_and_recon_jobs_run_runs_one(tmp_path, url, monkeypatch):
    from typer.testing import CliRunner

    from bot.cli import app

    config_file = tmp_path / "recon.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n[schedule]\nreconcile = "0 2 * * *"\n'
                           '[[merchants]]\nid = "shop"\nname = "Shop"\n  [[merchants.sources]]\n  name = "orders"\n'
                           '  kind = "orders"\n', encoding="utf-8")
    from rich.console import Console

    # a table wide enough for its columns; COLUMNS alone is not enough: under pytest-xdist the
    # CLI's console was created (at import) with the worker's COLUMNS=80 fixed in it
    monkeypatch.setattr("bot.cli.out", Console(width=200))
    S.claim(url, "reconcile:shop", "reconcile", utc(2026, 11, 21, 2, 0))
    r = CliRunner().invoke(app, ["jobs", "--config", str(config_file)])
    assert r.exit_code == 0, r.output
    assert "reconcile:shop" in r.output and "cron 0 2 * * * (Asia/Shanghai)" in r.output
    assert "CST" in r.output  # the next run in the job's own zone, beside UTC
    assert "waiting: no retries or follow-up runs" in r.output and "escalations: none pending" in r.output
    r = CliRunner().invoke(app, ["jobs", "run", "reconcile", "--day", "2026-11-20", "--config", str(config_file)])
    assert r.exit_code == 0, r.output
    assert "done: run #1 of shop 2026-11-20: 0 new, 0 updated, 0 cleared" in r.output
    r = CliRunner().invoke(app, ["jobs", "run", "pull", "--config", str(config_file)])
    assert r.exit_code == 2 and "recon jobs run pull needs --source" in r.output

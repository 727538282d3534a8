"""The scheduler: APScheduler 3 inside `recon serve`, or alone as `recon scheduler`.

The jobs and what one run does are core/schedule.py; this module wires them to APScheduler
and to the alert pipeline (bot/alerts.py): an alert pass for each merchant a run changed,
`escalate_due`, `drain_outbox` and `send_digest` as jobs, and notices to the admin routes:

- **Jobs from config** (`core.schedule.plan`): pull, reconcile, hourly, digest, retrain
  (cron, each in its own zone), escalate and drain (intervals). At start a job whose trigger
  is unchanged keeps its stored next run time, so a run missed while reconbot was down is
  still due and runs once (coalesce) within `misfire_grace_minutes`; a changed one is
  replaced; one the config no longer has is removed.
- **Persistent job store**: APScheduler's SQLAlchemyJobStore on reconbot's own database
  (table `apscheduler_jobs`, migration 0006). One-off runs (a pull retry, the reconcile
  after a pull, the retry of a failed job) survive a restart.
- **One run per job and time, across processes**: every run first claims a `job_run` row
  (unique job_id + scheduled_for); the process whose INSERT fails skips the run. That is
  what makes two `recon serve` processes on one PostgreSQL database safe: APScheduler 3
  does not coordinate schedulers that share a store, so both may fire the same run, and the
  claim decides. The store tolerates the other process having moved or removed a job first.
- **Heavy work in a process of its own**: pull, reconcile, hourly and retrain move records in
  bulk (ADBC, DuckDB). They run as `recon jobs run KIND --json` child processes: `recon
  serve` pools SQLite connections and must never open ADBC's SQLite beside them (models/db.py),
  a run's memory is returned when it ends, and a crash ends the job, not the scheduler.
  The child only works and reports (core.schedule.Result as JSON); this process alerts and
  schedules the follow-ups, so every chat message leaves from one long-lived process.
- **Failures**: a job that raises is logged with its cause (EVENT_JOB_ERROR), recorded in
  its `job_run` row, and retried as a one-off job `job_retries` times with backoff; then
  the admin routes (`[alerts] admin_routes`) are told. A missed run (beyond the grace time)
  is logged and recorded too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import subprocess
import sys
import threading
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlmodel import Session

from bot.alerts import alert_merchant, drain_outbox, escalate_due, pending_escalations, send_digest
from bot.cards import text_card
from bot.outbox import notify_admins
from bot.transport import Channel
from core import schedule as S
from core.config import Config
from models.db import get_engine
from models.tables import JobRun

log = logging.getLogger("reconbot.scheduler")
JOBSTORE_TABLE = "apscheduler_jobs"
# the run time APScheduler fired a job for (it does not pass it to the job itself)
SCHEDULED_FOR: contextvars.ContextVar[datetime] = contextvars.ContextVar("scheduled_for")
_active: "Scheduler | None" = None  # this process's scheduler: the stored jobs name only `fire`


class JobFailed(Exception):
    """A run that failed, with what its retry needs (plain values)."""

    def __init__(self, cause: str, job: dict) -> None:
        super().__init__(cause)
        self.cause = cause
        self.job = job


def fire(job: str, kind: str, merchant: str | None = None, source: str | None = None, day: str | None = None,
         attempt: int = 0, first_at: str | None = None, failures: int = 0) -> str:
    """What APScheduler runs. The job store keeps this function's name and these plain values
    (never the configuration: it holds secrets), and the process's scheduler does the rest."""
    if _active is None:
        raise RuntimeError("no scheduler is running in this process")
    return _active.execute(job, kind, merchant, source, date.fromisoformat(day) if day else None, attempt,
                           datetime.fromisoformat(first_at) if first_at else None, failures)


class _SharedJobStore(SQLAlchemyJobStore):
    """APScheduler's SQL store, on reconbot's engine, shared with other processes.

    APScheduler 3 assumes it owns its store: when another process has already moved a job on
    or removed a finished one-off job, its update or delete finds no row and raises, which
    would end the scheduler's thread. Here that is a normal case (the claim decided who runs).
    """

    def update_job(self, job):
        try:
            super().update_job(job)
        except JobLookupError:
            log.debug("job %s was removed by another process", job.id)

    def remove_job(self, job_id):
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.debug("job %s was removed by another process", job_id)

    def shutdown(self):
        pass  # the engine is reconbot's shared one (models.db.get_engine): not ours to dispose


def _run_with_time(job, jobstore_alias, run_times, logger_name):
    events = []
    for run_time in run_times:  # one with coalesce (always here)
        token = SCHEDULED_FOR.set(run_time)
        try:
            events += run_job(job, jobstore_alias, [run_time], logger_name)
        finally:
            SCHEDULED_FOR.reset(token)
    return events


class _Executor(ThreadPoolExecutor):
    """APScheduler's thread pool, with the run time a job was fired for made known to it."""

    def _do_submit_job(self, job, run_times):
        def callback(f):
            exc = f.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, f.result())

        self._pool.submit(_run_with_time, job, job._jobstore_alias, run_times, self._logger.name) \
            .add_done_callback(callback)


class _Background(BackgroundScheduler):
    def _process_jobs(self):
        # APScheduler's loop thread ends on any exception here (a database that went away
        # between reading due jobs and updating them): log, and look again shortly
        try:
            return super()._process_jobs()
        except Exception:
            log.exception("scheduler: looking for due jobs failed; trying again in %ss", self.jobstore_retry_interval)
            return self.jobstore_retry_interval


class Scheduler:
    """`Scheduler(cfg, channels).start()`; `shutdown()` when done.

    `isolate=False` runs the heavy jobs in this process, one job at a time (ADBC's SQLite and
    Python's must not hold the database at the same moment: models/db.py): for tests with a
    travelling clock.
    """

    def __init__(self, cfg: Config, channels: dict[str, Channel], isolate: bool = True) -> None:
        self.cfg = cfg
        self.url = cfg.database.url
        self.channels = channels
        self.isolate = isolate
        self.grace = cfg.schedule.misfire_grace_minutes * 60
        self._children: set[subprocess.Popen] = set()
        self._children_lock = threading.Lock()
        self._stopping = False
        self.aps = _Background(
            jobstores={"default": _SharedJobStore(engine=get_engine(self.url), tablename=JOBSTORE_TABLE)},
            executors={"default": _Executor(cfg.schedule.workers if isolate else 1)},
            job_defaults={"coalesce": True, "misfire_grace_time": self.grace, "max_instances": 1},
            timezone=timezone.utc, jobstore_retry_interval=30,
        )
        self.aps.add_listener(self._on_error, EVENT_JOB_ERROR)
        self.aps.add_listener(self._on_missed, EVENT_JOB_MISSED)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        global _active
        if _active is not None and _active is not self:
            raise RuntimeError("a scheduler is already running in this process")
        _active = self
        self.aps.start(paused=True)  # the store is open, nothing runs yet: bring it in line first
        self.sync()
        # drain the outbox at start-up, then on its interval: what a crash left waiting goes now
        self.aps.modify_job("drain", next_run_time=datetime.now(timezone.utc))
        self.aps.resume()
        log.info("scheduler started: %d jobs", len(self.aps.get_jobs()))

    def shutdown(self, wait: bool = True) -> None:
        global _active
        self._stopping = True
        with self._children_lock:
            for child in self._children:  # a job's own process: its ingest is one transaction
                child.terminate()
        if self.aps.running:
            self.aps.shutdown(wait=wait)
        if _active is self:
            _active = None

    def sync(self) -> None:
        """Make the stored recurring jobs those of the configuration."""
        specs = {s.id: s for s in S.plan(self.cfg)}
        stored = {j.id: j for j in self.aps.get_jobs()}
        for spec in specs.values():
            trigger = spec.trigger()
            kwargs = {"job": spec.id, "kind": spec.kind, "merchant": spec.merchant, "source": spec.source}
            have = stored.get(spec.id)
            if have is not None and _same_trigger(have.trigger, trigger) and have.kwargs == kwargs \
                    and have.misfire_grace_time == self.grace:
                continue  # keeps its stored next run time: one missed while down is still due
            self.aps.add_job(fire, trigger, id=spec.id, name=spec.schedule, kwargs=kwargs, replace_existing=True)
        for job_id, job in stored.items():
            if job_id not in specs and not isinstance(job.trigger, DateTrigger):
                log.info("removing job %s: no longer in the configuration", job_id)
                self.aps.remove_job(job_id)

    # -- one run --------------------------------------------------------------------------

    def execute(self, job_id: str, kind: str, merchant: str | None, source: str | None, day: date | None,
                attempt: int, first_at: datetime | None, failures: int) -> str:
        scheduled_for = (SCHEDULED_FOR.get(None) or datetime.now(timezone.utc)).astimezone(timezone.utc)
        day = day or self._day_for(kind, merchant, source, scheduled_for)
        plain = {"job": job_id, "kind": kind, "merchant": merchant, "source": source,
                 "day": day.isoformat() if day else None, "attempt": attempt,
                 "first_at": first_at.isoformat() if first_at else None, "failures": failures}
        try:
            run_id = S.claim(self.url, job_id, kind, scheduled_for, attempt + failures)
        except Exception as exc:  # the database is away: retried like any failure
            raise JobFailed(f"could not claim the run: {exc.__class__.__name__}: {exc}", plain) from exc
        if run_id is None:
            log.info("%s for %s: claimed by another process, not run here", job_id, scheduled_for.isoformat())
            return "claimed elsewhere"
        now = datetime.now(timezone.utc)
        try:
            result = self._work(kind, merchant, source, day, now, attempt, first_at, scheduled_for)
            for merchant_id in result.alert:
                alert_merchant(self.cfg, self.channels, merchant_id, now)
            for follow in result.follow_ups:
                self.add_follow_up(follow)
            if result.notice:
                self.notice(f"job_notice:{job_id}:{scheduled_for.isoformat()}", "job_notice", [result.notice])
        except Exception as exc:
            cause = f"{exc.__class__.__name__}: {exc}"
            S.finish(self.url, run_id, "failed", cause)
            raise JobFailed(cause, plain) from exc
        log.info("%s (%s): %s: %s", job_id, scheduled_for.isoformat(), result.status, result.detail)
        try:
            S.finish(self.url, run_id, result.status, result.detail)
        except Exception:  # the work is done and its follow-ups scheduled: only the record is missing
            log.exception("%s: the run's outcome could not be recorded", job_id)
        return result.status

    def _day_for(self, kind, merchant, source, at: datetime) -> date | None:
        """The day a run stands for, from the time it was scheduled for (a run that starts
        late, or is retried after midnight, still works on its own day)."""
        if merchant is None:
            return None
        m = self.cfg.merchant(merchant)
        if kind == "pull":
            src = m.source(source)
            return S.pull_day_for(src, at) if src else None
        if kind == "hourly":
            return S.today(m, at)
        if kind in ("reconcile", "digest"):
            return S.yesterday(m, at)
        return None

    def _work(self, kind, merchant, source, day, now, attempt, first_at, scheduled_for) -> S.Result:
        if kind == "escalate":
            return S.Result("done", f"{escalate_due(self.cfg, self.channels, now)} escalations sent")
        if kind == "drain":
            return S.Result("done", f"{drain_outbox(self.cfg, self.channels, now)} messages sent from the outbox")
        if kind == "digest":
            return S.Result("done", f"digest of {merchant} {day}: "
                                    f"{send_digest(self.cfg, self.channels, merchant, day, now)} messages sent")
        if not self.isolate:
            return S.work(self.cfg, kind, merchant, source, day, now, attempt, first_at, scheduled_for)
        return self._in_child(kind, merchant, source, day, now, attempt, first_at, scheduled_for)

    def _in_child(self, kind, merchant, source, day, now, attempt, first_at, scheduled_for) -> S.Result:
        # the child reads the same configuration: the same file, or the same embedded defaults
        config = [] if self.cfg.origin.startswith("<") else ["--config", self.cfg.origin]
        args = [sys.executable, "-c", "from bot.entry import main; main()", "jobs", "run", kind, "--json", *config,
                "--now", now.isoformat(), "--attempt", str(attempt), "--scheduled-for", scheduled_for.isoformat()]
        for flag, value in (("--merchant", merchant), ("--source", source), ("--day", day),
                            ("--first-at", first_at.isoformat() if first_at else None)):
            if value is not None:
                args += [flag, str(value)]
        if self._stopping:
            raise RuntimeError("the scheduler is stopping")
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self._children_lock:
            self._children.add(child)
        try:
            out, err = child.communicate(timeout=self.cfg.schedule.job_timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise RuntimeError(f"`recon jobs run {kind}` took longer than "
                               f"{self.cfg.schedule.job_timeout_minutes} minutes and was stopped") from None
        finally:
            with self._children_lock:
                self._children.discard(child)
        if child.returncode != 0:
            last = (err.strip().splitlines() or [f"exit code {child.returncode}"])[-3:]
            raise RuntimeError(f"`recon jobs run {kind}` failed: {' / '.join(last)}")
        return S.Result.from_json(json.loads(out.strip().splitlines()[-1]))

    def add_follow_up(self, f: S.FollowUp) -> None:
        kwargs = {"job": f.job_id, "kind": f.kind, "merchant": f.merchant, "source": f.source,
                  "day": f.day.isoformat(), "attempt": f.attempt,
                  "first_at": f.first_at.isoformat() if f.first_at else None}
        self.aps.add_job(fire, DateTrigger(f.at), id=f.job_id, name=f"{f.kind} {f.merchant} {f.day}", kwargs=kwargs,
                         replace_existing=True)
        log.info("%s scheduled for %s", f.job_id, f.at.isoformat())

    # -- listeners ------------------------------------------------------------------------

    def _on_error(self, event) -> None:
        exc = event.exception
        if not isinstance(exc, JobFailed):  # not from `fire`: APScheduler has logged it with its traceback
            log.error("job %s failed outside reconbot's runner (%r): not retried", event.job_id, exc)
            return
        job = dict(exc.job)
        failures = job["failures"] + 1
        if failures > self.cfg.schedule.job_retries:
            log.error("%s (%s) failed %d times, the last time: %s; not retried again", job["job"],
                      job["day"] or "no day", failures, exc.cause)
            at = event.scheduled_run_time.astimezone(timezone.utc).isoformat()
            self.notice(f"job_failed:{event.job_id}:{at}", "job_failed",
                        [f"{job['job']} ({job['day'] or 'no day'}) failed {failures} times; the last time: "
                         f"{exc.cause}", "It will run again at its next scheduled time."])
            return
        wait = S.job_retry_wait(self.cfg, failures)
        retry_id = job["job"] if job["job"].endswith("#retry") else f"{job['job']}#retry"
        job.update(job=retry_id, failures=failures)
        log.warning("%s failed (%s); retry %d of %d in %ds", event.job_id, exc.cause, failures,
                    self.cfg.schedule.job_retries, wait.total_seconds())
        if not self._stopping:
            self.aps.add_job(fire, DateTrigger(datetime.now(timezone.utc) + wait), id=retry_id,
                             name=f"retry {failures} of {event.job_id}", kwargs=job, replace_existing=True)

    def notice(self, key: str, title: str, lines: list[str]) -> None:
        """Tell the admin routes what no break can say (a job that gave up or failed for
        good), through the outbox: once per `key`, sent at once (else by the next drain)."""
        now = datetime.now(timezone.utc)
        notify_admins(self.cfg, self.channels, key, lambda w: text_card(w[title], lines, key=key), now)
        drain_outbox(self.cfg, self.channels, now)

    def _on_missed(self, event) -> None:
        late = datetime.now(timezone.utc) - event.scheduled_run_time
        log.warning("%s: the run of %s was missed by %s (grace %d min): skipped", event.job_id,
                    event.scheduled_run_time.isoformat(), str(late).split(".")[0], self.grace // 60)
        run_id = S.claim(self.url, event.job_id, "missed", event.scheduled_run_time)
        if run_id is not None:
            S.finish(self.url, run_id, "missed", f"missed by {late} (grace {self.grace // 60} min)")


def _same_trigger(a, b) -> bool:
    if isinstance(a, CronTrigger) and isinstance(b, CronTrigger):
        return repr(a) == repr(b)
    if isinstance(a, IntervalTrigger) and isinstance(b, IntervalTrigger):
        return a.interval == b.interval and str(a.timezone) == str(b.timezone)
    return False


# -- `recon jobs` --------------------------------------------------------------------------

def stored_jobs(cfg: Config) -> list:
    """The jobs in the store, read without starting a scheduler."""
    store = _SharedJobStore(engine=get_engine(cfg.database.url), tablename=JOBSTORE_TABLE)
    store.start(None, "default")
    return store.get_all_jobs()


def listing(cfg: Config, now: datetime | None = None, recent: int = 10) -> dict:
    """What `recon jobs` shows: the schedule with next run times (UTC and the job's zone),
    the one-off runs waiting (retries, reconciles after pulls), pending escalations, and
    the latest runs."""
    now = now or datetime.now(timezone.utc)
    stored = {j.id: j for j in stored_jobs(cfg)}
    schedule = []
    for spec in S.plan(cfg):
        have = stored.get(spec.id)
        nxt = have.next_run_time if have is not None and have.next_run_time else spec.trigger().get_next_fire_time(None, now)
        schedule.append({"job": spec.id, "kind": spec.kind, "schedule": spec.schedule, "timezone": spec.timezone,
                         "next_utc": nxt.astimezone(timezone.utc) if nxt else None,
                         "next_local": nxt.astimezone(ZoneInfo(spec.timezone)) if nxt else None,
                         "stored": have is not None})
    pending = []
    for job in stored.values():
        if not isinstance(job.trigger, DateTrigger):
            continue
        kw = job.kwargs
        tz = _zone_of(cfg, kw.get("merchant"), kw.get("source"))
        pending.append({"job": job.id, "kind": kw.get("kind"), "day": kw.get("day"),
                        "attempt": kw.get("attempt", 0), "failures": kw.get("failures", 0), "timezone": tz,
                        "at_utc": job.next_run_time.astimezone(timezone.utc) if job.next_run_time else None,
                        "at_local": job.next_run_time.astimezone(ZoneInfo(tz)) if job.next_run_time else None})
    pending.sort(key=lambda p: p["at_utc"] or now)
    with Session(get_engine(cfg.database.url)) as s:
        runs = list(s.execute(select(JobRun).order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(recent))
                    .scalars())
    # SQLite hands the stored UTC times back without their zone
    escalations = [{"break": e.break_id, "level": e.level, "due": e.due_at.replace(tzinfo=timezone.utc)
                    if e.due_at.tzinfo is None else e.due_at} for e in pending_escalations(cfg.database.url)]
    return {"now": now, "schedule": schedule, "pending": pending, "escalations": escalations, "recent": runs}


def _zone_of(cfg: Config, merchant: str | None, source: str | None) -> str:
    m = next((x for x in cfg.merchants if x.id == merchant), None)
    if m is None:
        return cfg.schedule.timezone
    src = m.source(source) if source else None
    return src.timezone if src else m.timezone


def serve_alone(cfg: Config, channels: dict[str, Channel], stop: threading.Event | None = None) -> None:
    """`recon scheduler`: run until interrupted (or `stop` is set)."""
    sched = Scheduler(cfg, channels)
    sched.start()
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown()

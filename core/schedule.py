"""The scheduler's jobs, free of any chat platform and of APScheduler's machinery.

- `plan(cfg)`: the jobs the configuration asks for, each with a stable id and its trigger
  (cron in the zone of what it works for, or an interval).
- `work(...)`: what one run of a pull, reconcile, hourly batch or retrain does. It returns
  a `Result`: what happened, which merchants now have breaks to alert about, and the
  follow-up runs to schedule (a pull retry, the reconcile after a pull). The caller
  (bot/scheduler.py) alerts and schedules; this module never talks to a chat.
- `claim` / `finish`: a run is claimed with a `job_run` row before any work. Its unique
  (job_id, scheduled_for) key lets only one of several processes that fire the same job
  at the same moment do it.

Pulls and late statements. A pull at time T fetches the statement of the source's day
T − `expected_lag_days` (in the source's zone), the day whose statement is due then. When
that statement has not arrived afterwards (the channel has not made it yet, or the pull
failed), the pull is tried again, waiting `retry_first_minutes`, doubling up to
`retry_max_minutes`, until the deadline: the source's `expected_by` on that day, the very
moment from which core/completeness reports the day `late`. The last try is at the
deadline; if the statement is still missing, the day is reconciled at once, so its `late`
break exists from then on (and is alerted). A source without `expected_by` has no
deadline of its own: it stops after `give_up_after_minutes` and says so in the chat.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from core import completeness, cron
from core.config import Config, MerchantConfig, SourceConfig
from models.db import get_engine
from models.tables import JobRun

# jobs whose work moves records in bulk (ingest, the engine, training): bot/scheduler.py
# runs them in a process of their own (see docs/architecture.md, "Scheduler")
HEAVY = ("pull", "reconcile", "hourly", "retrain")
LIGHT = ("escalate", "drain", "digest")
MAX_JOB_RETRY_WAIT = timedelta(hours=1)


@dataclass(frozen=True)
class JobSpec:
    """One recurring job of the plan."""

    id: str  # stable: "pull:demo-shop:wechatpay", "reconcile:demo-shop", "escalate", ...
    kind: str  # pull | reconcile | hourly | digest | retrain | escalate | drain
    timezone: str  # the zone its cron is read in (a source's, a merchant's, [schedule]'s)
    cron: str | None = None
    every_seconds: int | None = None
    merchant: str | None = None
    source: str | None = None

    def trigger(self):
        if self.cron:
            return cron.trigger(self.cron, self.timezone)
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.every_seconds, timezone=self.timezone)

    @property
    def schedule(self) -> str:
        return f"cron {self.cron} ({self.timezone})" if self.cron else f"every {self.every_seconds} s"


def plan(cfg: Config) -> list[JobSpec]:
    """Every recurring job the configuration asks for."""
    from core.pull import pullable

    sch = cfg.schedule
    jobs: list[JobSpec] = []
    for m in cfg.merchants:
        for src in m.sources:
            expr = src.schedule.pull if src.schedule.pull is not None else sch.pull
            if expr and pullable(src):
                jobs.append(JobSpec(f"pull:{m.id}:{src.name}", "pull", src.timezone, expr, merchant=m.id,
                                    source=src.name))
        for kind in ("reconcile", "hourly", "digest"):
            own = getattr(m.schedule, kind)
            expr = own if own is not None else getattr(sch, kind)
            if kind == "hourly" and own is None and not t0_sources(m):
                expr = ""  # the default hourly batch is for merchants with a T+0 channel
            if expr:
                jobs.append(JobSpec(f"{kind}:{m.id}", kind, m.timezone, expr, merchant=m.id))
    if cfg.anomaly.enabled and sch.retrain:
        jobs.append(JobSpec("retrain", "retrain", sch.timezone, sch.retrain))
    jobs.append(JobSpec("escalate", "escalate", "UTC", every_seconds=sch.escalate_seconds))
    jobs.append(JobSpec("drain", "drain", "UTC", every_seconds=sch.drain_seconds))
    return jobs


def t0_sources(merchant: MerchantConfig) -> list[SourceConfig]:
    """Channel sources that settle the same day (settlement_lag_days = 0)."""
    return [s for s in merchant.sources if s.kind not in completeness.INTERNAL_KINDS and s.settlement_lag_days == 0]


# -- days, deadlines, waits ----------------------------------------------------------------

def pull_day_for(source: SourceConfig, now: datetime) -> date:
    """The business day whose statement a pull at `now` fetches: the one due today."""
    return now.astimezone(ZoneInfo(source.timezone)).date() - timedelta(days=source.expected_lag_days)


def yesterday(merchant: MerchantConfig, now: datetime) -> date:
    return now.astimezone(ZoneInfo(merchant.timezone)).date() - timedelta(days=1)


def today(merchant: MerchantConfig, now: datetime) -> date:
    return now.astimezone(ZoneInfo(merchant.timezone)).date()


def deadline(cfg: Config, source: SourceConfig, day: date, first_at: datetime) -> tuple[datetime, bool]:
    """Until when a missing statement is tried again; True when that is `expected_by` (the
    moment the day becomes late), False for the give-up time of a source without one."""
    due = completeness.due(source, day)
    if due is not None:
        return due.astimezone(timezone.utc), True
    minutes = source.schedule.give_up_after_minutes or cfg.schedule.give_up_after_minutes
    return first_at + timedelta(minutes=minutes), False


def retry_wait(cfg: Config, source: SourceConfig, attempt: int) -> timedelta:
    """Wait before try `attempt + 1` of a pull whose statement was not there."""
    first = source.schedule.retry_first_minutes or cfg.schedule.retry_first_minutes
    longest = source.schedule.retry_max_minutes or cfg.schedule.retry_max_minutes
    return timedelta(minutes=min(first * 2 ** attempt, longest))


def job_retry_wait(cfg: Config, attempt: int) -> timedelta:
    """Wait before retry `attempt` (1, 2, ...) of a job that failed."""
    return min(timedelta(seconds=cfg.schedule.job_retry_seconds * 2 ** (attempt - 1)), MAX_JOB_RETRY_WAIT)


# -- one run -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FollowUp:
    """A one-off run to schedule after this one: a pull retry, a reconcile of a day."""

    kind: str  # pull | reconcile
    at: datetime
    merchant: str
    day: date
    source: str | None = None
    attempt: int = 0
    first_at: datetime | None = None

    @property
    def job_id(self) -> str:
        """One pending run per (merchant, source, day): a newer one replaces it, so the
        pulls of several sources that bring data at the same time share one reconcile."""
        if self.kind == "pull":
            return f"pull:{self.merchant}:{self.source}:{self.day}"
        return f"reconcile:{self.merchant}:{self.day}"

    def as_json(self) -> dict:
        d = asdict(self)
        d.update(at=self.at.isoformat(), day=self.day.isoformat(),
                 first_at=self.first_at.isoformat() if self.first_at else None)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FollowUp":
        return cls(**{**d, "at": datetime.fromisoformat(d["at"]), "day": date.fromisoformat(d["day"]),
                      "first_at": datetime.fromisoformat(d["first_at"]) if d.get("first_at") else None})


@dataclass
class Result:
    status: str  # done | waiting | rejected | late | gave_up
    detail: str
    alert: list[str] = field(default_factory=list)  # merchants whose breaks may have changed
    follow_ups: list[FollowUp] = field(default_factory=list)
    notice: str | None = None  # something people must be told (no break can say it)

    def as_json(self) -> dict:
        return {"status": self.status, "detail": self.detail, "alert": self.alert, "notice": self.notice,
                "follow_ups": [f.as_json() for f in self.follow_ups]}

    @classmethod
    def from_json(cls, d: dict) -> "Result":
        return cls(d["status"], d["detail"], d.get("alert", []), [FollowUp.from_json(f) for f in d["follow_ups"]],
                   d.get("notice"))


def work(cfg: Config, kind: str, merchant: str | None = None, source: str | None = None, day: date | None = None,
         now: datetime | None = None, attempt: int = 0, first_at: datetime | None = None,
         scheduled_for: datetime | None = None) -> Result:
    """One run of a heavy job. `now`: the clock (decides what is late); `scheduled_for`: the
    time the run was due, from which its retry is counted (default: now)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    scheduled_for = scheduled_for.astimezone(timezone.utc) if scheduled_for else None
    if kind == "retrain":
        from core.anomaly.training import retrain

        trained = retrain(cfg)
        return Result("done", "; ".join(f"{'pooled' if t.scope == '*' else t.scope} v{t.version} "
                                        f"({t.rows} transactions)" for t in trained) or "nothing to train on yet")
    m = cfg.merchant(merchant)
    if kind == "pull":
        src = m.source(source or "")
        if src is None:
            raise ValueError(f"merchant {m.id} has no source {source!r}")
        return _pull(cfg, m, src, day or pull_day_for(src, now), now, attempt, first_at or scheduled_for or now,
                     scheduled_for or now)
    if kind == "reconcile":
        return _reconcile(cfg, m, day or yesterday(m, now), now)
    if kind == "hourly":
        return _hourly(cfg, m, day or today(m, now), now)
    raise ValueError(f"{kind!r} is not a job that works on records (those are: {', '.join(HEAVY)})")


def _reconcile(cfg: Config, m: MerchantConfig, day: date, now: datetime, why: str = "") -> Result:
    from core.runs import run_day

    s = run_day(cfg, m, day, now=now)
    late = sum(x.breaks.get("late", 0) for x in s.sources)
    detail = (f"{why}run #{s.run_id} of {m.id} {day}: {s.created} new, {s.updated} updated, {s.cleared} cleared"
              + (f", {late} late" if late else "")
              + (f" (carried over {', '.join(map(str, s.carried_over))})" if s.carried_over else ""))
    return Result("late" if late else "done", detail, [m.id])


def _hourly(cfg: Config, m: MerchantConfig, day: date, now: datetime) -> Result:
    from core.pull import pull_day, pullable

    same_day = [s.name for s in m.sources if pullable(s) and s.settlement_lag_days == 0]
    pulled = pull_day(cfg, m, day, same_day) if same_day else []
    result = _reconcile(cfg, m, day, now)
    if pulled:
        result.detail = f"{_outcomes(pulled)}; {result.detail}"
    return result


def _pull(cfg: Config, m: MerchantConfig, src: SourceConfig, day: date, now: datetime, attempt: int,
          first_at: datetime, due_at: datetime) -> Result:
    from core.pull import pull_day

    url = cfg.database.url
    outcomes = pull_day(cfg, m, day, [src.name])
    detail = f"{src.name} {day}, try {attempt + 1}: {_outcomes(outcomes) or 'nothing new'}"
    follow: list[FollowUp] = []
    if any(o.status == "ingested" for o in outcomes):  # new data: reconcile that day, shortly
        follow.append(FollowUp("reconcile", now + timedelta(seconds=cfg.schedule.reconcile_after_pull_seconds),
                               m.id, day))
    if completeness.arrived(url, m.id, src.name, day):
        return Result("done", detail, follow_ups=follow)
    until, is_expected_by = deadline(cfg, src, day, first_at)
    if completeness.rejections(url, m.id, src.name, day):
        # a bad file arrived: nothing to wait for; the late break will say why, from its deadline on
        at = max(now, until) if is_expected_by else now
        return Result("rejected", f"{detail}; the {day} reconcile at {at:%Y-%m-%d %H:%M} UTC reports it",
                      follow_ups=[f for f in follow if f.kind != "reconcile"] + [FollowUp("reconcile", at, m.id, day)])
    if now < until:  # counted from when this try was due: the tries keep to their times
        at = max(now, min(due_at + retry_wait(cfg, src, attempt), until))
        return Result("waiting", f"{detail}; next try at {at:%Y-%m-%d %H:%M:%S} UTC (deadline "
                                 f"{until:%Y-%m-%d %H:%M} UTC)",
                      follow_ups=follow + [FollowUp("pull", at, m.id, day, src.name, attempt + 1, first_at)])
    if is_expected_by:  # the deadline has come: reconcile now, so the late break exists from now on
        result = _reconcile(cfg, m, day, max(now, until), why=f"{detail}; statement missing at its deadline: ")
        return result
    note = (f"{m.id}: gave up pulling {src.name} for {day} after {attempt + 1} tries "
            f"(since {first_at:%Y-%m-%d %H:%M} UTC): {_outcomes(outcomes) or 'nothing arrived'}. "
            f"Set expected_by on the source to have a late statement reported as a `late` break.")
    return Result("gave_up", detail, follow_ups=follow, notice=note)


def _outcomes(outcomes) -> str:
    return "; ".join(f"{o.source}: {o.status}: {o.detail}" for o in outcomes)


# -- claims ----------------------------------------------------------------------------------

def whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(url: str, job_id: str, kind: str, scheduled_for: datetime, attempt: int = 0) -> int | None:
    """Claim the run of `job_id` for `scheduled_for`; its job_run id, or None when another
    process (or an earlier firing in this one) has it already."""
    with get_engine(url).connect() as conn:
        try:
            row_id = conn.execute(insert(JobRun).values(
                job_id=job_id, scheduled_for=scheduled_for.astimezone(timezone.utc), kind=kind, attempt=attempt,
                claimed_by=whoami(), started_at=datetime.now(timezone.utc), status="running", detail="",
            ).returning(JobRun.id)).scalar_one()
            conn.commit()
            return row_id
        except IntegrityError:
            conn.rollback()
            return None


def finish(url: str, run_id: int, status: str, detail: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(update(JobRun).where(JobRun.id == run_id).values(
            status=status, detail=detail[:4000], finished_at=datetime.now(timezone.utc)))
        conn.commit()

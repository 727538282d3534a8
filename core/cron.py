"""Cron expressions as the configuration writes them, turned into APScheduler triggers.

Five fields, as in crontab: `minute hour day month weekday` (`30 9 * * *` = 09:30 daily).
A sixth field in front gives seconds (`0 30 9 * * *`): for schedules finer than a minute,
and for tests that must see a job fire within seconds. Weekdays follow crontab (0 or 7 =
Sunday, or mon..sun). The time zone is not part of the expression: each job runs in the
zone of what it works for (a source's statement zone, a merchant's books).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger


def trigger(expr: str, timezone: str) -> CronTrigger:
    """The trigger for `expr` in `timezone`; ValueError saying what is wrong."""
    # imported here: every command loads the config, few of them schedule (40 ms at start-up)
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, weekday) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
    else:
        raise ValueError(f"{expr!r} is not a cron expression: give 5 fields (minute hour day month weekday), "
                         f"or 6 with seconds first; it has {len(fields)}")
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_crontab_weekday(weekday), timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"{expr!r} is not a valid cron expression: {exc}") from None


def check(expr: str) -> str:
    """For config validation: the expression unchanged, or ValueError."""
    trigger(expr, "UTC")
    return expr


_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _crontab_weekday(field: str) -> str:
    """crontab numbers weekdays from Sunday = 0 (and 7); APScheduler 3's day_of_week counts
    from Monday = 0 (its own from_crontab passes the numbers through unchanged). Names mean
    the same in both, so numeric parts are spelt out as the names of the days they cover."""
    out: list[str] = []
    for part in field.split(","):
        if part == "*":
            out.append(part)
            continue
        base, _, step = part.partition("/")
        ends = [0, 6] if base == "*" else base.split("-")
        if step and base == "*" or all(str(e).isdigit() for e in ends):
            if not (step == "" or step.isdigit()) or step == "0":
                raise ValueError(f"weekday step {step!r} is not a positive number")
            lo, hi = int(ends[0]), int(ends[-1] if len(ends) > 1 or not step else 6)
            if not (0 <= lo <= 7 and 0 <= hi <= 7) or lo > hi:
                raise ValueError(f"weekday {part!r} is out of range (0-7, Sunday = 0 or 7)")
            out += [_DAYS[d] for d in range(lo, hi + 1, int(step or 1)) if _DAYS[d] not in out]
        else:
            out.append(part)
    return ",".join(out)

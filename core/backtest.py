"""Replay stored days with proposed rules beside the current ones, writing nothing.

Per day and in total: matches gained and lost (per rule), breaks that appear, disappear or
change type, and auto-adjustments that would appear or disappear, with their amounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from core.policy import decide
from core.runs import compute_day


@dataclass
class DayDiff:
    day: date
    matches: dict[str, int] = field(default_factory=dict)  # rule -> new minus current
    appeared: list[dict] = field(default_factory=list)
    disappeared: list[dict] = field(default_factory=list)
    changed_type: list[tuple[dict, dict]] = field(default_factory=list)
    adjustments_added: list[tuple[dict, int]] = field(default_factory=list)
    adjustments_removed: list[tuple[dict, int]] = field(default_factory=list)

    @property
    def matches_gained(self) -> int:
        return sum(v for v in self.matches.values() if v > 0)

    @property
    def matches_lost(self) -> int:
        return -sum(v for v in self.matches.values() if v < 0)


def _identity(source: str, f: dict) -> str:
    """What a break is about, whatever type it has."""
    return f"{source}:{f['kind']}:{f['anchor_side']}:{f['anchor_ref']}"


def _snapshot(cfg, merchant, day):
    matches: dict[str, int] = {}
    breaks: dict[str, dict] = {}
    adjustments: dict[str, int] = {}
    for src, result in compute_day(cfg, merchant, day):
        for rule, n in result.matches.items():
            matches[rule] = matches.get(rule, 0) + n
        for f in result.findings:
            if f["status"] not in ("open", "in_transit"):
                continue
            key = _identity(src.name, f)
            breaks[key] = {**f, "source": src.name}
            d = decide(f, src.name, cfg, merchant.currency)
            if d.adjustment:
                adjustments[key] = d.adjustment["amount"]
    return matches, breaks, adjustments


def backtest(current_cfg, proposed_cfg, merchant_id: str | None, first: date, last: date) -> list[DayDiff]:
    cur_m = current_cfg.merchant(merchant_id)
    new_m = proposed_cfg.merchant(merchant_id)
    out = []
    day = first
    while day <= last:
        m0, b0, a0 = _snapshot(current_cfg, cur_m, day)
        m1, b1, a1 = _snapshot(proposed_cfg, new_m, day)
        diff = DayDiff(day)
        diff.matches = {r: m1.get(r, 0) - m0.get(r, 0) for r in sorted(set(m0) | set(m1)) if m1.get(r, 0) != m0.get(r, 0)}
        diff.appeared = [b1[k] for k in sorted(set(b1) - set(b0))]
        diff.disappeared = [b0[k] for k in sorted(set(b0) - set(b1))]
        diff.changed_type = [(b0[k], b1[k]) for k in sorted(set(b0) & set(b1)) if b0[k]["type"] != b1[k]["type"]]
        diff.adjustments_added = [(b1[k], a1[k]) for k in sorted(set(a1) - set(a0))]
        diff.adjustments_removed = [(b0[k], a0[k]) for k in sorted(set(a0) - set(a1))]
        out.append(diff)
        day += timedelta(days=1)
    return out

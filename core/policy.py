"""Policy: what happens to a difference once it is found (rules as data, from config).

- `duplicate_record` is a data-quality note, not money.
- A finding muted by a late statement (core/completeness) is kept quiet: severity `muted`,
  no adjustment (the channel's side of that day is incomplete).
- A single transaction at or above `tolerance.large_transaction` is urgent.
- A difference of an auto-fixable type (`policy.auto_types`) below
  `tolerance.auto_adjust_below` gets a balanced adjustment with a reason: proposed for a
  person to approve, or booked at once with `policy.auto_apply = true`.
  Everything else stays open for a person.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.money import display, to_minor


@dataclass(frozen=True)
class Decision:
    severity: str  # note | normal | urgent | muted
    adjustment: dict | None  # amount, debit_account, credit_account, reason, status
    status: str  # the break's status after the decision


def decide(finding: dict, source: str, cfg, currency: str) -> Decision:
    if finding["type"] == "duplicate_record":
        return Decision("note", None, "note")
    if finding.get("muted_by"):
        return Decision("muted", None, finding["status"])
    large = to_minor(cfg.tolerance.large_transaction, currency)
    biggest = max(abs(finding["internal_amount"] or 0), abs(finding["channel_amount"] or 0))
    severity = "urgent" if biggest >= large else "normal"
    diff = int(finding["difference"])
    if (finding["status"] != "open" or finding["type"] not in cfg.policy.auto_types or diff == 0
            or abs(diff) >= to_minor(cfg.tolerance.auto_adjust_below, currency)):
        return Decision(severity, None, finding["status"])
    debit, credit = legs(finding["type"], source, diff)
    status = "applied" if cfg.policy.auto_apply else "proposed"
    reason = (f"auto-adjust {finding['type']} of {display(diff, currency)} (below "
              f"{display(to_minor(cfg.tolerance.auto_adjust_below, currency), currency)})")
    return Decision(severity, dict(amount=abs(diff), debit_account=debit, credit_account=credit, reason=reason,
                                   status=status), "adjusted" if cfg.policy.auto_apply else "open")


def legs(break_type: str, source: str, diff: int) -> tuple[str, str]:
    """(debit, credit) accounts that book a difference of `diff` (channel - ours).

    The channel holds more than our books (diff > 0): debit the channel's clearing account,
    credit the difference account; the other way round when it holds less.
    """
    clearing, difference = f"clearing:{source}", f"{break_type}:{source}"
    return (clearing, difference) if diff > 0 else (difference, clearing)

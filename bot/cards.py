"""Platform-neutral cards: what a break looks like before any chat platform renders it."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.money import display, exponent

TITLES = {
    "short": "Short payment 短款",
    "long": "Long payment 长款",
    "amount_mismatch": "Amount mismatch 错账",
    "status_mismatch": "Status mismatch 状态不符",
    "duplicate_charge": "Duplicate charge 重复扣款",
    "fee_mismatch": "Fee deviation 手续费不符",
    "fx_difference": "FX difference 汇兑差异",
    "suggested_match": "Suggested match 待确认匹配",
    "duplicate_record": "Duplicate row 重复记录 (note)",
    "anomaly": "Anomaly 异常交易",
}


@dataclass(frozen=True)
class Button:
    action: str  # approve | assign | snooze | resolve
    label: str
    value: str  # opaque: break id and version, never an amount


@dataclass(frozen=True)
class Card:
    key: str
    title: str
    severity: str
    fields: list[tuple[str, str]]
    text: str
    evidence: list[str]
    buttons: list[Button] = field(default_factory=list)


def _minor(value: str | None, currency: str) -> int | None:
    if value is None:
        return None
    from decimal import Decimal

    return int(Decimal(value).scaleb(exponent(currency)))


def short_path(path: str) -> str:
    """Evidence paths relative to the working directory when they are under it."""
    from pathlib import Path

    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def break_card(b: dict) -> Card:
    """`b` is a break as `core.breaks.as_dict` returns it."""
    cur = b["currency"]
    status = "in transit" if b["status"] == "in_transit" else b["status"]
    fields = [
        ("Merchant", b["merchant"]),
        ("Day", b["day"]),
        ("Source", b["source"]),
        ("Order", b["order_id"] or "—"),
        ("Channel txn", b["txn_id"] or "—"),
        ("Our books", display(_minor(b["internal_amount"], cur), cur)),
        ("Channel", display(_minor(b["channel_amount"], cur), cur)),
        ("Difference", display(_minor(b["difference"], cur), cur)),
        ("Status", status),
    ]
    if b.get("anomaly_score") is not None:
        fields.append(("Anomaly score", f"{b['anomaly_score']:.2f} ({b.get('severity', 'normal')})"))
    ref = f"{b['id']}:{b['version']}"
    buttons = [] if b["status"] != "open" else [
        Button("approve", "Approve adjustment", ref),
        Button("assign", "Assign to me", ref),
        Button("resolve", "Resolve", ref),
    ]
    if b["type"] == "anomaly" and buttons:  # nothing to adjust: a person says whether it is expected
        buttons = [Button("expected", "Expected", ref), Button("assign", "Assign to me", ref),
                   Button("resolve", "Resolve", ref)]
    return Card(
        key=f"break:{b['id']}",
        title=f"#{b['id']} {TITLES.get(b['type'], b['type'])}",
        severity="info" if b["status"] == "in_transit" else "warning",
        fields=fields,
        text=b["explanation"],
        evidence=[f"{e['side']}: {short_path(e['file'])}:{e['line']}" for e in b["evidence"]],
        buttons=buttons,
    )

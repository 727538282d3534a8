"""Platform-neutral cards: what a break (or a command's answer) looks like before any chat
platform renders it. English or Chinese (WeCom's default); every button carries only an
opaque "break id:version[:argument]", never an amount to act on.
"""

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
    "late": "Late statement 账单未到",
    "anomaly": "Anomaly 异常交易",
}
TITLES_ZH = {
    "short": "短款", "long": "长款", "amount_mismatch": "错账", "status_mismatch": "状态不符",
    "duplicate_charge": "重复扣款", "fee_mismatch": "手续费不符", "fx_difference": "汇兑差异",
    "suggested_match": "待确认匹配", "duplicate_record": "重复记录", "anomaly": "异常交易",
}

WORDS = {
    "en": {
        "Merchant": "Merchant", "Day": "Day", "Source": "Source", "Order": "Order", "Channel txn": "Channel txn",
        "Our books": "Our books", "Channel": "Channel", "Difference": "Difference", "Status": "Status",
        "Assigned": "Assigned to", "Approvals": "Approvals", "Snoozed": "Snoozed until",
        "Anomaly score": "Anomaly score",
        "approve": "Approve adjustment", "assign_me": "Assign to me", "assign_to": "Assign to…",
        "snooze": "Snooze 1 day", "resolve": "Resolve", "cancel": "Back",
        "confirm": "Approve an adjustment of {amount}?", "pick": "Assign to whom?",
        "in_transit": "in transit", "open": "open", "adjusted": "adjusted", "resolved": "resolved",
        "cleared": "cleared", "note": "note",
    },
    "zh": {
        "Merchant": "商户", "Day": "业务日", "Source": "渠道", "Order": "订单号", "Channel txn": "渠道流水号",
        "Our books": "我方账面", "Channel": "渠道金额", "Difference": "差额", "Status": "状态",
        "Assigned": "处理人", "Approvals": "审批", "Snoozed": "暂缓至", "Anomaly score": "异常分",
        "approve": "批准调账", "assign_me": "指派给我", "assign_to": "指派给…",
        "snooze": "暂缓一天", "resolve": "标记已解决", "cancel": "返回",
        "confirm": "确认批准 {amount} 的调账？", "pick": "指派给谁？",
        "in_transit": "在途", "open": "待处理", "adjusted": "已调账", "resolved": "已解决",
        "cleared": "已清除", "note": "提示",
    },
}


@dataclass(frozen=True)
class Button:
    action: str  # approve | assign_me | assign_to | snooze | resolve | cancel
    label: str
    value: str  # opaque: "break id:version[:argument]", never an amount
    confirm: str | None = None  # ask before acting (Slack confirm dialog)
    style: str = ""  # primary | danger | "" (platforms that know styles use it)


@dataclass(frozen=True)
class Image:
    """A picture a card carries (a chart): each platform uploads it its own way."""

    png: bytes
    filename: str
    alt: str  # what it shows, in words (alt text; the caption where a platform has one)


@dataclass(frozen=True)
class Card:
    key: str
    title: str
    severity: str
    fields: list[tuple[str, str]]
    text: str  # with an image: the line sent instead when the image cannot be uploaded
    evidence: list[str]
    buttons: list[Button] = field(default_factory=list)
    note: str = ""  # the outcome line, e.g. "Approved by alice at 10:42 UTC"
    image: Image | None = None


@dataclass(frozen=True)
class CardState:
    """What the workflow knows beyond the break row (bot/actions.py fills it in)."""

    approvals: tuple[str, ...] = ()  # names of the approvers so far
    needed: int = 1  # approvals needed for this amount
    assignee: str | None = None
    confirm_from: int | None = None  # minor units; ask for confirmation at or above
    note: str = ""
    picker: tuple[tuple[int, str], ...] = ()  # (user id, name): "Assign to…" is open


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


def break_buttons(b: dict, state: CardState, lang: str) -> list[Button]:
    w = WORDS[lang]
    ref = f"{b['id']}:{b['version']}"
    if b["status"] != "open":
        return []
    if state.picker:
        return [Button("assign_to", name, f"{ref}:{uid}") for uid, name in state.picker[:5]] + \
               [Button("cancel", w["cancel"], ref)]
    cur = b["currency"]
    diff = _minor(b["difference"], cur) or 0
    buttons = []
    # an anomaly has nothing to adjust: a person looks (`recon anomaly expected` records "expected")
    if diff and b["type"] != "anomaly":
        label = w["approve"] + (f" ({len(state.approvals)}/{state.needed})" if state.needed > 1 else "")
        ask = None
        if state.confirm_from is not None and abs(diff) >= state.confirm_from:
            ask = w["confirm"].format(amount=display(abs(diff), cur))
        buttons.append(Button("approve", label, ref, confirm=ask, style="primary"))
    buttons += [Button("assign_me", w["assign_me"], ref), Button("assign_to", w["assign_to"], ref),
                Button("snooze", w["snooze"], ref), Button("resolve", w["resolve"], ref)]
    return buttons


def break_card(b: dict, lang: str = "en", state: CardState = CardState()) -> Card:
    """`b` is a break as `core.breaks.as_dict` returns it."""
    w = WORDS[lang]
    cur = b["currency"]
    fields = [
        (w["Merchant"], b["merchant"]),
        (w["Day"], b["day"]),
        (w["Source"], b["source"]),
        (w["Order"], b["order_id"] or "—"),
        (w["Channel txn"], b["txn_id"] or "—"),
        (w["Our books"], display(_minor(b["internal_amount"], cur), cur)),
        (w["Channel"], display(_minor(b["channel_amount"], cur), cur)),
        (w["Difference"], display(_minor(b["difference"], cur), cur)),
        (w["Status"], w.get(b["status"], b["status"])),
    ]
    if state.assignee:
        fields.append((w["Assigned"], state.assignee))
    if state.needed > 1 and b["status"] == "open":
        fields.append((w["Approvals"], f"{len(state.approvals)}/{state.needed}"
                       + (f" ({', '.join(state.approvals)})" if state.approvals else "")))
    if b.get("snoozed_until"):
        fields.append((w["Snoozed"], b["snoozed_until"]))
    if b.get("anomaly_score") is not None:
        fields.append((w["Anomaly score"], f"{b['anomaly_score']:.2f} ({b.get('severity', 'normal')})"))
    titles = TITLES_ZH if lang == "zh" else TITLES
    return Card(
        key=f"break:{b['id']}",
        title=f"#{b['id']} {titles.get(b['type'], b['type'])}",
        severity="info" if b["status"] in ("in_transit", "note") or b.get("severity") == "muted" else "warning",
        fields=fields,
        text=(w["pick"] if state.picker else b["explanation"]),
        evidence=[f"{e['side']}: {short_path(e['file'])}" + (f":{e['line']}" if e["line"] is not None else "")
                  for e in b["evidence"]],
        buttons=break_buttons(b, state, lang),
        note=state.note,
    )


def text_card(title: str, lines: list[str], fields: list[tuple[str, str]] | None = None, key: str = "reply") -> Card:
    """A command's answer: a title, optional key-value lines and plain lines, no buttons."""
    return Card(key=key, title=title, severity="info", fields=fields or [], text="\n".join(lines), evidence=[])


# -- the alert pipeline's own cards (bot/alerts.py) ------------------------------------------

ALERT_WORDS = {
    "en": {
        "digest": "{merchant} · {source} · {day}: {n} open breaks",
        "digest_done": "{merchant} · {source} · {day}: nothing open",
        "digest_line": "{n} · {total}", "largest": "Largest:", "more": "… and {n} more",
        "approve_all": "Approve {n} small adjustments", "approve_all_ask": "Approve {n} adjustments, {total} in all?",
        "late": "{merchant} · {source} · {day}: statement late",
        "late_muted": "{n} per-order findings of this source and day are held back until the statement arrives.",
        "escalated": "Escalated (level {level}): no action for {minutes} minutes.",
        "closed": {"cleared": "Cleared: the money arrived", "resolved": "Resolved", "adjusted": "Adjusted",
                   "gone": "No longer open"},
        "route_disabled": "Alert route disabled",
        "route_disabled_text": "{channel} {target} was disabled after a permanent error: {error}. "
                               "Fix it (invite the bot, check the id), then `recon alerts enable {channel} {target}`.",
        "daily": "{merchant} · {day}: daily digest", "daily_line": "open {n} ({total}) · in transit {t}",
        "nothing": "Nothing open.",
        "job_failed": "reconbot: a scheduled job failed", "job_notice": "reconbot: a job could not do its work",
    },
    "zh": {
        "digest": "{merchant} · {source} · {day}：{n} 笔待处理差异",
        "digest_done": "{merchant} · {source} · {day}：无待处理差异",
        "digest_line": "{n} 笔 · {total}", "largest": "金额最大：", "more": "…… 另有 {n} 条",
        "approve_all": "批准 {n} 笔小额调账", "approve_all_ask": "确认批准 {n} 笔调账，共 {total}？",
        "late": "{merchant} · {source} · {day}：账单未到",
        "late_muted": "该渠道当日的 {n} 条逐笔差异暂不提醒，待账单到达后再核对。",
        "escalated": "已升级（第 {level} 级）：{minutes} 分钟内无人处理。",
        "closed": {"cleared": "已清除：款项已到账", "resolved": "已解决", "adjusted": "已调账", "gone": "已不再待处理"},
        "route_disabled": "提醒通道已停用",
        "route_disabled_text": "{channel} {target} 出现永久性错误，已停用：{error}。"
                               "修复后（邀请机器人、核对 id）运行 `recon alerts enable {channel} {target}`。",
        "daily": "{merchant} · {day}：每日汇总", "daily_line": "待处理 {n} 笔（{total}）· 在途 {t} 笔",
        "nothing": "没有待处理差异。",
        "job_failed": "reconbot：定时任务失败", "job_notice": "reconbot：任务未能完成",
    },
}


def card_to_json(card: Card) -> str:
    """A card as the outbox stores it (alert cards carry no image)."""
    import json
    from dataclasses import asdict

    d = asdict(card)
    d.pop("image", None)
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def card_from_json(text: str) -> Card:
    import json

    d = json.loads(text)
    d["fields"] = [tuple(f) for f in d["fields"]]
    d["buttons"] = [Button(**b) for b in d["buttons"]]
    return Card(**d)

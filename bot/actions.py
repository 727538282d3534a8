"""Button actions: one authorised state transition per click, applied exactly once.

Every click arrives (already verified by its channel) as a `Click`: an action, the break
id and the break version the card showed, and nothing else from the card. The break is
re-read from the database; the change is one UPDATE ... WHERE id = ? AND version = ? AND
status = 'open' (compare-and-set), with the audit event, approval and adjustment written in
the same transaction. A double click, two approvers at once or a re-delivered request finds
the version moved on and is told who acted first.

Adjustments at or above `chat.two_approvers_from` need two different approvers; the first
approval moves the version on and the card shows "1/2".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlmodel import Session

from bot.cards import Card, CardState, break_card
from bot.users import ROLES, Actor, user_by_id
from core.breaks import as_dict
from core.config import Config
from core.money import display, to_major, to_minor
from core.policy import legs
from models.db import get_engine
from models.tables import Adjustment, AuditEvent, Break, BreakApproval, Escalation, User

REQUIRED_ROLE = {"approve": "approver", "assign_me": "reviewer", "assign_to": "reviewer", "snooze": "reviewer",
                 "resolve": "reviewer", "cancel": "viewer", "approve_all": "approver"}
CHANGES_STATE = ("approve", "assign_me", "assign_to", "snooze", "resolve")
SNOOZE = timedelta(days=1)

MESSAGES = {
    "en": {
        "approve": "Approved by {who} at {at}", "approve_partial": "Approved by {who} at {at} ({n}/{needed})",
        "assign": "Assigned to {whom} by {who} at {at}", "snooze": "Snoozed for a day by {who} at {at}",
        "resolve": "Resolved by {who} at {at}", "cleared": "Cleared by the run at {at}",
        "lost": "Already done: {what}.", "stale": "This card was out of date; it now shows the current state.",
        "unknown": "Break #{id} no longer exists.", "scope": "Break #{id} belongs to a merchant outside your scope.",
        "role": "You are a {role}; this needs a {needed}.",
        "limit": "{amount} is above your approval limit of {limit}.",
        "twice": "You approved already; a second, different approver is needed ({n}/{needed}).",
        "nothing": "There is no difference to adjust; resolve it instead.",
        "not_reviewer": "{name} cannot take breaks of this merchant.", "not_open": "Break #{id} is {status}.",
        "done": "Done.", "bulk": "Approved {n} of {m} adjustments.", "bulk_none": "Nothing approved: {why}",
        "no_digest": "That digest no longer exists.",
    },
    "zh": {
        "approve": "{who} 于 {at} 批准", "approve_partial": "{who} 于 {at} 批准（{n}/{needed}）",
        "assign": "{who} 于 {at} 指派给 {whom}", "snooze": "{who} 于 {at} 暂缓一天",
        "resolve": "{who} 于 {at} 标记已解决", "cleared": "对账于 {at} 自动清除",
        "lost": "已有人处理：{what}。", "stale": "卡片已过期，现已刷新为最新状态。",
        "unknown": "差异 #{id} 已不存在。", "scope": "差异 #{id} 不在您负责的商户范围内。",
        "role": "您的角色是 {role}，此操作需要 {needed}。",
        "limit": "{amount} 超出您的审批额度 {limit}。",
        "twice": "您已批准过，需要另一位审批人（{n}/{needed}）。",
        "nothing": "没有可调账的差额，请标记已解决。",
        "not_reviewer": "{name} 无权处理该商户的差异。", "not_open": "差异 #{id} 当前状态：{status}。",
        "done": "已完成。", "bulk": "已批准 {n}/{m} 笔调账。", "bulk_none": "未批准任何调账：{why}",
        "no_digest": "该汇总已不存在。",
    },
}


@dataclass(frozen=True)
class Click:
    action: str
    break_id: int
    version: int
    arg: str | None = None  # assign_to: the chosen user's id
    platform: str = "console"
    request_hash: str | None = None


def parse_click(action: str, value: str, platform: str, request_hash: str | None = None) -> Click:
    """A button's opaque value "id:version[:arg]" -> Click; ValueError when malformed."""
    if action not in REQUIRED_ROLE:
        raise ValueError(f"unknown action {action!r}")
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:2]) or len(value) > 64:
        raise ValueError(f"malformed button value {value!r}")
    arg = parts[2] if len(parts) == 3 else None
    if arg is not None and not arg.isdigit():
        raise ValueError(f"malformed button argument {arg!r}")
    return Click(action, int(parts[0]), int(parts[1]), arg, platform, request_hash)


@dataclass(frozen=True)
class Outcome:
    status: str  # applied | partial | lost | stale | refused | picker | shown
    message: str  # for the person who clicked (toast, ephemeral message, console line)
    card: Card | None  # the card as it should look now (edit in place); None: leave it
    break_id: int | None = None

    @property
    def changed(self) -> bool:
        return self.status in ("applied", "partial")


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC


class Workflow:
    """The use-cases behind the buttons, for one configuration (one database)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.url = cfg.database.url

    # -- what a card shows ------------------------------------------------------------
    def _tz(self, merchant_id: str) -> ZoneInfo:
        for m in self.cfg.merchants:
            if m.id == merchant_id:
                return ZoneInfo(m.timezone)
        return ZoneInfo("UTC")

    def _at(self, when: datetime, merchant_id: str) -> str:
        tz = self._tz(merchant_id)
        local = _utc(when).astimezone(tz)
        day = "" if local.date() == datetime.now(tz).date() else local.strftime("%Y-%m-%d ")  # today: time only
        return day + local.strftime("%H:%M ") + ("UTC" if str(tz) == "UTC" else local.strftime("%Z") or str(tz))

    def needed(self, amount: int, currency: str) -> int:
        return 2 if amount >= to_minor(self.cfg.chat.two_approvers_from, currency) else 1

    def amount_of(self, s: Session, b: Break) -> int:
        adj = s.execute(select(Adjustment).where(Adjustment.break_id == b.id)).scalars().first()
        return adj.amount if adj is not None else abs(b.difference)

    def _note(self, s: Session, b: Break, lang: str) -> str:
        """The card's outcome line, from the latest person's (or run's) audit event."""
        ev = s.execute(select(AuditEvent).where(
            AuditEvent.subject_type == "break", AuditEvent.subject_id == str(b.id),
            AuditEvent.action.in_(("approve", "approve_partial", "assign", "snooze", "resolve", "cleared")))
            .order_by(AuditEvent.id.desc()).limit(1)).scalars().first()
        if ev is None:
            return ""
        detail = json.loads(ev.detail or "{}")
        return MESSAGES[lang][ev.action].format(who=ev.actor, at=self._at(ev.at, b.merchant_id),
                                                whom=detail.get("assignee", ""), n=detail.get("approvals", ""),
                                                needed=detail.get("needed", ""))

    def card(self, break_id: int, lang: str = "en", picker: bool = False) -> Card | None:
        with Session(get_engine(self.url)) as s:
            b = s.get(Break, break_id)
            if b is None:
                return None
            return self._card(s, b, lang, picker)

    def _card(self, s: Session, b: Break, lang: str, picker: bool = False) -> Card:
        approvals = tuple(s.execute(select(User.name).join(BreakApproval, BreakApproval.user_id == User.id)
                                    .where(BreakApproval.break_id == b.id).order_by(BreakApproval.id)).scalars())
        assignee = s.get(User, b.assignee_id).name if b.assignee_id else None
        amount = self.amount_of(s, b)
        state = CardState(
            approvals=approvals, needed=self.needed(amount, b.currency), assignee=assignee,
            confirm_from=to_minor(self.cfg.chat.confirm_from, b.currency), note=self._note(s, b, lang),
            picker=tuple(self._reviewers(s, b.merchant_id)) if picker else ())
        d = as_dict(b)
        snoozed = _utc(b.snoozed_until)
        if snoozed and snoozed > datetime.now(timezone.utc):
            d["snoozed_until"] = self._at(snoozed, b.merchant_id)
        return break_card(d, lang, state)

    def _reviewers(self, s: Session, merchant_id: str) -> list[tuple[int, str]]:
        users = s.execute(select(User).where(User.role.in_(ROLES[1:])).order_by(User.name)).scalars()
        return [(u.id, u.name) for u in users if u.merchants == "*" or merchant_id in u.merchants.split(",")]

    # -- the transition -------------------------------------------------------------------
    def act(self, actor: Actor, click: Click, lang: str = "en") -> Outcome:
        msg = MESSAGES[lang]
        if click.action == "approve_all":
            return self.approve_all(actor, click, lang)
        with Session(get_engine(self.url)) as s:
            b = s.get(Break, click.break_id)
            if b is None:
                return Outcome("refused", msg["unknown"].format(id=click.break_id), None)
            if not actor.may_see(b.merchant_id):
                return Outcome("refused", msg["scope"].format(id=b.id), None, b.id)
            needed_role = REQUIRED_ROLE[click.action]
            if not actor.at_least(needed_role):
                return Outcome("refused", msg["role"].format(role=actor.role, needed=needed_role), None, b.id)
            if click.action == "cancel" or (click.action == "assign_to" and click.arg is None):
                picker = click.action == "assign_to" and b.status == "open"
                return Outcome("picker" if picker else "shown", "", self._card(s, b, lang, picker), b.id)
            if b.version != click.version or b.status != "open":
                return self._lost(s, b, lang)
            return self._apply(s, b, actor, click, lang)

    def _lost(self, s: Session, b: Break, lang: str) -> Outcome:
        msg = MESSAGES[lang]
        note = self._note(s, b, lang)
        if note:
            text = msg["lost"].format(what=note)
        elif b.status != "open":
            text = msg["not_open"].format(id=b.id, status=b.status)
        else:
            text = msg["stale"]
        return Outcome("lost" if note else "stale", text, self._card(s, b, lang), b.id)

    def _apply(self, s: Session, b: Break, actor: Actor, click: Click, lang: str) -> Outcome:
        msg = MESSAGES[lang]
        now = datetime.now(timezone.utc)
        amount = self.amount_of(s, b)
        values: dict = {"version": b.version + 1, "updated_at": now}
        detail: dict = {"version": click.version}
        action = click.action
        if action == "approve":
            if amount == 0:
                return Outcome("refused", msg["nothing"], None, b.id)
            limit = actor.approval_limit
            if limit is not None and Decimal(to_major(amount, b.currency)) > limit:
                return Outcome("refused", msg["limit"].format(amount=display(amount, b.currency),
                                                              limit=f"{limit} {b.currency}"), None, b.id)
            needed = self.needed(amount, b.currency)
            approvers = set(s.execute(select(BreakApproval.user_id).where(BreakApproval.break_id == b.id)).scalars())
            if actor.id in approvers:
                s.refresh(b)
                if b.version != click.version or b.status != "open":  # my own click won a moment ago
                    return self._lost(s, b, lang)
                return Outcome("refused", msg["twice"].format(n=len(approvers), needed=needed), None, b.id)
            final = len(approvers) + 1 >= needed
            if final:
                values["status"] = "adjusted"
            detail.update(approvals=len(approvers) + 1, needed=needed)
            audit_action = "approve" if final else "approve_partial"
        elif action in ("assign_me", "assign_to"):
            target = actor if action == "assign_me" else user_by_id(self.url, int(click.arg))
            if target is None or not target.may_see(b.merchant_id) or not target.at_least("reviewer"):
                return Outcome("refused", msg["not_reviewer"].format(name=target.name if target else "?"), None, b.id)
            values["assignee_id"] = target.id
            detail["assignee"] = target.name
            audit_action = "assign"
        elif action == "snooze":
            values["snoozed_until"] = now + SNOOZE
            audit_action = "snooze"
        else:
            values["status"] = "resolved"
            audit_action = "resolve"

        b_id, merchant, currency, difference, source, btype = (b.id, b.merchant_id, b.currency, b.difference,
                                                                b.source, b.type)
        s.expunge(b)  # from here on the database row, not this copy, is the truth
        won = s.execute(update(Break).where(Break.id == b_id, Break.version == click.version, Break.status == "open")
                        .values(**values).execution_options(synchronize_session=False)).rowcount
        if won != 1:
            s.rollback()
            return self._lost(s, s.get(Break, b_id), lang)
        if action == "approve":
            s.add(BreakApproval(break_id=b_id, user_id=actor.id, at=now))
            if values.get("status") == "adjusted":
                self._book(s, b_id, source, btype, difference, currency, actor, click.platform)
        s.add(AuditEvent(at=now, actor=actor.name, action=audit_action, subject_type="break", subject_id=str(b_id),
                         platform=click.platform, amount=amount, request_hash=click.request_hash,
                         detail=json.dumps({**detail, "merchant": merchant}, ensure_ascii=False)))
        # someone acted on it: it escalates no further (in the same transaction as the action)
        s.execute(update(Escalation).where(Escalation.break_id == b_id, Escalation.state == "pending")
                  .values(state="cancelled", done_at=now, reason=audit_action)
                  .execution_options(synchronize_session=False))
        s.commit()
        fresh = s.get(Break, b_id)
        note = self._note(s, fresh, lang)
        status = "partial" if audit_action == "approve_partial" else "applied"
        return Outcome(status, note or msg["done"], self._card(s, fresh, lang), b_id)

    def approve_all(self, actor: Actor, click: Click, lang: str = "en") -> Outcome:
        """A digest's bulk approval: each break the card listed, at the version it showed, goes
        through `act` (authorised, compare-and-set, audited): a second click, or a break that
        changed since, approves nothing more."""
        from bot.digests import DigestKey, digest_card, members

        msg = MESSAGES[lang]
        with Session(get_engine(self.url)) as s:
            row, listed = members(s, click.break_id)
        if row is None:
            return Outcome("refused", msg["no_digest"], None)
        if not actor.may_see(row.merchant_id):
            return Outcome("refused", msg["scope"].format(id=click.break_id), None)
        if not actor.at_least("approver"):
            return Outcome("refused", msg["role"].format(role=actor.role, needed="approver"), None)
        outcomes = [self.act(actor, Click("approve", bid, version, None, click.platform, click.request_hash), lang)
                    for bid, version in listed]
        applied = sum(1 for o in outcomes if o.changed)
        _, merchant, source, day = row.card_key.split(":")
        key = DigestKey(merchant, source, date.fromisoformat(day))
        with Session(get_engine(self.url)) as s:
            still = list(s.execute(select(Break).where(Break.merchant_id == merchant, Break.source == source,
                                                       Break.business_day == key.day, Break.status == "open",
                                                       Break.severity != "muted")).scalars())
            from bot.alerts import own_card  # the pipeline's rule for what stays in a digest

            card = digest_card(self.cfg, s, key, [b for b in still if not own_card(self.cfg, b)], lang,
                               self.cfg.alerts.digest_top)
        if applied:
            return Outcome("applied", msg["bulk"].format(n=applied, m=len(listed)), card)
        first = next((o for o in outcomes if o.message), None)
        return Outcome("lost", msg["bulk_none"].format(why=first.message if first else "—"), card)

    @staticmethod
    def _book(s: Session, break_id: int, source: str, btype: str, difference: int, currency: str, actor: Actor,
              platform: str) -> None:
        """Approve the proposed adjustment, or write one (the break had none)."""
        adj = s.execute(select(Adjustment).where(Adjustment.break_id == break_id)).scalars().first()
        if adj is not None:
            if adj.status == "proposed":
                adj.status = "approved"
            return
        debit, credit = legs(btype, source, difference)
        s.add(Adjustment(break_id=break_id, amount=abs(difference), currency=currency, debit_account=debit,
                         credit_account=credit, status="approved", created_by=actor.name,
                         reason=f"{btype} of {display(difference, currency)} approved by {actor.name} via {platform}"))

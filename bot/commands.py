"""`/recon ...`: the command grammar, parsed once for every platform, and its use-cases.

    /recon today | yesterday | YYYY-MM-DD   per-source summary of a business day
    /recon pending                          open breaks, largest first
    /recon mine                             open breaks assigned to me
    /recon run [today|yesterday|YYYY-MM-DD] reconcile a day now (approvers)
    /recon link CODE                        link this chat account to a reconbot user
    /recon help                             this list (also the answer to anything unknown)

Answers are platform-neutral cards; each channel renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

from bot.cards import Card, text_card
from bot.users import Actor, UserError, identify, redeem_link_code
from core.config import Config
from core.money import display
from core.summary import day_summary, open_breaks

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ALIASES = {"今天": "today", "昨天": "yesterday", "待处理": "pending", "我的": "mine", "帮助": "help"}
PENDING_LIMIT = 10


@dataclass(frozen=True)
class Command:
    name: str  # summary | pending | mine | run | link | help
    day: str | None = None  # "today" | "yesterday" | "YYYY-MM-DD" (resolved per merchant time zone)
    arg: str | None = None
    unknown: str | None = None  # what was not understood (help says so)


def parse(text: str) -> Command:
    """Any input -> a Command; what is not understood becomes help, never silence."""
    words = text.strip().split()
    if words and re.fullmatch(r"/?recon(@\w+)?", words[0], re.IGNORECASE):  # "/recon@mybot today" (Telegram)
        words = words[1:]
    words = [ALIASES.get(w, w.lower() if w.isascii() else w) for w in words]
    if not words:
        return Command("help")
    head, rest = words[0], words[1:]
    if head in ("today", "yesterday") or DATE.match(head):
        return Command("summary", day=head) if not rest else Command("help", unknown=" ".join(words))
    if head in ("pending", "mine", "help") and not rest:
        return Command(head)
    if head == "run" and len(rest) <= 1:
        day = rest[0] if rest else "yesterday"
        if day in ("today", "yesterday") or DATE.match(day):
            return Command("run", day=day)
    if head == "link" and len(rest) == 1 and re.fullmatch(r"[0-9A-Fa-f]{8}", rest[0]):
        return Command("link", arg=rest[0])
    return Command("help", unknown=" ".join(words))


def resolve_day(day: str, tz: str) -> date:
    today = datetime.now(ZoneInfo(tz)).date()
    if day == "today":
        return today
    if day == "yesterday":
        return today - timedelta(days=1)
    return date.fromisoformat(day)


HELP = [
    "/recon today · /recon yesterday · /recon YYYY-MM-DD: the day per source",
    "/recon pending: open breaks, largest first",
    "/recon mine: open breaks assigned to you",
    "/recon run [DATE]: reconcile a day now (approvers)",
    "/recon link CODE: link this account (an admin gets the code from `recon users link NAME`)",
]


@dataclass
class Reply:
    cards: list[Card]
    # work that takes longer than a platform waits for an answer (a run): its cards are
    # sent to the same chat when it is done
    later: Callable[[], list[Card]] | None = None
    notes: list[str] = field(default_factory=list)


class Commands:
    def __init__(self, cfg: Config, run_in_subprocess: bool = False) -> None:
        self.cfg = cfg
        self.url = cfg.database.url
        # `recon serve` pools its SQLite connections, so it must not do bulk I/O itself:
        # a run started from the chat is then `recon run` in a process of its own
        self.run_in_subprocess = run_in_subprocess

    def answer(self, platform: str, platform_user_id: str, text: str, chat: str | None = None) -> Reply:
        """`chat`: where it was asked; a chat routed to some merchants answers for those."""
        cmd = parse(text)
        if cmd.name == "help":
            lines = ([f"I did not understand “{cmd.unknown}”."] if cmd.unknown else []) + HELP
            return Reply([text_card("reconbot: commands", lines)])
        if cmd.name == "link":
            try:
                user = redeem_link_code(self.url, cmd.arg, platform, platform_user_id)
            except UserError as exc:
                return Reply([text_card("Not linked", [str(exc)])])
            return Reply([text_card("Linked", [f"This {platform} account now acts as {user.name} ({user.role})."])])
        actor = identify(self.url, platform, platform_user_id)
        if actor is None:
            return Reply([text_card("Not linked", [
                f"This {platform} account ({platform_user_id}) is not linked to a reconbot user.",
                "Ask an admin to run `recon users link NAME` and type /recon link CODE here."])])
        merchants = actor.scope([m.id for m in self.cfg.merchants])
        routed = {r.merchant for r in self.cfg.chat.routes
                  if r.channel == platform and chat is not None and chat in r.target.split("|")}
        if routed and "*" not in routed:
            merchants = [m for m in merchants if m in routed]
        if not merchants:
            return Reply([text_card("Nothing to show", ["No configured merchant is in your scope."])])
        if cmd.name == "summary":
            return Reply([self.summary(m, resolve_day(cmd.day, self.cfg.merchant(m).timezone)) for m in merchants])
        if cmd.name in ("pending", "mine"):
            return Reply([self.pending(actor, merchants, mine=cmd.name == "mine")])
        # run
        if not actor.at_least("approver"):
            return Reply([text_card("Not allowed", [f"You are a {actor.role}; starting a run needs an approver."])])
        days = {m: resolve_day(cmd.day, self.cfg.merchant(m).timezone) for m in merchants}
        started = text_card("Run started", [f"{m} {d}: reconciling; the summary follows here." for m, d in days.items()])
        return Reply([started], later=lambda: [self._run(m, d) for m, d in days.items()])

    def _run(self, merchant_id: str, day: date) -> Card:
        if self.run_in_subprocess:
            import subprocess
            import sys

            config = [] if self.cfg.origin.startswith("<") else ["--config", self.cfg.origin]
            done = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "run", "--day",
                                   day.isoformat(), "--merchant", merchant_id, *config],
                                  capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                return text_card(f"{merchant_id} · {day}: run failed", (done.stderr.strip().splitlines() or ["?"])[-3:])
        else:
            from core.runs import run_day

            run_day(self.cfg, self.cfg.merchant(merchant_id), day)
        return self.summary(merchant_id, day)

    def summary(self, merchant_id: str, day: date) -> Card:
        cur = self.cfg.merchant(merchant_id).currency
        s = day_summary(self.url, merchant_id, day)
        title = f"{merchant_id} · {day}"
        if s.run_id is None and not s.sources:
            return text_card(title, [f"Not reconciled yet: /recon run {day}"], key=f"summary:{merchant_id}:{day}")
        fields = []
        for x in s.sources:
            breaks = ", ".join(f"{t} {n}" for t, n in sorted(x.breaks.items())) or "none"
            fields.append((x.source, f"ours {x.internal_payments} · {display(x.internal_amount, cur)} | "
                                     f"channel {x.channel_payments} · {display(x.channel_amount, cur)} | "
                                     f"matched {x.matched_pct:.1f}% | fees {display(x.fees, cur)} | "
                                     f"open breaks: {breaks}"
                                     + (f" ({display(x.open_difference, cur)})" if x.open_difference else "")
                                     + (f" | in transit {x.in_transit}" if x.in_transit else "")))
        lines = [f"run #{s.run_id}" if s.run_id else "no finished run for this day"]
        return text_card(title, lines, fields, key=f"summary:{merchant_id}:{day}")

    def pending(self, actor: Actor, merchants: list[str], mine: bool = False) -> Card:
        rows, total = open_breaks(self.url, merchants, actor.id if mine else None, PENDING_LIMIT)
        title = "Assigned to you" if mine else "Open breaks"
        if not rows:
            return text_card(title, ["Nothing open." if not mine else "Nothing assigned to you."])
        lines = [f"#{b.id} {b.merchant_id} {b.business_day} {b.source} {b.type} "
                 f"{b.order_id or b.txn_id or ''} {display(b.difference, b.currency)}" for b in rows]
        if total > len(rows):
            lines.append(f"… and {total - len(rows)} more")
        return text_card(f"{title} ({total})", lines)

"""`/recon ...`: the command grammar, parsed once for every platform, and its use-cases.

    /recon today | yesterday | YYYY-MM-DD   per-source summary of a business day
    /recon pending                          open breaks, largest first
    /recon mine                             open breaks assigned to me
    /recon run [today|yesterday|YYYY-MM-DD] reconcile a day now (approvers)
    /recon link CODE                        link this chat account to a reconbot user
    /recon silence [merchant=M] [source=S] [type=T] [day=YYYY-MM-DD] for=2d REASON...
                                            no new alert cards for matching breaks (approvers)
    /recon silence list | /recon silence end ID
    /recon help                             this list (also the answer to anything unknown)

Answers are platform-neutral cards; each channel renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

from bot.cards import Card, Image, text_card
from bot.users import Actor, UserError, identify, redeem_link_code
from core.config import Config, ConfigError
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
    options: tuple[tuple[str, str], ...] = ()  # silence: the matchers and `for`; arg: the reason

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


def parse(text: str) -> Command:
    """Any input -> a Command; what is not understood becomes help, never silence."""
    words = text.strip().split()
    if words and re.fullmatch(r"/?recon(@\w+)?", words[0], re.IGNORECASE):  # "/recon@mybot today" (Telegram)
        words = words[1:]
    if len(words) > 0 and words[0].lower() in ("silence", "静默"):
        return parse_silence(words[1:])
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


SILENCE_KEYS = ("merchant", "source", "type", "day", "for")


def parse_silence(words: list[str]) -> Command:
    """`silence list`, `silence end ID`, or matchers (key=value), `for=DURATION` and a reason.
    Case is kept (merchant ids and reasons are the user's words)."""
    said = "silence " + " ".join(words)
    if [w.lower() for w in words] == ["list"]:
        return Command("silence_list")
    if len(words) == 2 and words[0].lower() == "end" and words[1].lstrip("#").isdigit():
        return Command("silence_end", arg=words[1].lstrip("#"))
    options, reason = [], []
    for w in words:
        key, eq, value = w.partition("=")
        if eq and key.lower() in SILENCE_KEYS and value:
            options.append((key.lower(), value))
        else:
            reason.append(w)
    if not words or dict(options).get("for") is None or not reason:
        return Command("help", unknown=said)
    if dict(options).get("day") is not None and not DATE.match(dict(options)["day"]):
        return Command("help", unknown=said)
    return Command("silence_add", arg=" ".join(reason), options=tuple(options))


def resolve_day(day: str, tz: str) -> date:
    today = datetime.now(ZoneInfo(tz)).date()
    if day == "today":
        return today
    if day == "yesterday":
        return today - timedelta(days=1)
    return date.fromisoformat(day)


TEXT = {
    "en": {
        "help_title": "reconbot: commands", "unknown": "I did not understand “{text}”.",
        "help": ["/recon today · /recon yesterday · /recon YYYY-MM-DD: the day per source",
                 "/recon pending: open breaks, largest first",
                 "/recon mine: open breaks assigned to you",
                 "/recon run [DATE]: reconcile a day now (approvers)",
                 "/recon link CODE: link this account (an admin gets the code from `recon users link NAME`)",
                 "/recon silence [merchant=M] [source=S] [type=T] [day=DATE] for=2d REASON: no new alert cards "
                 "for those breaks for a while (approvers); /recon silence list · /recon silence end ID"],
        "not_linked": "Not linked", "linked": "Linked",
        "now_acts": "This {platform} account now acts as {name} ({role}).",
        "who": "This {platform} account ({id}) is not linked to a reconbot user.",
        "ask": "Ask an admin to run `recon users link NAME` and type /recon link CODE here.",
        "nothing_title": "Nothing to show", "no_scope": "No configured merchant is in your scope.",
        "not_allowed": "Not allowed", "run_role": "You are a {role}; starting a run needs an approver.",
        "run_started": "Run started", "reconciling": "{merchant} {day}: reconciling; the summary follows here.",
        "run_failed": "{merchant} · {day}: run failed", "not_yet": "Not reconciled yet: /recon run {day}",
        "run": "run #{id}", "no_run": "no finished run for this day",
        "line": "ours {ip} · {ia} | channel {cp} · {ca} | matched {pct:.1f}% | fees {fees} | open breaks: {breaks}",
        "none": "none", "in_transit": " | in transit {n}",
        "open": "Open breaks", "mine": "Assigned to you", "nothing_open": "Nothing open.",
        "nothing_mine": "Nothing assigned to you.", "more": "… and {n} more",
        "chart": "{merchant}: matched %, break amounts, refund rate and fee share, {first} – {last}",
        "chart_failed": "The chart could not be attached; the summary above has the day's numbers.",
        "silences": "Silences", "no_silences": "No silence in force.",
        "silenced": "Silenced", "silence_line": "#{id} {what} until {until} UTC, by {who}: {why}",
        "silence_over": "Silence ended", "silence_ended": "#{id} ended by {who}; what it held back is sent now.",
        "silence_failed": "Not silenced", "which_merchant": "Say which merchant: merchant=ID ({known}).",
    },
    "zh": {
        "help_title": "reconbot 命令", "unknown": "无法理解“{text}”。",
        "help": ["/recon today · /recon yesterday · /recon YYYY-MM-DD：各渠道当日对账概况",
                 "/recon pending：待处理差异（金额从大到小）",
                 "/recon mine：指派给我的差异",
                 "/recon run [日期]：立即对账（审批人）",
                 "/recon link 关联码：关联本账号（管理员运行 `recon users link 用户名` 获取）",
                 "/recon silence [merchant=商户] [source=渠道] [type=类型] [day=日期] for=2d 原因：一段时间内不再推送"
                 "匹配差异的新卡片（审批人）；/recon silence list · /recon silence end 编号"],
        "not_linked": "未关联", "linked": "已关联",
        "now_acts": "此 {platform} 账号现在以 {name}（{role}）身份操作。",
        "who": "此 {platform} 账号（{id}）尚未关联 reconbot 用户。",
        "ask": "请管理员运行 `recon users link 用户名`，然后在此发送 /recon link 关联码。",
        "nothing_title": "无内容", "no_scope": "您负责的范围内没有已配置的商户。",
        "not_allowed": "无权操作", "run_role": "您的角色是 {role}，发起对账需要审批人。",
        "run_started": "已开始对账", "reconciling": "{merchant} {day}：对账中，完成后在此发送概况。",
        "run_failed": "{merchant} · {day}：对账失败", "not_yet": "尚未对账：/recon run {day}",
        "run": "对账批次 #{id}", "no_run": "当日没有已完成的对账",
        "line": "我方 {ip} 笔 · {ia} | 渠道 {cp} 笔 · {ca} | 匹配率 {pct:.1f}% | 手续费 {fees} | 待处理差异：{breaks}",
        "none": "无", "in_transit": " | 在途 {n}",
        "open": "待处理差异", "mine": "指派给我的差异", "nothing_open": "没有待处理差异。",
        "nothing_mine": "没有指派给您的差异。", "more": "…… 另有 {n} 条",
        "chart": "{merchant}：匹配率、差异金额、退款率、手续费占比（{first} 至 {last}）",
        "chart_failed": "图表未能发送；当日数据见上方概况。",
        "silences": "静默规则", "no_silences": "当前没有生效的静默。",
        "silenced": "已静默", "silence_line": "#{id} {what}，至 {until} UTC，{who}：{why}",
        "silence_over": "静默已结束", "silence_ended": "#{id} 已由 {who} 结束；被暂缓的提醒现在发送。",
        "silence_failed": "未能静默", "which_merchant": "请指定商户：merchant=编号（{known}）。",
    },
}


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
        # the channels, once built (bot/server.py): a run or a silence ended from the chat
        # is followed by an alert pass
        self.channels: dict | None = None

    def answer(self, platform: str, platform_user_id: str, text: str, chat: str | None = None,
               lang: str = "en") -> Reply:
        """`chat`: where it was asked; a chat routed to some merchants answers for those."""
        t = TEXT[lang]
        cmd = parse(text)
        if cmd.name == "help":
            lines = ([t["unknown"].format(text=cmd.unknown)] if cmd.unknown else []) + t["help"]
            return Reply([text_card(t["help_title"], lines)])
        if cmd.name == "link":
            try:
                user = redeem_link_code(self.url, cmd.arg, platform, platform_user_id)
            except UserError as exc:
                return Reply([text_card(t["not_linked"], [str(exc)])])
            return Reply([text_card(t["linked"], [t["now_acts"].format(platform=platform, name=user.name,
                                                                       role=user.role)])])
        actor = identify(self.url, platform, platform_user_id)
        if actor is None:
            return Reply([text_card(t["not_linked"], [t["who"].format(platform=platform, id=platform_user_id),
                                                      t["ask"]])])
        merchants = actor.scope([m.id for m in self.cfg.merchants])
        routed = {r.merchant for r in self.cfg.chat.routes
                  if r.channel == platform and chat is not None and chat in r.target.split("|")}
        if routed and "*" not in routed:
            merchants = [m for m in merchants if m in routed]
        if not merchants:
            return Reply([text_card(t["nothing_title"], [t["no_scope"]])])
        if cmd.name == "summary":
            days = {m: resolve_day(cmd.day, self.cfg.merchant(m).timezone) for m in merchants}
            # the text answers at once; the charts take a moment to draw and follow it
            return Reply([self.summary(m, d, lang) for m, d in days.items()],
                         later=self._charts(days, lang) if self.cfg.report.chat_charts else None)
        if cmd.name in ("pending", "mine"):
            return Reply([self.pending(actor, merchants, mine=cmd.name == "mine", lang=lang)])
        if cmd.name.startswith("silence"):
            return self.silence(cmd, actor, merchants, platform, lang)
        # run
        if not actor.at_least("approver"):
            return Reply([text_card(t["not_allowed"], [t["run_role"].format(role=actor.role)])])
        days = {m: resolve_day(cmd.day, self.cfg.merchant(m).timezone) for m in merchants}
        started = text_card(t["run_started"], [t["reconciling"].format(merchant=m, day=d) for m, d in days.items()])
        charts = self._charts(days, lang) if self.cfg.report.chat_charts else (lambda: [])
        return Reply([started], later=lambda: [self._run(m, d, lang) for m, d in days.items()] + charts())

    def silence(self, cmd: Command, actor: Actor, merchants: list[str], platform: str, lang: str) -> Reply:
        from datetime import timezone

        from bot import silences

        t = TEXT[lang]
        now = datetime.now(timezone.utc)
        if cmd.name == "silence_list":
            rows = [x for x in silences.listing(self.url, now) if x.merchant_id in merchants]
            lines = [t["silence_line"].format(
                id=x.id, what=silences.Matchers(x.merchant_id, x.source, x.type, x.business_day).describe(),
                until=f"{x.ends_at:%Y-%m-%d %H:%M}", who=x.author, why=x.reason) for x in rows]
            return Reply([text_card(t["silences"], lines or [t["no_silences"]])])
        try:
            if cmd.name == "silence_end":
                row = silences.end(self.cfg, actor, int(cmd.arg), platform)
                return Reply([text_card(t["silence_over"], [t["silence_ended"].format(id=row.id, who=actor.name)])],
                             later=self._alert_later(row.merchant_id))
            merchant = cmd.option("merchant")
            if merchant is None:
                if len(merchants) != 1:
                    return Reply([text_card(t["silence_failed"], [t["which_merchant"].format(
                        known=", ".join(merchants))])])
                merchant = merchants[0]
            day = cmd.option("day")
            m = silences.Matchers(merchant, cmd.option("source"), cmd.option("type"),
                                  date.fromisoformat(day) if day else None)
            row = silences.add(self.cfg, actor, m, silences.parse_duration(cmd.option("for")), cmd.arg, platform)
        except (silences.SilenceError, ConfigError) as exc:
            return Reply([text_card(t["silence_failed"], [str(exc)])])
        return Reply([text_card(t["silenced"], [t["silence_line"].format(
            id=row.id, what=m.describe(), until=f"{row.ends_at:%Y-%m-%d %H:%M}", who=row.author, why=row.reason)])])

    def _alert_later(self, merchant_id: str) -> Callable[[], list[Card]] | None:
        """After a silence ends: the alert pass that sends what it held (where the channels
        are known: inside `recon serve`)."""
        if self.channels is None:
            return None

        def work() -> list[Card]:
            from bot.alerts import alert_merchant

            alert_merchant(self.cfg, self.channels, merchant_id)
            return []

        return work

    def _charts(self, days: dict[str, date], lang: str) -> Callable[[], list[Card]]:
        return lambda: [card for m, d in days.items() if (card := self.chart(m, d, lang)) is not None]

    def chart(self, merchant_id: str, day: date, lang: str = "en") -> Card | None:
        """The trend charts up to `day` as one image card; None when no day of the period was
        reconciled (nothing to draw)."""
        from core.charts import render_dashboard  # matplotlib: loaded when first needed
        from core.report import trend

        t = trend(self.cfg, merchant_id, day)
        if t.empty:
            return None
        words = TEXT[lang]
        alt = words["chart"].format(merchant=merchant_id, first=t.first, last=t.last)
        return Card(key=f"chart:{merchant_id}:{day}", title=alt, severity="info", fields=[],
                    text=words["chart_failed"], evidence=[],
                    image=Image(render_dashboard(t, self.cfg), f"recon-{merchant_id}-{day}.png", alt))

    def _run(self, merchant_id: str, day: date, lang: str = "en") -> Card:
        if self.run_in_subprocess:
            import subprocess
            import sys

            config = [] if self.cfg.origin.startswith("<") else ["--config", self.cfg.origin]
            done = subprocess.run([sys.executable, "-c", "from bot.entry import main; main()", "run", "--day",
                                   day.isoformat(), "--merchant", merchant_id, *config],
                                  capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                return text_card(TEXT[lang]["run_failed"].format(merchant=merchant_id, day=day),
                                 (done.stderr.strip().splitlines() or ["?"])[-3:])
        else:
            from core.runs import run_day

            run_day(self.cfg, self.cfg.merchant(merchant_id), day)
            if self.channels is not None:  # `recon run` in the subprocess does this itself
                from bot.alerts import alert_merchant

                alert_merchant(self.cfg, self.channels, merchant_id)
        return self.summary(merchant_id, day, lang)

    def summary(self, merchant_id: str, day: date, lang: str = "en") -> Card:
        t = TEXT[lang]
        cur = self.cfg.merchant(merchant_id).currency
        s = day_summary(self.url, merchant_id, day)
        title = f"{merchant_id} · {day}"
        if s.run_id is None and not s.sources:
            return text_card(title, [t["not_yet"].format(day=day)], key=f"summary:{merchant_id}:{day}")
        fields = []
        for x in s.sources:
            breaks = ", ".join(f"{k} {n}" for k, n in sorted(x.breaks.items())) or t["none"]
            fields.append((x.source, t["line"].format(
                ip=x.internal_payments, ia=display(x.internal_amount, cur), cp=x.channel_payments,
                ca=display(x.channel_amount, cur), pct=x.matched_pct, fees=display(x.fees, cur), breaks=breaks)
                + (f" ({display(x.open_difference, cur)})" if x.open_difference else "")
                + (t["in_transit"].format(n=x.in_transit) if x.in_transit else "")))
        lines = [t["run"].format(id=s.run_id) if s.run_id else t["no_run"]]
        return text_card(title, lines, fields, key=f"summary:{merchant_id}:{day}")

    def pending(self, actor: Actor, merchants: list[str], mine: bool = False, lang: str = "en") -> Card:
        t = TEXT[lang]
        rows, total = open_breaks(self.url, merchants, actor.id if mine else None, PENDING_LIMIT)
        title = t["mine"] if mine else t["open"]
        if not rows:
            return text_card(title, [t["nothing_mine"] if mine else t["nothing_open"]])
        lines = [f"#{b.id} {b.merchant_id} {b.business_day} {b.source} {b.type} "
                 f"{b.order_id or b.txn_id or ''} {display(b.difference, b.currency)}" for b in rows]
        if total > len(rows):
            lines.append(t["more"].format(n=total - len(rows)))
        return text_card(f"{title} ({total})", lines)

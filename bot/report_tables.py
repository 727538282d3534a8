"""The daily report (core/report.py) as sections of typed rows, and their terminal table
and CSV renderings. The XLSX workbook (bot/report_xlsx.py) renders the same sections, so
every format shows the same columns.

Cell kinds: text, int, money (integer minor units of the report's currency), pct (a
Decimal percent, 93.6), rate (a Decimal fraction, 0.006), date.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bot.cards import TITLES
from core.money import display, exponent, to_major
from core.report import DayReport, SourceReport


@dataclass(frozen=True)
class Column:
    title: str
    kind: str = "text"  # text | int | money | pct | rate | date
    terminal: bool = True  # shown in the terminal table (long prose is left to csv / xlsx / json)
    width: int | None = None  # spreadsheet column width in characters (None: from the content)


@dataclass
class Section:
    name: str  # also the sheet name (at most 31 characters)
    columns: list[Column]
    rows: list[list] = field(default_factory=list)
    bold_last: bool = False  # the last row is a total
    transpose: bool = False  # in the terminal: one row per column, one column per row (wide sections)


def _source_row(r: SourceReport) -> list:
    return [r.source, r.internal_payments, r.internal_amount, r.channel_payments, r.channel_amount,
            r.internal_refunds, r.internal_refund_amount, r.channel_refunds, r.channel_refund_amount,
            r.matched, r.matched_pct, r.break_count, sum(t.total for t in r.breaks.values()),
            r.in_transit, r.in_transit_amount, r.auto_adjusted, r.auto_adjusted_amount, r.auto_adjusted_booked,
            r.fees_charged, r.fees_rate_card, r.net_settled]


SOURCE_COLUMNS = [
    Column("source"), Column("our payments", "int"), Column("our amount", "money"),
    Column("channel payments", "int"), Column("channel amount", "money"),
    Column("our refunds", "int"), Column("our refund amount", "money"),
    Column("channel refunds", "int"), Column("channel refund amount", "money"),
    Column("matched", "int"), Column("matched %", "pct"), Column("breaks", "int"), Column("break total", "money"),
    Column("in transit", "int"), Column("in transit amount", "money"),
    Column("auto-adjusted", "int"), Column("auto-adjusted amount", "money"), Column("auto-adjusted booked", "money"),
    Column("fees charged", "money"), Column("fees by rate card", "money"), Column("net settled", "money"),
]


def sections(rep: DayReport) -> list[Section]:
    sources = Section("Sources", SOURCE_COLUMNS, [_source_row(r) for r in rep.sources] + [_source_row(rep.totals)],
                      bold_last=True, transpose=True)
    by_type = Section("Breaks by type", [Column("source"), Column("type"), Column("meaning", width=28),
                                         Column("count", "int"), Column("open", "int"), Column("total", "money")])
    for r in rep.sources + [rep.totals]:
        for btype, t in sorted(r.breaks.items()):
            by_type.rows.append([r.source, btype, TITLES.get(btype, btype), t.count, t.open, t.total])
    fees = Section("Fees", [Column("source"), Column("rate card", "rate"), Column("charged on payments", "money"),
                            Column("by rate card", "money"), Column("deviation", "money"),
                            Column("returned on refunds", "money")],
                   [[r.source, r.fee_rate, r.fees_charged, r.fees_rate_card, r.fee_deviation, r.fees_returned]
                    for r in rep.sources + [rep.totals]], bold_last=True)
    cur = rep.currency
    minor = lambda v: None if v is None else int(Decimal(v).scaleb(exponent(cur)))  # noqa: E731
    breaks = Section("Breaks", [Column("id", "int"), Column("day", "date"), Column("source"), Column("type"),
                                Column("status"), Column("severity"), Column("order"), Column("channel txn"),
                                Column("ours", "money"), Column("channel", "money"), Column("difference", "money"),
                                Column("explanation", terminal=False, width=60),
                                Column("evidence (file:line)", width=48)])
    for b in rep.breaks:
        evidence = "\n".join(f"{e['side']}: {e['file']}" + (f":{e['line']}" if e["line"] is not None else "")
                             for e in b["evidence"])
        breaks.rows.append([b["id"], b["day"], b["source"], b["type"], b["status"], b["severity"], b["order_id"],
                            b["txn_id"], minor(b["internal_amount"]), minor(b["channel_amount"]),
                            minor(b["difference"]), b["explanation"], evidence])
    about = Section("About", [Column("item", width=20), Column("value", width=40)], [
        ["merchant", rep.merchant], ["name", rep.merchant_name], ["business day", rep.day.isoformat()],
        ["currency", rep.currency], ["run", f"#{rep.run_id}" if rep.run_id else "never reconciled"],
        ["run finished (UTC)", _utc(rep.finished_at)], ["generated (UTC)", _utc(rep.generated_at)],
    ])
    return [sources, by_type, fees, breaks, about]


def _utc(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "—"


# -- terminal ---------------------------------------------------------------------------

def cell_text(value, kind: str, currency: str, terminal: bool = True) -> str:
    """A cell for people (terminal) or for programs (CSV: plain decimals, no symbols)."""
    if value is None:
        return "—" if terminal else ""
    if kind == "money":
        return display(value, currency) if terminal else to_major(value, currency)
    if kind == "pct":
        return f"{value}%" if terminal else str(value)
    if kind == "rate":
        return f"{Decimal(value) * 100:.3f}".rstrip("0").rstrip(".") + "%" if terminal else str(value)
    return str(value)


def print_report(console: Console, rep: DayReport) -> None:
    run = f"run #{rep.run_id}" if rep.run_id else "never reconciled"
    console.print(f"[bold]{rep.merchant_name}[/bold] · {rep.day} · {run} · {rep.currency}", highlight=False)
    for sec in sections(rep)[:-1]:  # "About" is the line above
        if sec.name == "Breaks":  # the same list as `recon breaks`
            from bot.cli import print_breaks

            console.print(f"Breaks ({len(rep.breaks)})", highlight=False)
            print_breaks(console, rep.breaks)
            continue
        shown = [c for c in sec.columns if c.terminal]
        idx = [sec.columns.index(c) for c in shown]
        if sec.transpose:
            t = Table(title=sec.name, title_justify="left")
            t.add_column("")
            for row in sec.rows:
                t.add_column(str(row[0]), justify="right", style="bold" if row is sec.rows[-1] and sec.bold_last
                             else None)
            for i in idx[1:]:
                c = sec.columns[i]
                t.add_row(c.title, *[cell_text(row[i], c.kind, rep.currency) for row in sec.rows])
        else:
            t = Table(title=sec.name, title_justify="left")
            for c in shown:
                t.add_column(c.title, justify="right" if c.kind in ("int", "money", "pct", "rate") else "left")
            for n, row in enumerate(sec.rows):
                t.add_row(*[cell_text(row[i], sec.columns[i].kind, rep.currency) for i in idx],
                          style="bold" if sec.bold_last and n == len(sec.rows) - 1 else None)
        if sec.rows:
            console.print(t)
        else:
            console.print(f"{sec.name}: none", highlight=False)


# -- CSV --------------------------------------------------------------------------------

def csv_text(rep: DayReport) -> str:
    """The sections one after another: a title line, a header line and the rows, then a blank
    line. Money in major units as plain decimals (123.45), no symbols."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for n, sec in enumerate(sections(rep)):
        if n:
            w.writerow([])
        w.writerow([sec.name])
        w.writerow([c.title for c in sec.columns])
        for row in sec.rows:
            w.writerow([cell_text(v, c.kind, rep.currency, terminal=False) for v, c in zip(row, sec.columns)])
    return buf.getvalue()


def write_text(path: Path, text: str) -> Path:
    """Via a temporary file and a rename: a report is never half-written."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

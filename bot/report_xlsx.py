"""The daily report as an XLSX workbook (openpyxl): one sheet per section of
bot/report_tables.py, the header row frozen and filterable, money as numbers (integer minor
units turned into exact Decimals) formatted in the report's currency, percentages as
percentages, long text wrapped.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import date
from decimal import Decimal
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from bot.report_tables import Section, sections
from core.money import SYMBOLS, exponent
from core.report import DayReport

HEADER_FILL = PatternFill("solid", fgColor="DDE4EE")
MAX_WIDTH = 60
LINE_HEIGHT = 15  # points per line of 11 pt text


def _columns_of(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _lines(text: str, width: int) -> int:
    """How many lines `text` wraps to in a column `width` characters wide."""
    return sum(max(1, math.ceil(_columns_of(part) / max(width - 3, 1))) for part in text.split("\n"))


def money_format(currency: str) -> str:
    """An Excel number format for the currency: ¥1,234.50 / -¥1,234.50 / 1,234 XYZ."""
    digits = exponent(currency)
    number = "#,##0" + ("." + "0" * digits if digits else "")
    symbol = SYMBOLS.get(currency)
    if symbol:
        return f'"{symbol}"{number};-"{symbol}"{number}'
    return f'{number} "{currency}";-{number} "{currency}"'


FORMATS = {"int": "#,##0", "pct": "0.0%", "rate": "0.00##%", "date": "yyyy-mm-dd"}


def _value(value, kind: str, currency: str):
    if value is None:
        return None
    if kind == "money":
        return Decimal(value).scaleb(-exponent(currency))
    if kind == "pct":
        return Decimal(value) / 100
    if kind == "rate":
        return Decimal(value)
    if kind == "date":
        return date.fromisoformat(value) if isinstance(value, str) else value
    return value


def _sheet(wb: Workbook, sec: Section, currency: str) -> None:
    ws = wb.create_sheet(sec.name[:31])
    ws.append([c.title for c in sec.columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        cell.alignment = Alignment(vertical="top", wrap_text=True)
    money = money_format(currency)
    widths = [len(c.title) + 2 for c in sec.columns]
    for n, row in enumerate(sec.rows, start=2):
        for i, (value, col) in enumerate(zip(row, sec.columns), start=1):
            cell = ws.cell(row=n, column=i, value=_value(value, col.kind, currency))
            if col.kind == "money":
                cell.number_format = money
            elif col.kind in FORMATS:
                cell.number_format = FORMATS[col.kind]
            if col.kind == "text" and isinstance(value, str) and ("\n" in value or len(value) > MAX_WIDTH):
                cell.alignment = Alignment(vertical="top", wrap_text=True)
            else:
                cell.alignment = Alignment(vertical="top")
            if sec.bold_last and n == len(sec.rows) + 1:
                cell.font = Font(bold=True)
            longest = max((_columns_of(x) for x in str(value).split("\n")), default=0) if value is not None else 0
            widths[i - 1] = max(widths[i - 1], longest + 2 if col.kind == "text" else 14)
    widths = [col.width or min(w, MAX_WIDTH) for col, w in zip(sec.columns, widths)]
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    # Row heights for wrapped text: a spreadsheet application keeps the stored (default)
    # height of a row it did not lay out itself, and the lines would overlap
    for n, row in enumerate(sec.rows, start=2):
        lines = max((_lines(v, w) for v, col, w in zip(row, sec.columns, widths)
                     if col.kind == "text" and isinstance(v, str)), default=1)
        if lines > 1:
            ws.row_dimensions[n].height = LINE_HEIGHT * lines
    if sec.name != "About":
        ws.freeze_panes = "A2"  # the header row stays while scrolling
        ws.print_title_rows = "1:1"  # ... and is printed on every page
        if sec.rows:
            ws.auto_filter.ref = ws.dimensions
    # printed (or exported to PDF) landscape, as wide as the page, as many pages long as it takes
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0


def workbook(rep: DayReport) -> Workbook:
    wb = Workbook()
    wb.remove(wb.active)
    for sec in sections(rep):
        _sheet(wb, sec, rep.currency)
    wb.properties.title = f"reconbot report {rep.merchant} {rep.day}"
    wb.properties.creator = "reconbot"
    return wb


def write_xlsx(rep: DayReport, path: Path) -> Path:
    """Saved through a temporary file and a rename: a report is never half-written."""
    tmp = path.with_name(path.name + ".part")
    workbook(rep).save(tmp)
    tmp.replace(path)
    return path

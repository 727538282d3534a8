"""Charts of a merchant's recent days as PNG: matched % and break amounts per source, the
refund rate, and each channel's share of the fees (data: `core.report.trend`).

Rendered headless (matplotlib's Agg canvas, no display, no pyplot state) with a font that
has CJK glyphs, so Chinese labels and merchant names never turn into boxes: the file named
by `[report] font`, else Noto Sans SC from the `pylopdf-fonts-zh-cn` package (see
pyproject.toml for why that one).
"""

from __future__ import annotations

import io
import threading
from decimal import Decimal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless, before anything else of matplotlib is imported

from matplotlib import dates as mdates  # noqa: E402
from matplotlib import font_manager, rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

from core.config import Config, ConfigError  # noqa: E402
from core.money import SYMBOLS, exponent  # noqa: E402
from core.report import Trend  # noqa: E402

CHARTS = ("matched", "breaks", "refunds", "fees")
TITLES = {
    "matched": "匹配率 Matched %",
    "breaks": "差异金额 Break amounts",
    "refunds": "退款率 Refund rate",
    "fees": "手续费占比 Fee share by channel",
}
# rcParams are process-wide: one chart at a time is set up and drawn under them
_LOCK = threading.Lock()
_ADDED: dict[str, str] = {}  # font file -> family name registered with matplotlib


def bundled_font() -> Path:
    import pylopdf_fonts_zh_cn

    return Path(pylopdf_fonts_zh_cn.sans_path())


def font_path(cfg: Config | None) -> Path:
    """The configured font file (relative to the config file), else the bundled one."""
    configured = cfg.report.font if cfg is not None else ""
    if not configured:
        return bundled_font()
    p = Path(configured)
    p = p if p.is_absolute() else cfg.base_dir / p
    if not p.is_file():
        raise ConfigError(f"{cfg.origin}: report.font: no font file at {p}")
    return p


def font_family(path: Path) -> str:
    """Register the font file with matplotlib once; -> its family name."""
    key = str(path)
    if key not in _ADDED:
        font_manager.fontManager.addfont(key)
        _ADDED[key] = font_manager.FontProperties(fname=key).get_name()
    return _ADDED[key]


def _style(family: str) -> dict:
    return {"font.family": [family, "DejaVu Sans"], "font.size": 9, "axes.titlesize": 11,
            "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
            "axes.unicode_minus": False}


def _major(minor: int, currency: str) -> float:
    """Money to a plot coordinate: exact Decimal first, a float only for the drawing."""
    return float(Decimal(minor).scaleb(-exponent(currency)))


def _money_axis(ax, currency: str) -> None:
    symbol = SYMBOLS.get(currency, currency + " ")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{symbol}{v:,.0f}"))


def _x(days) -> list[float]:
    """Days as matplotlib date numbers (a `date` drops fractions of a day: bars need them)."""
    return list(mdates.date2num(list(days)))


def _dates(ax, t: Trend) -> None:
    first, last = _x([t.first, t.last])
    ax.set_xlim(first - 0.6, last + 0.6)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))


def _lines(ax, t: Trend, series: dict[str, list[Decimal | None]]) -> None:
    for name in t.sources:
        points = [(d, float(v)) for d, v in zip(_x(t.days), series[name]) if v is not None]
        if points:
            ax.plot([d for d, _ in points], [v for _, v in points], marker="o", markersize=3, label=name)


def _draw_matched(ax, t: Trend) -> None:
    _lines(ax, t, t.matched_pct)
    ax.set_ylim(0, 105)
    ax.yaxis.set_major_formatter(PercentFormatter(100))
    _dates(ax, t)


def _draw_breaks(ax, t: Trend) -> None:
    width = 0.8 / max(len(t.sources), 1)
    for i, name in enumerate(t.sources):
        offset = (i - (len(t.sources) - 1) / 2) * width
        ax.bar([d + offset for d in _x(t.days)], [_major(v, t.currency) for v in t.break_amount[name]],
               width=width, label=name)
    _money_axis(ax, t.currency)
    _dates(ax, t)


def _draw_refunds(ax, t: Trend) -> None:
    _lines(ax, t, t.refund_rate)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=1))
    _dates(ax, t)


def _draw_fees(ax, t: Trend) -> None:
    shares = [(name, fee) for name, fee in t.fees.items() if fee > 0]
    total = sum(fee for _, fee in shares)
    ax.grid(False)
    if not total:
        ax.text(0.5, 0.5, "无手续费 No fees in the period", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    symbol = SYMBOLS.get(t.currency, t.currency + " ")
    labels = [f"{name}\n{Decimal(100 * fee) / total:.1f}% · {symbol}{_major(fee, t.currency):,.2f}"
              for name, fee in shares]
    ax.pie([fee for _, fee in shares], labels=labels, startangle=90, counterclock=False,
           wedgeprops={"width": 0.45, "edgecolor": "white"})
    ax.set_aspect("equal")


DRAW = {"matched": _draw_matched, "breaks": _draw_breaks, "refunds": _draw_refunds, "fees": _draw_fees}


def _draw(ax, name: str, t: Trend) -> None:
    ax.set_title(TITLES[name], loc="left")
    if t.empty:
        ax.text(0.5, 0.5, "期间内没有已对账的日期\nNo reconciled day in this period", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    DRAW[name](ax, t)
    if name != "fees" and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, frameon=False)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, metadata={"Software": "reconbot"})
    return buf.getvalue()


def render(t: Trend, name: str, cfg: Config | None = None) -> bytes:
    """One chart (CHARTS) as PNG, sized for a phone screen's width."""
    if name not in DRAW:
        raise ValueError(f"unknown chart {name!r} (one of {', '.join(CHARTS)})")
    with _LOCK, rc_context(_style(font_family(font_path(cfg)))):
        fig = Figure(figsize=(6.4, 3.4), dpi=110, layout="constrained")
        _draw(fig.add_subplot(), name, t)
        return _png(fig)


def render_dashboard(t: Trend, cfg: Config | None = None) -> bytes:
    """All four charts on one image: what `/recon today` attaches and `recon demo` writes."""
    with _LOCK, rc_context(_style(font_family(font_path(cfg)))):
        fig = Figure(figsize=(11, 7.2), dpi=100, layout="constrained")
        fig.suptitle(f"{t.merchant_name} · {t.first} – {t.last}", fontsize=13)
        for i, name in enumerate(CHARTS):
            _draw(fig.add_subplot(2, 2, i + 1), name, t)
        return _png(fig)


def render_text(text: str, cfg: Config | None = None, size: int = 28) -> bytes:
    """A bare label as PNG, with the charts' font and settings (the CJK glyph check)."""
    with _LOCK, rc_context(_style(font_family(font_path(cfg)))):
        fig = Figure(figsize=(0.9 * size * max(len(text), 1) / 72 + 0.4, size / 72 * 1.8), dpi=100)
        fig.text(0.5, 0.5, text, fontsize=size, ha="center", va="center")
        return _png(fig)

"""The charts draw Chinese as Chinese: a rendered label is compared pixel by pixel with the
box ("tofu") that a font without the glyph draws, and with its neighbour."""

from __future__ import annotations

import io
import warnings
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from core import charts
from core.config import ConfigError, from_dict
from core.report import Trend

# matplotlib's own DejaVu Sans has no CJK glyphs: what a chart without our font would draw
NO_CJK = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def ink(png: bytes) -> np.ndarray:
    """Dark pixels of a rendered label, cropped to where there is ink."""
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    mask = gray < 128
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert rows.size and cols.size, "nothing was drawn"
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of differing pixels once both are laid on the same canvas (0 = identical)."""
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    pa, pb = np.zeros((h, w), bool), np.zeros((h, w), bool)
    pa[:a.shape[0], :a.shape[1]] = a
    pb[:b.shape[0], :b.shape[1]] = b
    return float((pa ^ pb).sum()) / float((pa | pb).sum())


def render(text: str, font: Path | None = None) -> tuple[bytes, list[str]]:
    cfg = from_dict({"report": {"font": str(font)}}) if font else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = charts.render_text(text, cfg)
    return png, [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_chinese_labels_are_glyphs_not_boxes():
    # the reference: without CJK glyphs every character is the same box, and matplotlib says so
    tofu_a, missing_a = render("对", NO_CJK)
    tofu_b, missing_b = render("账", NO_CJK)
    assert missing_a and missing_b
    assert difference(ink(tofu_a), ink(tofu_b)) == 0.0  # the same box for two different characters

    ours_a, missing = render("对")
    ours_b, missing_too = render("账")
    assert missing == missing_too == []
    assert difference(ink(ours_a), ink(tofu_a)) > 0.3  # not the box
    assert difference(ink(ours_b), ink(tofu_b)) > 0.3
    assert difference(ink(ours_a), ink(ours_b)) > 0.3  # two characters, two different glyphs
    # a glyph is strokes, not a filled or outlined rectangle: much of its bounding box is blank
    assert 0.05 < ink(ours_a).mean() < 0.6


def test_the_bundled_font_is_noto_sans_sc_and_another_can_be_configured(tmp_path):
    assert charts.font_family(charts.font_path(None)) == "Noto Sans SC"
    cfg = from_dict({"report": {"font": "fonts/missing.otf"}}, origin="recon.toml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"recon\.toml: report\.font: no font file at .*fonts/missing\.otf"):
        charts.font_path(cfg)


def _trend(days: int = 30) -> Trend:
    last = date(2026, 11, 21)
    reconciled = [last - timedelta(days=i) for i in range(days - 1, -1, -3)]
    n = len(reconciled)
    return Trend("demo-shop", "晨光咖啡 Morning Light Coffee", "CNY", last - timedelta(days=days - 1), last, reconciled,
                 ["支付宝", "wechatpay"],
                 {"支付宝": [Decimal("99.5")] * n, "wechatpay": [Decimal(90 + i % 9) for i in range(n)]},
                 {"支付宝": [1250 * i for i in range(n)], "wechatpay": [300] * n},
                 {"支付宝": [Decimal("2.5")] * n, "wechatpay": [None] + [Decimal("1.2")] * (n - 1)},
                 {"支付宝": 4620, "wechatpay": 8050})


@pytest.mark.parametrize("name", charts.CHARTS)
def test_each_chart_renders_its_chinese_labels(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = charts.render(_trend(), name)
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []
    assert Image.open(io.BytesIO(png)).size == (704, 374)


def test_the_dashboard_and_an_empty_period():
    dash = charts.render_dashboard(_trend())
    assert Image.open(io.BytesIO(dash)).size == (1100, 720)
    empty = Trend("m", "m", "CNY", date(2026, 10, 23), date(2026, 11, 21), [], [], {}, {}, {}, {})
    assert charts.render(empty, "matched").startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="unknown chart 'pie'"):
        charts.render(empty, "pie")

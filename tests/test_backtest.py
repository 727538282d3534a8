"""`recon backtest`: what a rule change would do to stored days, without writing anything."""

from __future__ import annotations

from datetime import date

import pytest

from conftest import EXAMPLES, demo_config, table_counts
from core.backtest import backtest
from core.config import ConfigError, with_rules
from core.ingest import ingest_file
from core.runs import run_day

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)


@pytest.fixture
def reconciled(tmp_path):
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'bt.db'}"
    upgrade(url)
    cfg = demo_config(url)
    m = cfg.merchants[0]
    for p in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, m, p)
    run_day(cfg, m, D1)
    run_day(cfg, m, D2)
    return cfg


def _rules(tmp_path, text: str):
    p = tmp_path / "new.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_wider_tolerance_shows_breaks_and_adjustments_that_would_go(reconciled, tmp_path):
    before = table_counts(reconciled.database.url)
    proposed = with_rules(reconciled, _rules(tmp_path, '[tolerance]\nabsolute = "10.00"\n'))
    days = backtest(reconciled, proposed, None, D1, D2)
    d1 = days[0]
    gone = sorted((f["order_id"], f["type"]) for f in d1.disappeared)
    # W-1010 (-10.00) and A-2009 (5.00) are now within tolerance; the long W-9001 (36.00) is
    # within ¥10 of the short W-1005 (32.00), which becomes a suggested match instead
    assert gone == [("A-2009", "amount_mismatch"), ("W-1010", "amount_mismatch"), ("W-9001", "long")]
    assert [(a["order_id"], a["type"], b["type"]) for a, b in d1.changed_type] == [
        ("W-1005", "short", "suggested_match")]
    assert sorted((f["order_id"], a) for f, a in d1.adjustments_removed) == [("A-2009", 500), ("W-1010", 1000)]
    assert d1.adjustments_added == [] and d1.appeared == []
    assert table_counts(reconciled.database.url) == before  # nothing written


def test_a_rate_card_change_makes_fee_breaks_appear(reconciled, tmp_path):
    proposed = with_rules(reconciled, _rules(tmp_path, '[sources.wechatpay]\nfee_rate = "0.0055"\n'))
    d1 = backtest(reconciled, proposed, None, D1, D1)[0]
    appeared = {f["order_id"] for f in d1.appeared if f["type"] == "fee_mismatch"}
    assert len(appeared) > 5  # at 0.55% most WeChat fees are now off by more than a fen
    assert all(f["type"] == "fee_mismatch" for f in d1.appeared)


def test_rules_files_are_checked(reconciled, tmp_path):
    with pytest.raises(ConfigError, match="sources.unionpay: no configured source has that name"):
        with_rules(reconciled, _rules(tmp_path, '[sources.unionpay]\nfee_rate = "0.01"\n'))
    with pytest.raises(ConfigError, match="database: not a rules section"):
        with_rules(reconciled, _rules(tmp_path, '[database]\nurl = "sqlite://"\n'))
    with pytest.raises(ConfigError, match=r"tolerance.absolte: unknown key"):
        with_rules(reconciled, _rules(tmp_path, '[tolerance]\nabsolte = "1"\n'))

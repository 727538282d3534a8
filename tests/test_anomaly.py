"""The anomaly model on small seeded data: injected patterns outrank ordinary traffic, the
model survives a restart, alerts say why in words, reviewer feedback reaches training."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select
from sqlmodel import Session

from conftest import EXAMPLES
from core.anomaly import model as M
from core.anomaly import synthetic as S
from core.anomaly.feedback import FeedbackError, mark_expected
from core.anomaly.scoring import score
from core.anomaly.training import flagged, train
from core.breaks import list_breaks
from core.config import from_dict
from core.ingest import ingest_file
from core.runs import run_day
from models.db import get_engine, upgrade
from models.tables import AnomalyModel, AuditEvent

FIRST = date(2026, 10, 1)
TRAIN_DAYS = 21
SHOP = S.SyntheticMerchant("shop", per_day=400, median_minor=3800)
TINY = S.SyntheticMerchant("kiosk", per_day=20, median_minor=1500)
SCORED = [FIRST + timedelta(days=TRAIN_DAYS + i) for i in range(2)]


def _config(url: str, model_dir, merchants, **anomaly) -> object:
    return from_dict({
        "database": {"url": url},
        "anomaly": {"model_dir": str(model_dir), "train_days": TRAIN_DAYS, "min_transactions": 2000, **anomaly},
        "merchants": [{"id": m.id, "name": m.id, "timezone": m.timezone, "currency": m.currency,
                       "sources": [{"name": s, "kind": "generic", "fee_rate": str(m.fee_rate)} for s, _ in m.sources]}
                      for m in merchants],
    })


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with 21 ordinary days for two merchants, then two days with every
    pattern injected at `shop`; models trained on the ordinary days."""
    tmp = tmp_path_factory.mktemp("anomaly")
    url = f"sqlite:///{tmp / 'a.db'}"
    upgrade(url)
    normal = S.normal_traffic(SHOP, FIRST, TRAIN_DAYS + 2, seed=5)
    injected = pa.concat_tables([S.inject(SHOP, normal, day, p, seed=5) for day in SCORED for p in S.PATTERNS])
    S.write(url, SHOP, pa.concat_tables([normal, injected]), "test")
    S.write(url, TINY, S.normal_traffic(TINY, FIRST, TRAIN_DAYS + 2, seed=5), "test")
    cfg = _config(url, tmp / "models", [SHOP, TINY])
    trained = train(cfg, last=FIRST + timedelta(days=TRAIN_DAYS - 1))
    return cfg, trained, {r: p for p in S.PATTERNS for r in _refs(injected, p)}


def _refs(table: pa.Table, pattern: str) -> list[str]:
    return [r for r in table["ref"].to_pylist() if r.lstrip("R").startswith(pattern)]


def _scored_with_refs(cfg, merchant_id):
    from models.db import adbc_connect

    m = cfg.merchant(merchant_id)
    t = score(cfg, m, SCORED[0], SCORED[-1])
    with adbc_connect(cfg.database.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, ref FROM record")
        refs = dict(cur.fetchall())
    return t, [refs[i] for i in t["id"].to_pylist()]


def test_merchant_with_history_gets_its_own_model_and_a_small_one_the_pooled(store):
    cfg, trained, _ = store
    assert [t.scope for t in trained] == ["shop", "*"]  # kiosk: under min_transactions
    assert M.for_merchant(cfg.database.url, "shop").scope == "shop"
    pooled = M.for_merchant(cfg.database.url, "kiosk")
    assert pooled.scope == "*" and set(pooled.profiles) == {"shop", "kiosk"}
    t = score(cfg, cfg.merchant("kiosk"), SCORED[0], SCORED[-1])
    assert t.num_rows > 0 and 0 < min(t["score"].to_pylist()) <= max(t["score"].to_pylist()) <= 1


def test_injected_anomalies_outrank_ordinary_transactions(store):
    cfg, _trained, truth = store
    t, refs = _scored_with_refs(cfg, "shop")
    s = np.array(t["score"].to_pylist())
    injected = np.array([r in truth for r in refs])
    assert injected.sum() == len(truth)
    # every pattern's transactions rank above 99% of the ordinary ones of the same days
    p99 = np.quantile(s[~injected], 0.99)
    for pattern in S.PATTERNS:
        mine = s[[truth.get(r) == pattern for r in refs]]
        assert mine.size and (mine > p99).all(), (pattern, mine, p99)
    # and the top of the ranking is made of them
    top = np.argsort(-s)[:20]
    assert injected[top].all()
    # the threshold lets few ordinary transactions through (the rate itself: make anomaly-eval;
    # here two days of ~900 ordinary transactions, where one alert is already 0.11%)
    model = M.load(cfg.database.url, "shop")
    assert (s[~injected] >= model.threshold).sum() <= 2


def test_explanations_name_the_unusual_features_in_words(store):
    cfg, _trained, truth = store
    from core.anomaly.scoring import sentence

    t, refs = _scored_with_refs(cfg, "shop")
    model = M.load(cfg.database.url, "shop")
    said = {}
    for row, ref in zip(t.to_pylist(), refs):
        if ref in truth:
            said.setdefault(truth[ref], []).append(sentence(row, "CNY", model))
    expected = {
        "card_testing": r"\d+ payments from the same payer in 10 minutes",
        "refund_spike": r"\d+ refunds at \w+ within half an hour \(usually \d+\.\d\)",
        "duplicate_charge": r"payment number 2 of ¥[\d,]+\.\d\d for order \S+ at \w+",
        "odd_hour_large": r"at 0[2-4]:\d\d local time, an hour with|is \d+\.\d× this merchant's median payment",
        "fee_drift": r"fee ¥\d+\.\d\d is \d\.\d\d% of the amount; the rate card says 0\.60%",
        "payer_20x": r"¥[\d,]+\.\d\d is \d+\.\d× this payer's median \(¥[\d,]+\.\d\d over \d+ payments\)",
    }
    for pattern, phrase in expected.items():
        hits = [s for s in said[pattern] if re.search(phrase, s)]
        assert len(hits) >= 0.8 * len(said[pattern]), "\n".join([pattern, *said[pattern][:3]])
    example = said["payer_20x"][0]
    assert example.startswith("Unusual payment of ¥") and "score" in example


def test_model_files_and_rows_survive_a_restart(store):
    cfg, _trained, _ = store
    url = cfg.database.url
    before = M.load(url, "shop")
    t, _refs = _scored_with_refs(cfg, "shop")
    M.forget()  # what a new process starts with: nothing loaded
    get_engine.cache_clear()
    with Session(get_engine(url)) as s:
        row = s.execute(select(AnomalyModel).where(AnomalyModel.scope == "shop")).scalars().one()
    assert (row.version, row.window_first, row.window_last) == (1, FIRST, FIRST + timedelta(days=TRAIN_DAYS - 1))
    assert json.loads(row.features) == before.features and row.threshold == before.threshold
    again = M.load(url, "shop")
    assert again is not before and again.id == row.id
    t2, _ = _scored_with_refs(cfg, "shop")
    # the same scores (to the last bits: trees are summed on threads, in any order)
    assert np.allclose(t2["score"].to_numpy(), t["score"].to_numpy(), rtol=1e-12, atol=0)


def test_a_tampered_model_file_is_refused(tmp_path, store):
    cfg, _trained, _ = store
    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    S.write(url, SHOP, S.normal_traffic(SHOP, FIRST, 8, seed=1), "t")
    small = _config(url, tmp_path / "m", [SHOP], train_days=7)
    train(small)
    row = M.latest_row(url, "shop")
    with open(row.path, "ab") as f:
        f.write(b"x")
    M.forget()
    with pytest.raises(M.ModelFileError, match="does not match its checksum"):
        M.load(url, "shop")


def test_train_cli_in_another_process_then_scoring_here(tmp_path):
    """A real restart: `recon model train` trains and exits; this process loads what it left."""
    import subprocess
    import sys
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    S.write(url, SHOP, S.normal_traffic(SHOP, FIRST, 9, seed=2), "t")
    (tmp_path / "recon.toml").write_text(f"""
[database]
url = "{url}"
[anomaly]
train_days = 8
[[merchants]]
id = "shop"
name = "Shop"
[[merchants.sources]]
name = "wechatpay"
kind = "wechatpay"
fee_rate = "0.006"
[[merchants.sources]]
name = "alipay"
kind = "alipay"
""", encoding="utf-8")
    recon = str(Path(sys.executable).parent / "recon")
    r = subprocess.run([recon, "model", "train", "--config", str(tmp_path / "recon.toml")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "shop v1:" in r.stdout and "pooled v1:" in r.stdout
    assert (tmp_path / "anomaly-models" / "shop-v1.joblib").is_file()  # beside the config file
    M.forget()
    cfg = _config(url, tmp_path / "anomaly-models", [SHOP])
    t = score(cfg, cfg.merchant("shop"), FIRST + timedelta(days=8), FIRST + timedelta(days=8))
    assert t.num_rows > 100 and M.load(url, "shop").version == 1


# -- after a run: the demo days, with the demo's synthetic history ------------------------

def _demo_cfg(url, tmp_path):
    from conftest import demo_config

    base = demo_config(url).model_dump(exclude={"base_dir", "origin"})
    base["anomaly"] = {"model_dir": str(tmp_path / "models"), "train_days": 14}
    return from_dict(base)


def test_a_run_scores_records_and_breaks_alerts_on_a_clean_outlier_and_feedback_reaches_training(db_url, tmp_path):
    from bot.demo import REGULAR_PAYER, anomaly_history

    cfg = _demo_cfg(db_url, tmp_path)
    m = cfg.merchants[0]
    for f in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, m, f)
    day = date(2026, 11, 20)
    before = run_day(cfg, m, day)
    assert before.anomaly is None  # no model yet: no scoring, nothing changes
    assert not [b for b in list_breaks(db_url, m.id) if b["anomaly_score"] is not None]

    assert REGULAR_PAYER in anomaly_history(cfg, m, days=14)
    summary = run_day(cfg, m, day)
    a = summary.anomaly
    assert a.model == "demo-shop v1" and a.scored > 40 and a.breaks_scored >= 8
    breaks = list_breaks(db_url, m.id, day)
    alerts = {b["order_id"]: b for b in breaks if b["type"] == "anomaly"}
    # W-M001 is planted by the history; the split payment A-2017 (two trades of different
    # amounts for one order) is not a second charge
    assert a.new_alerts == len(alerts) == 1
    alert = alerts["W-M001"]
    assert alert["order_id"] == "W-M001" and alert["channel_amount"] == "84.50" and alert["status"] == "open"
    assert "¥84.50 is 14.1× this payer's median (¥6.00 over 5 payments)" in alert["explanation"]
    assert alert["evidence"][0]["file"].endswith("wechatpay_tradebill_ALL_2026-11-20.csv")
    # every break with a channel record has a score; the fee-mismatch payment is out of range
    scored = {b["order_id"]: b for b in breaks if b["anomaly_score"] is not None}
    assert {"W-1010", "W-1015", "W-1025"} <= set(scored)
    assert scored["W-1025"]["severity"] == "urgent" and scored["W-1025"]["anomaly_score"] > 0.9

    again = run_day(cfg, m, day)  # idempotent: same scores, nothing new, no version bumps
    assert (again.anomaly.new_alerts, again.anomaly.breaks_raised) == (0, 0)
    assert list_breaks(db_url, m.id, day) == breaks

    # the alert's record is kept out of training until a reviewer says it is expected
    out, expected = flagged(db_url, m.id)
    assert len(out) == 1 and not expected
    mark_expected(db_url, alert["id"], "alice", "birthday order for the office")
    out2, expected2 = flagged(db_url, m.id)
    assert not out2 and expected2 == out
    with Session(get_engine(db_url)) as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "anomaly_expected")).scalars().one()
    assert (event.actor, event.subject_id) == ("alice", str(alert["id"]))
    assert json.loads(event.detail)["note"] == "birthday order for the office"
    run_day(cfg, m, day)  # a later run leaves the verdict alone and does not alert again
    statuses = {b["order_id"]: b["status"] for b in list_breaks(db_url, m.id, day, statuses=None)
                if b["type"] == "anomaly"}
    assert statuses["W-M001"] == "expected"
    with pytest.raises(FeedbackError, match="not an anomaly alert"):
        mark_expected(db_url, scored["W-1010"]["id"], "alice")


def test_every_feature_is_documented():
    from pathlib import Path

    from core.anomaly.features import FEATURES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "anomaly.md").read_text(encoding="utf-8")
    assert [f.name for f in FEATURES if f"| `{f.name}` | {f.unit} | {f.meaning} |" not in doc] == []

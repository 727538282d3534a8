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
    assert [(t.scope, t.excluded) for t in train(cfg, [m.id])] == [("demo-shop", 1), ("*", 1)]
    mark_expected(db_url, alert["id"], "alice", "birthday order for the office")
    out2, expected2 = flagged(db_url, m.id)
    assert not out2 and expected2 == out
    assert [t.excluded for t in train(cfg, [m.id])] == [0, 0]
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


# -- the fast paths against what they replace ----------------------------------------------

def test_forest_score_is_scikit_learns_score_samples():
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(3)
    X = rng.normal(size=(5000, 6)).astype(np.float32)
    X[:20] += 6  # a few far out, so leaves of every depth are reached
    forest = IsolationForest(n_estimators=40, max_samples=256, random_state=1).fit(X)
    Y = np.vstack([X, rng.normal(size=(70_000, 6)).astype(np.float32) * 2])  # more rows than one thread task
    Y[::3, 2] = np.round(Y[::3, 2])  # columns of few values, which the walk sorts by first
    Y[:, 4] = np.round(Y[:, 4] * 2) / 2
    ours = M.forest_score(forest, Y)
    assert np.allclose(ours, -forest.score_samples(Y), rtol=0, atol=1e-12)
    assert ours[:20].min() > np.quantile(ours[20:5000], 0.99)
    # the rows are walked sorted, but each row's path lengths add up tree by tree as a plain walk's do
    plain = sum(M.leaf_depths(e.tree_)[e.tree_.apply(Y)] for e in forest.estimators_)
    assert np.array_equal(ours, 2.0 ** (-plain / (40 * M.average_path_length([256])[0])))


def test_scoring_feature_rows_is_scoring_their_matrix():
    """Each thread makes its own slice of the matrix from the rows' columns, whose chunks do not
    line up with the slices."""
    from core.anomaly.features import FEATURE_NAMES

    rng = np.random.default_rng(6)
    X = rng.gamma(2.0, 1.0, size=(150_000, len(FEATURE_NAMES)))
    X[:, 3] = np.round(X[:, 3])
    model = M.Model(scope="", profiles={}, window=(None, None), rows=0,
                    **M.fit(X[:5000].astype(np.float32), list(FEATURE_NAMES), trees=20, target_alert_rate=0.001))
    cuts = [0, 1000, 70_001, 70_002, 150_000]
    table = pa.table({name: pa.chunked_array([X[a:b, j] for a, b in zip(cuts, cuts[1:])])
                      for j, name in enumerate(FEATURE_NAMES)})
    assert np.array_equal(M.score(model, table), M.score(model, M.matrix(table, FEATURE_NAMES)))


def test_excess_written_in_place_is_the_plain_formula_bit_for_bit():
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(3000, 6)) * 3).astype(np.float32)
    X[rng.random(X.shape) < 0.01] = np.nan
    low, high, spread = np.full(6, -1.5), np.full(6, 2.0), rng.uniform(0.3, 2, 6)
    directions = ["high", "low", "both", "high", "both", "low"]
    up, down = np.maximum(X - high, 0) / spread, np.maximum(low - X, 0) / spread
    plain = np.sum(np.where(np.array([d != "low" for d in directions]), up, 0)
                   + np.where(np.array([d != "high" for d in directions]), down, 0), axis=1)
    got = M.excess(X, low, high, spread, directions)
    assert np.array_equal(got, plain, equal_nan=True) and np.isnan(got).any() and (got > 0).mean() > 0.5


def _tx(rows, tz="Europe/Berlin"):
    """A hand-made slice: (minutes after 2026-10-24 00:00 UTC, payer, kind, amount, order, business day)."""
    from datetime import datetime

    from core.anomaly import features as F

    base = datetime(2026, 10, 24)
    return pa.table({
        "id": pa.array(range(1, len(rows) + 1), pa.int64()),
        "source": pa.array(["stripe"] * len(rows)), "kind": pa.array([r[2] for r in rows]),
        "amount": pa.array([r[3] for r in rows], pa.int64()), "fee": pa.array([0] * len(rows), pa.int64()),
        "discount": pa.array([0] * len(rows), pa.int64()),
        "occurred_at": pa.array([base + timedelta(minutes=r[0], seconds=30) for r in rows], pa.timestamp("us")),
        "business_day": pa.array([r[5] for r in rows], pa.date32()),
        "payer": pa.array([r[1] for r in rows]), "order_id": pa.array([r[4] for r in rows]),
    }, schema=F.TX_SCHEMA)


def test_windows_and_local_time_counted_by_hand():
    """Berlin leaves summer time at 01:00 UTC on 2026-10-25: 00:30 UTC is 02:30 CEST, 01:30
    UTC is 02:30 CET. Windows are to the minute and count the row itself."""
    from core.anomaly import features as F

    d24, d25 = date(2026, 10, 24), date(2026, 10, 25)
    rows = [
        (600, "p1", "payment", 1000, "o1", d24),  # the day before: context for the 24-hour windows
        (1440 + 30, "p1", "payment", 1000, "o2", d25),  # 00:30 UTC
        (1440 + 35, "p1", "payment", 1000, "o2", d25),  # the same order and amount again
        (1440 + 40, "p1", "refund", -1000, "o2", d25),
        (1440 + 90, "p1", "payment", 500, "o3", d25),  # 01:30 UTC, after the change
        (1440 + 95, "", "payment", 700, "", d25),  # no payer, no order
        (1440 + 100, "p2", "refund", -300, "o9", d25),
    ]
    con = F.connect(_tx(rows), F.ORDERS_SCHEMA.empty_table(), "Europe/Berlin", {"stripe": 0.014}, d25, d25)
    w = con.sql("SELECT id, hr, dow, local_minute, payer_10m, payer_1h, payer_24h, payer_refunds_24h, "
                "payer_payments_24h, same_amount_1h, channel_30m, order_payments FROM w ORDER BY id").fetchall()
    by_id = {r[0]: r[1:] for r in w}
    assert [by_id[i][:3] for i in (2, 5)] == [(2, 7, 150), (2, 7, 150)]  # 02:30 on a Sunday, twice
    assert by_id[1][:2] == (12, 6)  # 10:00 UTC on Saturday is 12:00 CEST
    #            10m 1h 24h ref24 pay24 same1h ch30 order
    assert by_id[2][3:] == (1, 1, 2, 0, 2, 1, 2, 1)  # 24 h back reaches the day before's payment
    assert by_id[3][3:] == (2, 2, 3, 0, 3, 2, 2, 2)  # o2 charged a second time
    assert by_id[4][3:] == (1, 1, 1, 1, 3, 1, 1, 1)  # a refund counts refunds, its payer's payments beside
    assert by_id[5][3:] == (1, 3, 4, 1, 4, 1, 2, 1)  # the hour back starts at 00:30 exactly
    assert by_id[6][3:] == (1, 1, 1, 0, 0, 1, 2, 1)  # no payer: counted as alone
    assert by_id[7][3:] == (1, 1, 1, 1, 0, 1, 1, 1)
    assert by_id[1][3:] == (0,) * 8  # context rows get no windows


def _windows_by_one_sort(keys, t_min, top, masks, scored):
    """What `_windows` computed before it left lonely rows out and sorted few groups by radix:
    every row of every key in one argsort, the bounds by searchsorted."""
    from core.anomaly import features as F

    out, top = {}, np.uint64(top)
    for name, key, member, before, after in F.WINDOWS:
        v = keys[key]
        order = np.argsort(v)
        vs = v[order]
        rows = order[scored[order]]
        q, qt = v[rows], t_min[rows]
        lo = np.searchsorted(vs, q - np.minimum(qt, np.uint64(before)), "left")
        hi = np.searchsorted(vs, q + np.minimum(top - qt, np.uint64(after)), "right")

        def within(m):
            c = np.concatenate(([0], np.cumsum(masks[m][order], dtype=np.int64)))
            return c[hi] - c[lo]

        counts = np.zeros(len(v), np.int64)
        if member is None:
            counts[rows] = hi - lo
        elif member == "same kind":
            counts[rows] = np.where(masks["is_pay"][rows], within("is_pay"), within("is_ref"))
        else:
            counts[rows] = within(member)
        out[name] = counts
    for name, value in F.NO_PAYER.items():
        out[name][masks["no_payer"]] = value
    out["order_payments"][masks["no_order"] | ~masks["is_pay"]] = 1
    return out


@pytest.mark.parametrize("time_bits", [13, 17])  # a scored day; a training window (no radix sort)
def test_windows_leave_lonely_rows_out_and_sort_few_groups_as_one_sort_would(time_bits):
    """150k rows: most payers, amounts and orders alone in their group (counted without a
    sort), the rest in pairs or in groups of about 40 rows within minutes; four channel groups."""
    from core.anomaly import features as F

    rng = np.random.default_rng(11)
    n, top = 150_000, (1 << time_bits) - 1
    t_min = rng.integers(0, min(top, 4 * 1440), n).astype(np.uint64)

    def key(groups: np.ndarray) -> np.ndarray:
        hashes = rng.integers(0, 2**63, groups.max() + 1, dtype=np.uint64) * np.uint64(2)
        return (hashes[groups] & ~np.uint64(top)) | t_min

    lonely = rng.random(n) < 0.7
    crowd = rng.integers(0, n // 400, n)  # groups of about 40 among the rest
    payer = np.where(lonely, np.arange(n) + n, crowd)
    t_min[~lonely] = (crowd[~lonely] * 7 + rng.integers(0, 90, (~lonely).sum())).astype(np.uint64) % np.uint64(top)
    is_pay = rng.random(n) < 0.85
    keys = {"k_payer": key(payer), "k_amount": key(payer * 4 + rng.integers(0, 2, n) * 2 + is_pay),
            "k_order": key(np.choose(rng.choice(3, n, p=[0.8, 0.15, 0.05]),  # alone, in pairs, in crowds
                                     [np.arange(n), np.arange(n) // 2 + n, rng.integers(0, 500, n) + 2 * n])),
            "k_channel": key(rng.integers(0, 2, n) * 2 + is_pay)}
    masks = {"is_pay": is_pay, "is_ref": ~is_pay, "no_payer": rng.random(n) < 0.02,
             "no_order": rng.random(n) < 0.03}
    scored = rng.random(n) < 0.55
    got = F._windows(keys, t_min, top, masks, scored)
    want = _windows_by_one_sort(keys, t_min, top, masks, scored)
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}
    assert max(want["payer_1h"]) > 5 and max(want["channel_30m"]) > 50  # crowds and busy channels were there
    assert (want["order_payments"][scored & is_pay & ~masks["no_order"]] == 2).sum() > 500  # and pairs
    maybe = F._maybe_grouped(keys["k_payer"], time_bits)
    assert maybe[~lonely].all() and maybe[lonely].mean() < 0.2  # groups kept whole, most lonely rows left out


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu"])
def test_local_minutes_agree_with_zoneinfo(tz):
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from core.anomaly.features import local_minutes

    rng = np.random.default_rng(5)
    start = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()) // 60
    utc = np.sort(rng.integers(start, start + 300 * 1440, 2000))
    got = local_minutes(utc, tz)
    zone = ZoneInfo(tz)
    want = [m + int(datetime.fromtimestamp(int(m) * 60, zone).utcoffset().total_seconds()) // 60 for m in utc]
    assert got.tolist() == want


def test_scores_are_appended_the_first_time_and_updated_after(db_url, tmp_path):
    from core.anomaly.scoring import _write_scores, scores_of

    S.write(db_url, SHOP, S.normal_traffic(SHOP, FIRST, 1, seed=1), "t")
    from models.db import adbc_connect

    with adbc_connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM record ORDER BY id")
        ids = [r[0] for r in cur.fetchall()]
    with Session(get_engine(db_url)) as s:
        row = AnomalyModel(scope="shop", version=1, path="x", sha256="0", window_first=FIRST, window_last=FIRST,
                           rows=1, features="[]", threshold=0.7, urgent_threshold=0.8, target_alert_rate=0.001)
        s.add(row)
        s.commit()
        model_id = row.id
    first = pa.table({"id": pa.array(ids[:-5], pa.int64()), "score": pa.array(np.linspace(0.3, 0.6, len(ids) - 5))})
    _write_scores(db_url, first, model_id)  # nothing scored yet: straight in
    assert scores_of(db_url, ids[:3]) == dict(zip(ids[:3], first["score"].to_pylist()[:3]))
    again = pa.table({"id": pa.array(ids, pa.int64()), "score": pa.array(np.full(len(ids), 0.5))})
    _write_scores(db_url, again, model_id)  # a re-run: every score replaced, the new ones added
    assert set(scores_of(db_url, ids).values()) == {0.5} and len(scores_of(db_url, ids)) == len(ids)


def test_the_slice_and_the_keyed_joins_against_a_plain_count(db_url, monkeypatch):
    """`load_slice` reads the day whole, the day before with the columns the windows read, and
    our orders of both days; the order time and the payer history joined on hashed keys are
    the ones a dictionary lookup by the text keys finds."""
    import math

    from core.anomaly import features as F

    d1, d2 = FIRST, FIRST + timedelta(days=1)
    rows = S.normal_traffic(SHOP, d1, 2, seed=3)
    S.write(db_url, SHOP, rows, "t")
    S.write(db_url, SHOP, S.orders_for(rows, 3), "t", side="internal")
    tx, orders = F.load_slice(db_url, "shop", d2, d2)
    per_day = {d: sum(1 for x in rows["business_day"].to_pylist() if x == d) for d in (d1, d2)}
    context = tx.filter(pa.compute.equal(tx["business_day"], pa.scalar(d1, pa.date32())))
    assert (tx.num_rows, context.num_rows) == (per_day[d1] + per_day[d2], per_day[d1])
    assert context["id"].null_count == context["fee"].null_count == context.num_rows  # narrow
    assert tx["id"].null_count == context.num_rows and orders.num_rows > 0.9 * tx.num_rows
    if db_url.startswith("sqlite"):  # read in READ_BATCH-row batches (the driver's own hold 1024 rows)
        monkeypatch.setattr(F, "READ_BATCH", 64)
        again, _ = F.load_slice(db_url, "shop", d2, d2)
        assert again.equals(tx) and max(len(c) for c in again["payer"].chunks) == 64

    con = F.connect(tx, orders, SHOP.timezone, {s: 0.006 for s, _ in SHOP.sources}, d2, d2)
    prof = F.profile(con)
    table = F.features(con, prof, SHOP.currency).to_pylist()
    assert len(table) == per_day[d2]
    order_at = {}
    for o in orders.to_pylist():
        key = (o["source"], o["order_id"])
        order_at[key] = min(order_at.get(key, o["occurred_at"]), o["occurred_at"])
    history = {p["payer"]: p for p in prof["payer"].to_pylist()}
    at = {r["id"]: r["occurred_at"] for r in tx.to_pylist() if r["id"] is not None}
    joined = with_history = 0
    for r in table:
        o = order_at.get((r["source"], r["order_id"])) if r["kind"] == "payment" else None
        want = 0 if o is None else math.log(1 + abs((at[r["id"]] - o).total_seconds()) / 60)
        assert r["order_delay"] == pytest.approx(want, abs=1e-6), r
        h = history.get(r["payer"])
        assert r["payer_history"] == (h["payments"] if h else 0)
        if h and h["payments"] >= 3:
            assert r["payer_ratio"] == pytest.approx(math.log(max(abs(r["amount"]), 1) / h["median_minor"]))
        joined += o is not None
        with_history += bool(h)
    assert joined > 0.9 * per_day[d2] and with_history > 0.3 * per_day[d2]  # the joins were exercised


def test_rows_are_put_in_id_order_only_when_they_are_not():
    from core.anomaly.features import by_id

    t = pa.table({"id": pa.chunked_array([[5, 9], [2, 7]], pa.int64()), "x": ["a", "b", "c", "d"]})
    assert by_id(t).to_pydict() == {"id": [2, 5, 7, 9], "x": ["c", "a", "d", "b"]}
    ordered = by_id(t)
    assert by_id(ordered) is ordered
    # parts in order each, handed back out of order (DuckDB's threads): the parts reordered, no row moved
    parts = pa.table({"id": pa.chunked_array([[7, 9], [], [2, 5]], pa.int64()),
                      "x": pa.chunked_array([["d", "b"], [], ["c", "a"]])})
    regrouped = by_id(parts)
    assert regrouped.to_pydict() == {"id": [2, 5, 7, 9], "x": ["c", "a", "d", "b"]}
    assert [len(c) for c in regrouped["x"].chunks] == [2, 2]


def test_training_describes_a_sample_of_a_long_window_and_still_ranks_what_was_injected(tmp_path, monkeypatch):
    """Above TRAIN_ROWS transactions, features are computed for a sample only (the profile
    still reads them all); the model trained so still puts every injected pattern on top."""
    from core.anomaly import training as T
    from models.db import adbc_connect

    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url)
    normal = S.normal_traffic(SHOP, FIRST, TRAIN_DAYS + 1, seed=8)
    day = FIRST + timedelta(days=TRAIN_DAYS)
    injected = pa.concat_tables([S.inject(SHOP, normal, day, p, seed=8) for p in S.PATTERNS])
    S.write(url, SHOP, pa.concat_tables([normal, injected]), "t")
    cfg = _config(url, tmp_path / "models", [SHOP])
    monkeypatch.setattr(T, "TRAIN_ROWS", 3000)
    own = train(cfg, last=day - timedelta(days=1))[0]
    window = sum(1 for d in normal["business_day"].to_pylist() if FIRST <= d < day)
    assert (own.scope, own.rows, own.fitted) == ("shop", window, 3000) and window > 2 * 3000
    t = score(cfg, cfg.merchant("shop"), day, day)
    truth = {r: p for p in S.PATTERNS for r in _refs(injected, p)}
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, ref FROM record")
        refs = dict(cur.fetchall())
    s = np.array(t["score"].to_pylist())
    hit = np.array([refs[i] in truth for i in t["id"].to_pylist()])
    assert hit.sum() == len(truth) and (s[hit] > np.quantile(s[~hit], 0.99)).all()

"""Training: one Isolation Forest per merchant with enough history, one pooled for the rest.

`train` is what `recon model train` and the scheduler's `retrain` job call. The window is
the `anomaly.train_days` days up to the latest business day stored for the merchant.
Transactions already flagged as anomalies are kept out of the training rows (a model must
not learn that fraud is normal), except those a reviewer marked `expected`: those are
ordinary, and stay in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlmodel import Session

from core.anomaly import features as F
from core.anomaly import model as M
from core.anomaly.stopwatch import Stopwatch, lap
from core.config import Config, MerchantConfig
from models.db import adbc_connect, get_engine
from models.tables import Break

POOLED_ROWS_PER_MERCHANT = 200_000  # the pooled model samples each merchant down to this
TRAIN_ROWS = 400_000  # transactions of a merchant's window whose features a model is fit on (see merchant_rows)


@dataclass(frozen=True)
class Trained:
    scope: str
    version: int
    rows: int  # transactions of the window learnt from (the profile reads them all)
    fitted: int  # rows of the matrix the forest and thresholds were fit on (a sample of them)
    excluded: int
    window: tuple[date, date]
    threshold: float
    path: str


def model_dir(cfg: Config) -> Path:
    return (cfg.base_dir / cfg.anomaly.model_dir).resolve()


def rate_card(merchant: MerchantConfig) -> dict[str, float]:
    return {s.name: float(s.fee_rate) for s in merchant.sources if s.fee_rate is not None}


def latest_day(url: str, merchant_id: str) -> date | None:
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(last_day) FROM statement_file "  # the files know their records' days
                    f"WHERE merchant_id = {F._lit(merchant_id)} AND side = 'channel' AND first_record_id IS NOT NULL")
        value = cur.fetchone()[0]
    return None if value is None else (value if isinstance(value, date) else date.fromisoformat(str(value)[:10]))


def flagged(url: str, merchant_id: str) -> tuple[set[int], set[int]]:
    """Record ids of anomaly alerts: (kept out of training, marked expected by a reviewer)."""
    with Session(get_engine(url)) as s:
        rows = s.execute(select(Break.key, Break.status).where(Break.merchant_id == merchant_id,
                                                               Break.type == "anomaly")).all()
    if not rows:
        return set(), set()
    wanted = {}
    for key, status in rows:
        source, _type, kind, _side, ref = key.split(":", 4)
        wanted[(source, kind, ref)] = status
    triples = " OR ".join(f"(l.source = {F._lit(s)} AND r.kind = {F._lit(k)} AND r.ref = {F._lit(r)})"
                          for s, k, r in wanted)
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT r.id, l.source, r.kind, r.ref FROM record r JOIN ledger l ON l.id = r.ledger_id "
                    f"WHERE l.merchant_id = {F._lit(merchant_id)} AND l.side = 'channel' AND ({triples})")
        found = cur.fetchall()
    out, expected = set(), set()
    for rid, source, kind, ref in found:
        status = wanted[(source, kind, ref)]
        if status == "expected":
            expected.add(rid)
        elif status != "cleared":
            out.add(rid)
    return out, expected


def merchant_rows(cfg: Config, merchant: MerchantConfig, first: date, last: date, seed: int = 0,
                  watch: Stopwatch | None = None) -> tuple[pa.Table, dict, int, int]:
    """-> (features of a sample of the window's transactions, profile, transactions learnt
    from, flagged anomalies left out).

    The profile is built from every transaction of the window; features (windows, joins) are
    computed for at most TRAIN_ROWS of them, drawn at random once flagged ones are left out:
    the forest reads 256 rows per tree and the thresholds THRESHOLD_SAMPLE rows, so features
    of the rest (97% of a 60-day window of 100k a day) were computed to be thrown away."""
    url = cfg.database.url
    tx, orders = F.load_slice(url, merchant.id, first, last)
    lap(watch, "read transactions and orders")
    window = F.in_days(tx, first, last)
    out, _expected = flagged(url, merchant.id)
    left_out = np.zeros(len(window), bool)
    if out:
        hit = pc.fill_null(pc.is_in(tx["id"], value_set=pa.array(sorted(out), pa.int64())), False)
        left_out = window & hit.to_numpy(zero_copy_only=False)
    clean = np.flatnonzero(window & ~left_out)
    rows = np.zeros(len(window), bool)
    rows[clean if len(clean) <= TRAIN_ROWS else np.random.default_rng(seed).choice(clean, TRAIN_ROWS, replace=False)] = True
    con = F.connect(tx, orders, merchant.timezone, rate_card(merchant), first, last, rows)
    lap(watch, "local time, windows")
    prof = F.profile(con)
    table = F.features(con, prof, merchant.currency)
    con.close()
    lap(watch, "profile, features (DuckDB)")
    return table, prof, len(clean), int(left_out.sum())


def train(cfg: Config, merchant_ids: list[str] | None = None, last: date | None = None,
          seed: int = 0, watch: Stopwatch | None = None) -> list[Trained]:
    """Train and store models; returns what was trained (own models, then the pooled one)."""
    a = cfg.anomaly
    url = cfg.database.url
    chosen = [m for m in cfg.merchants if merchant_ids is None or m.id in merchant_ids]
    results, pooled_x, profiles, windows, learnt_total, excluded_total = [], [], {}, [], 0, 0
    for merchant in chosen:
        end = last or latest_day(url, merchant.id)
        if end is None:
            continue
        first = end - timedelta(days=a.train_days - 1)
        table, prof, learnt, excluded = merchant_rows(cfg, merchant, first, end, seed, watch)
        if table.num_rows == 0:
            continue
        X = M.matrix(table, F.FEATURE_NAMES)
        lap(watch, "matrix")
        profiles[merchant.id] = prof
        windows.append((first, end))
        learnt_total += learnt
        excluded_total += excluded
        if len(X) > POOLED_ROWS_PER_MERCHANT:
            pooled_x.append(X[np.random.default_rng(seed).choice(len(X), POOLED_ROWS_PER_MERCHANT, replace=False)])
        else:
            pooled_x.append(X)
        if learnt >= a.min_transactions:
            results.append(_fit_and_save(cfg, merchant.id, X, {merchant.id: prof}, (first, end), learnt, excluded,
                                         seed, watch))
    if pooled_x:
        window = (min(w[0] for w in windows), max(w[1] for w in windows))
        results.append(_fit_and_save(cfg, M.POOLED, np.concatenate(pooled_x), profiles, window, learnt_total,
                                     excluded_total, seed, watch))
    return results


def _fit_and_save(cfg: Config, scope: str, X: np.ndarray, profiles, window, learnt: int, excluded: int, seed: int,
                  watch: Stopwatch | None = None) -> Trained:
    a = cfg.anomaly
    fields = M.fit(X, list(F.FEATURE_NAMES), trees=a.trees, target_alert_rate=float(a.target_alert_rate), seed=seed)
    lap(watch, "fit forests, place thresholds")
    model = M.save(cfg.database.url, model_dir(cfg), M.Model(
        scope=scope, profiles=profiles, window=window, rows=learnt, excluded=excluded, **fields))
    lap(watch, "save model files and rows")
    return Trained(scope, model.version, learnt, len(X), excluded, window, model.threshold, str(model_dir(cfg)))


def retrain(cfg: Config) -> list[Trained]:
    """The scheduler's `retrain` job: every configured merchant, up to its latest day."""
    return train(cfg)

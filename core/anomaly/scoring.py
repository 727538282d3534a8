"""Scoring after a run: every channel transaction of the day, and every break of the day.

- Every transaction's score goes to `anomaly_score` (one row per record id, written in
  bulk through ADBC and upserted, so a re-run overwrites instead of adding).
- A break's score is the highest score among its evidence records (`break.anomaly_score`);
  at or above the model's threshold, a `normal` break becomes `urgent`. A break none of
  whose records is a scored channel transaction (a short payment: only our order exists)
  keeps no score.
- A transaction at or above the threshold that no break of the day names (it matched
  cleanly) becomes a break of its own: type `anomaly`, status `open`, severity `urgent`
  above the urgent threshold, with the reasons in words. Re-runs update it in place; one a
  reviewer marked `expected` (or resolved) is never touched again; an open one whose
  transaction no longer scores above the threshold (a newer model) is `cleared`.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone

import adbc_driver_manager.dbapi as adbc_errors
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlmodel import Session

from core.anomaly import features as F
from core.anomaly import model as M
from core.anomaly.explain import explain
from core.anomaly.stopwatch import Stopwatch, lap
from core.anomaly.training import rate_card
from core.config import Config, MerchantConfig
from core.money import display
from models.db import adbc_connect, get_engine, is_sqlite
from models.tables import AnomalyModel, AuditEvent, Break

OPEN_STATES = ("open", "in_transit", "note")
RAISED = {"normal": "urgent"}  # a high score raises a break one step; notes stay notes


@dataclass(frozen=True)
class AnomalySummary:
    model: str  # "demo-shop v3" / "pooled v1"
    scored: int
    alerts: int  # anomaly breaks of the day, open
    new_alerts: int
    breaks_scored: int
    breaks_raised: int


def score(cfg: Config, merchant: MerchantConfig, first: date, last: date, model: M.Model | None = None,
          watch: Stopwatch | None = None) -> pa.Table | None:
    """Feature rows of the merchant's transactions in [first, last] with a `score` column;
    None when no model exists for the merchant."""
    if model is None:
        model = M.row_for_merchant(cfg.database.url, merchant.id)
        if model is None:
            return None
    return F.by_id(_score(cfg, merchant, first, last, model, watch)[0])


def _score(cfg: Config, merchant: MerchantConfig, first: date, last: date, model: M.Model | AnomalyModel,
           watch: Stopwatch | None) -> tuple[pa.Table, M.Model]:
    """-> (feature rows with scores, in no particular order; the model). Given a model's row, its file (and, in a new
    process, scikit-learn: about a second of imports) is loaded on a thread while the records
    are read (SQLite releases the GIL) and the windows counted (numpy does), which need no
    model; the features do (the merchant's profile)."""
    url = cfg.database.url
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(M.from_row, url, model) if isinstance(model, AnomalyModel) else None
        tx, orders = F.load_slice(url, merchant.id, first, last)
        lap(watch, "read transactions and orders" + (" (model loading beside)" if pending else ""))
        con = F.connect(tx, orders, merchant.timezone, rate_card(merchant), first, last)
        lap(watch, "local time, windows")
        if pending is not None:
            model = pending.result()
            lap(watch, "wait for the model")
    prof = model.profiles.get(merchant.id) or F.profile(con)  # a merchant new since training: its own slice
    table = F.features(con, prof, merchant.currency, in_id_order=False)
    con.close()
    lap(watch, "features (DuckDB joins)")
    s = M.score(model, table)  # each thread makes its slice of the matrix
    lap(watch, "forest + range lift")
    return table.append_column("score", pa.array(s, pa.float64())), model


def after_run(cfg: Config, merchant: MerchantConfig, day: date, run_id: int,
              watch: Stopwatch | None = None) -> AnomalySummary | None:
    """The hook at the end of `core.runs.run_day`; None when scoring is off or no model exists."""
    if not cfg.anomaly.enabled:
        return None
    url = cfg.database.url
    row = M.row_for_merchant(url, merchant.id)
    if row is None:
        return None
    table, model = _score(cfg, merchant, day, day, row, watch)
    _write_scores(url, F.by_id(table.select(["id", "score"])), model.id)
    lap(watch, "write the scores")
    high = F.by_id(table.filter(pc.greater_equal(table["score"], model.threshold)))  # alerts are stored in id order
    breaks_scored, raised, named = _score_breaks(url, merchant.id, day, table, model.threshold)
    alerts = high.filter(pc.invert(pc.is_in(high["id"], value_set=pa.array(sorted(named), pa.int64()))))
    open_alerts, new = _store_alerts(url, merchant, day, run_id, alerts, model)
    lap(watch, "score breaks, store alerts")
    name = "pooled" if model.scope == M.POOLED else model.scope
    return AnomalySummary(f"{name} v{model.version}", table.num_rows, open_alerts, new, breaks_scored, raised)


def _write_scores(url: str, table: pa.Table, model_id: int) -> None:
    """Upsert (record id, model id, score) from `table` (id and score, in id order). When no
    record of the id range has a score yet (a day scored for the first time) the rows are
    appended straight into the table, in id order, at half the cost; otherwise, or when a
    score appeared meanwhile (the append then fails on the key), through a temporary table and
    INSERT ... ON CONFLICT."""
    if table.num_rows == 0:
        return
    ids = table["id"]
    rows = pa.table({"record_id": ids, "model_id": pa.array(np.full(table.num_rows, model_id, np.int64)),
                     "score": table["score"]})
    if not is_sqlite(url):  # COPY into the table needs its own column types (integer, double)
        rows = rows.cast(pa.schema([("record_id", pa.int32()), ("model_id", pa.int32()), ("score", pa.float64())]))
    try:
        if _put_scores(url, rows, straight=True):
            return
    except adbc_errors.DatabaseError:  # a key taken meanwhile (SQLite reports it as an internal error)
        pass
    _put_scores(url, rows, straight=False)


def _put_scores(url: str, rows: pa.Table, straight: bool) -> bool:
    """One transaction; `straight`: append only if no score of the id range exists (-> False if one does)."""
    with adbc_connect(url) as conn:
        cur = conn.cursor()
        try:
            if straight:
                cur.execute(f"SELECT count(*) FROM anomaly_score WHERE record_id BETWEEN "
                            f"{int(pc.min(rows['record_id']).as_py())} AND {int(pc.max(rows['record_id']).as_py())}")
                if cur.fetchone()[0]:
                    conn.rollback()
                    return False
                cur.adbc_ingest("anomaly_score", rows, mode="append")
            else:
                cur.execute("DROP TABLE IF EXISTS anomaly_stage")
                cur.adbc_ingest("anomaly_stage", rows, mode="create", temporary=True)
                cur.execute("INSERT INTO anomaly_score (record_id, model_id, score) "
                            "SELECT record_id, model_id, score FROM anomaly_stage WHERE true ON CONFLICT (record_id) "
                            "DO UPDATE SET model_id = excluded.model_id, score = excluded.score")
                cur.execute("DROP TABLE anomaly_stage")
            conn.commit()
            return True
        except Exception:
            conn.rollback()
            raise
        finally:
            cur.close()


def _evidence_ids(url: str, places: set[tuple[str, int]], ids: pa.ChunkedArray) -> dict[tuple[str, int], int]:
    """(file path, line) -> record id, for the breaks' evidence lines among the scored records
    (`ids`): only those lines are looked up, not the day's million records."""
    if not places or len(ids) == 0:
        return {}
    paths = sorted({f for f, _ in places})
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, path FROM statement_file WHERE path IN ({', '.join(map(F._lit, paths))})")
        files = dict(cur.fetchall())
        if not files:
            return {}
        lines = sorted({int(ln) for _, ln in places})
        cur.execute(f"SELECT id, file_id, line FROM record WHERE id BETWEEN {int(pc.min(ids).as_py())} AND "
                    f"{int(pc.max(ids).as_py())} AND file_id IN ({', '.join(map(str, files))}) "
                    f"AND line IN ({', '.join(map(str, lines))})")
        found = cur.fetchall()
    return {(files[fid], ln): rid for rid, fid, ln in found if (files[fid], ln) in places}


def _score_breaks(url, merchant_id, day, table, threshold) -> tuple[int, int, set[int]]:
    """Score the day's breaks from their records; -> (scored, raised, record ids named by a break)."""
    with Session(get_engine(url)) as s:
        evidence = s.execute(select(Break.evidence).where(Break.merchant_id == merchant_id, Break.business_day == day,
                                                          Break.type != "anomaly")).scalars().all()
    places = {(e["file"], e["line"]) for ev in evidence for e in json.loads(ev)}
    by_place = _evidence_ids(url, places, table["id"])
    wanted = pa.array(sorted(set(by_place.values())), pa.int64())
    named_rows = table.select(["id", "score"]).filter(pc.is_in(table["id"], value_set=wanted))
    scores = dict(zip(named_rows["id"].to_pylist(), named_rows["score"].to_pylist()))
    named: set[int] = set()
    scored = raised = 0
    now = datetime.now(timezone.utc)
    with Session(get_engine(url)) as s:
        rows = s.execute(select(Break).where(Break.merchant_id == merchant_id, Break.business_day == day,
                                             Break.type != "anomaly")).scalars().all()
        for b in rows:
            ids = [by_place.get((e["file"], e["line"])) for e in json.loads(b.evidence)]
            ids = [i for i in ids if i is not None and i in scores]
            named.update(ids)
            if not ids or b.status not in OPEN_STATES:
                continue
            best = round(max(scores[i] for i in ids), 6)
            scored += 1
            severity = RAISED.get(b.severity, b.severity) if best >= threshold else b.severity
            if (b.anomaly_score, b.severity) != (best, severity):
                raised += severity != b.severity
                b.anomaly_score, b.severity = best, severity
                b.version += 1
                b.updated_at = now
        s.commit()
    return scored, raised, named


def _store_alerts(url, merchant: MerchantConfig, day: date, run_id: int, alerts: pa.Table, model: M.Model):
    """Upsert the day's anomaly breaks; -> (open anomaly breaks of the day, newly created)."""
    details = _details(url, alerts["id"])
    now = datetime.now(timezone.utc)
    new = 0
    with Session(get_engine(url)) as s:
        existing = {b.key: b for b in s.execute(select(Break).where(
            Break.merchant_id == merchant.id, Break.business_day == day, Break.type == "anomaly")).scalars()}
        seen = set()
        for row in alerts.to_pylist():
            d = details[row["id"]]
            key = f"{row['source']}:anomaly:{row['kind']}:channel:{d['ref']}"
            seen.add(key)
            sc = round(row["score"], 6)
            values = dict(
                source=row["source"], type="anomaly", order_id=d["order_id"], txn_id=d["txn_id"],
                internal_amount=None, channel_amount=row["amount"], difference=0, currency=d["currency"],
                rule=f"isolation_forest:{'pooled' if model.scope == M.POOLED else model.scope}:v{model.version}",
                tolerance=0, severity="urgent" if sc >= model.urgent_threshold else "normal", anomaly_score=sc,
                explanation=sentence(row, d["currency"], model),
                evidence=json.dumps([{"side": "channel", "file": d["file"], "line": d["line"]}], ensure_ascii=False))
            b = existing.get(key)
            if b is None:
                s.add(Break(merchant_id=merchant.id, business_day=day, key=key, status="open", first_run_id=run_id,
                            last_run_id=run_id, **values))
                new += 1
            elif b.status == "open":
                b.revise(values, run_id, now)
        for key, b in existing.items():
            if key not in seen and b.status == "open":
                b.revise({"status": "cleared"}, run_id, now)
                s.add(AuditEvent(actor="reconbot", action="cleared", subject_type="break", subject_id=str(b.id),
                                 detail=json.dumps({"run": run_id, "key": key, "why": "score below threshold"})))
        s.commit()
        open_now = len([k for k, b in existing.items() if b.status == "open"]) + new
    return open_now, new


def sentence(row: dict, currency: str, model: M.Model) -> str:
    """The alert's explanation: what is unusual, in words, then how unusual overall."""
    why = explain({**row, "currency": currency}, model.features, model.center, model.spread)
    share = 100 * (1 - M.ALERT_SHARE_OF_TARGET * model.target_alert_rate)
    rarity = "far rarer than" if row["score"] >= model.urgent_threshold else "rarer than"
    return (f"Unusual {row['kind']} of {display(abs(row['amount']), currency)} at {row['source']}: {why}. "
            f"The model ranks it {rarity} {share:g}% of the transactions it learned from (score "
            f"{row['score']:.2f}, alerts from {model.threshold:.2f}); it matched cleanly, so no other break names it.")


def _details(url: str, ids: pa.ChunkedArray) -> dict[int, dict]:
    """ref, ids, currency, file and line of the few records that become alerts."""
    if len(ids) == 0:
        return {}
    id_list = ", ".join(str(int(i)) for i in ids.to_pylist())
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT r.id, r.ref, coalesce(r.txn_id, ''), coalesce(r.order_id, ''), r.currency, f.path, r.line "
                    f"FROM record r JOIN statement_file f ON f.id = r.file_id WHERE r.id IN ({id_list})")
        rows = cur.fetchall()
    return {rid: {"ref": ref, "txn_id": txn or None, "order_id": order or None, "currency": cur_, "file": path,
                  "line": line} for rid, ref, txn, order, cur_, path, line in rows}


def scores_of(url: str, record_ids: list[int]) -> dict[int, float]:
    """Stored scores by record id (for reports and tests)."""
    if not record_ids:
        return {}
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT record_id, score FROM anomaly_score WHERE record_id IN ({', '.join(map(str, record_ids))})")
        return dict(cur.fetchall())


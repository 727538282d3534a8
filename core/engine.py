"""Matching engine (first version): exact keys, vectorised in DuckDB, exclusive both ways.

Input: one source's records from both sides (internal books, channel statement) for a
window of days around the business day D; output: the typed differences anchored on D.

Passes, each consuming what it matched:
1. channel transaction id (`exact_txn_id`), then
2. merchant order id for what is left (`exact_order_id`).
A match never skips the comparison: amount and status are checked on every pair.
Refunds are compared per order (partial refunds add up).

An unmatched item is `in_transit`, not a break, while the other side has not yet
delivered statements through its business day + the source's settlement lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa

PAID = ("paid", "refunded", "partially_refunded")
NOT_PAID = ("unpaid", "closed")


@dataclass(frozen=True)
class Tolerance:
    absolute_minor: int = 0
    percent: Decimal = Decimal("0")

    def sql(self, amount: str) -> str:
        """The allowed absolute difference for `amount`, as a SQL expression."""
        return f"greatest({int(self.absolute_minor)}, floor(abs({amount}) * {self.percent} / 100))::BIGINT"


@dataclass(frozen=True)
class Window:
    day: date
    lag_days: int
    internal_through: date | None  # latest business day our books have been delivered for
    channel_through: date | None  # latest business day the channel's statements cover

    @property
    def first(self) -> date:
        return self.day - timedelta(days=self.lag_days)

    @property
    def last(self) -> date:
        return self.day + timedelta(days=self.lag_days)


_COLUMNS = "id, kind, ref, txn_id, order_id, amount, currency, status, CAST(business_day AS DATE) AS day, file, line"

_EMPTY = pa.schema([
    ("id", pa.int64()), ("kind", pa.string()), ("ref", pa.string()), ("txn_id", pa.string()),
    ("order_id", pa.string()), ("amount", pa.int64()), ("currency", pa.string()), ("status", pa.string()),
    ("business_day", pa.string()), ("file", pa.string()), ("line", pa.int64()),
])


def _lit_date(d: date | None) -> str:
    return f"DATE '{d.isoformat()}'" if d else "NULL"


def reconcile(internal: pa.Table, channel: pa.Table, window: Window, tolerance: Tolerance) -> tuple[list[dict], dict]:
    """-> (findings anchored on window.day, statistics for the day)."""
    con = duckdb.connect()
    con.register("i_in", internal if internal.num_rows else _EMPTY.empty_table())
    con.register("c_in", channel if channel.num_rows else _EMPTY.empty_table())
    d = _lit_date(window.day)
    lag = int(window.lag_days)
    # An item of day X is still in transit while the other side covers less than X + lag.
    internal_open = f"(coalesce({_lit_date(window.internal_through)}, DATE '0001-01-01') < {{day}} + {lag})"
    channel_open = f"(coalesce({_lit_date(window.channel_through)}, DATE '0001-01-01') < {{day}} + {lag})"
    tol = tolerance.sql
    con.execute(f"""
        CREATE TEMP TABLE i AS SELECT {_COLUMNS} FROM i_in;
        CREATE TEMP TABLE c AS SELECT {_COLUMNS} FROM c_in;
        CREATE TEMP TABLE ip AS SELECT * FROM i WHERE kind = 'payment';
        CREATE TEMP TABLE cp AS SELECT * FROM c WHERE kind = 'payment' AND status = 'success';

        -- pass 1: the channel's transaction id, exclusive both ways
        CREATE TEMP TABLE m1 AS
        SELECT iid, cid, 'exact_txn_id' AS rule FROM (
            SELECT ip.id AS iid, cp.id AS cid,
                   row_number() OVER (PARTITION BY ip.id ORDER BY cp.day, cp.line, cp.id) AS ri,
                   row_number() OVER (PARTITION BY cp.id ORDER BY ip.day, ip.line, ip.id) AS rc
            FROM ip JOIN cp ON ip.txn_id = cp.txn_id) WHERE ri = 1 AND rc = 1;

        -- pass 2: the merchant's order id, among what pass 1 left
        CREATE TEMP TABLE m2 AS
        SELECT iid, cid, 'exact_order_id' AS rule FROM (
            SELECT ip.id AS iid, cp.id AS cid,
                   row_number() OVER (PARTITION BY ip.id ORDER BY cp.day, cp.line, cp.id) AS ri,
                   row_number() OVER (PARTITION BY cp.id ORDER BY ip.day, ip.line, ip.id) AS rc
            FROM ip JOIN cp ON ip.order_id = cp.order_id
            WHERE ip.id NOT IN (SELECT iid FROM m1) AND cp.id NOT IN (SELECT cid FROM m1)) WHERE ri = 1 AND rc = 1;

        CREATE TEMP TABLE m AS SELECT * FROM m1 UNION ALL SELECT * FROM m2;
        CREATE TEMP TABLE pairs AS
        SELECT m.rule, ip.id AS iid, cp.id AS cid, ip.order_id, cp.txn_id, ip.amount AS ia, cp.amount AS ca,
               ip.currency, ip.status AS istatus, ip.day AS iday, cp.day AS cday,
               ip.file AS ifile, ip.line AS iline, cp.file AS cfile, cp.line AS cline
        FROM m JOIN ip ON ip.id = m.iid JOIN cp ON cp.id = m.cid;

        -- channel payments nobody claimed; a second payment of an order already paid is a duplicate charge
        CREATE TEMP TABLE c_left AS SELECT * FROM cp WHERE id NOT IN (SELECT cid FROM m);
        CREATE TEMP TABLE i_left AS SELECT * FROM ip WHERE id NOT IN (SELECT iid FROM m);

        -- refunds, per order: partial refunds add up on either side
        CREATE TEMP TABLE ir AS
        SELECT order_id, sum(amount) AS amount, any_value(currency) AS currency, min(day) AS day,
               list(struct_pack(side := 'internal', file := file, line := line) ORDER BY day, line) AS ev,
               any_value(txn_id) AS txn_id
        FROM i WHERE kind = 'refund' GROUP BY order_id;
        CREATE TEMP TABLE cr AS
        SELECT order_id, sum(amount) AS amount, any_value(currency) AS currency, min(day) AS day,
               list(struct_pack(side := 'channel', file := file, line := line) ORDER BY day, line) AS ev,
               any_value(txn_id) AS txn_id
        FROM c WHERE kind = 'refund' AND status = 'success' GROUP BY order_id;
    """)
    ev_pair = ("[struct_pack(side := 'internal', file := ifile, line := iline), "
               "struct_pack(side := 'channel', file := cfile, line := cline)]")
    findings_sql = f"""
        SELECT 'amount_mismatch' AS type, 'payment' AS kind, rule, order_id, txn_id, ia AS internal_amount,
               ca AS channel_amount, ca - ia AS difference, currency, 'open' AS status, {tol('ia')} AS tolerance,
               {ev_pair} AS evidence, 'internal' AS anchor_side, order_id AS anchor_ref
        FROM pairs WHERE iday = {d} AND abs(ca - ia) > {tol('ia')}
      UNION ALL
        SELECT 'status_mismatch', 'payment', rule, order_id, txn_id, ia, ca, ca, currency, 'open', {tol('ia')},
               {ev_pair}, 'internal', order_id
        FROM pairs WHERE iday = {d} AND istatus IN {NOT_PAID}
      UNION ALL
        SELECT 'duplicate_charge', 'payment', 'duplicate_order', c_left.order_id, c_left.txn_id, NULL, c_left.amount,
               c_left.amount, c_left.currency, 'open', {tol('c_left.amount')},
               [struct_pack(side := 'internal', file := p.ifile, line := p.iline),
                struct_pack(side := 'channel', file := p.cfile, line := p.cline),
                struct_pack(side := 'channel', file := c_left.file, line := c_left.line)],
               'channel', c_left.txn_id || '/' || coalesce(c_left.order_id, '')
        FROM c_left JOIN pairs p ON p.order_id = c_left.order_id
        WHERE c_left.day = {d}
      UNION ALL
        SELECT 'long', 'payment', 'unmatched', order_id, txn_id, NULL, amount, amount, currency,
               CASE WHEN {internal_open.format(day='day')} THEN 'in_transit' ELSE 'open' END, {tol('amount')},
               [struct_pack(side := 'channel', file := file, line := line)], 'channel',
               txn_id || '/' || coalesce(order_id, '')
        FROM c_left WHERE day = {d} AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.order_id = c_left.order_id)
      UNION ALL
        SELECT 'short', 'payment', 'unmatched', order_id, txn_id, amount, NULL, -amount, currency,
               CASE WHEN {channel_open.format(day='day')} THEN 'in_transit' ELSE 'open' END, {tol('amount')},
               [struct_pack(side := 'internal', file := file, line := line)], 'internal', order_id
        FROM i_left WHERE day = {d} AND status IN {PAID}
      UNION ALL
        SELECT CASE WHEN ir.order_id IS NULL OR cr.order_id IS NULL THEN 'status_mismatch' ELSE 'amount_mismatch' END,
               'refund', 'refund_by_order', coalesce(ir.order_id, cr.order_id), coalesce(cr.txn_id, ir.txn_id),
               ir.amount, cr.amount, coalesce(cr.amount, 0) - coalesce(ir.amount, 0),
               coalesce(ir.currency, cr.currency),
               CASE WHEN cr.order_id IS NULL AND {channel_open.format(day='ir.day')} THEN 'in_transit'
                    WHEN ir.order_id IS NULL AND {internal_open.format(day='cr.day')} THEN 'in_transit'
                    ELSE 'open' END,
               {tol('coalesce(ir.amount, cr.amount)')},
               list_concat(coalesce(ir.ev, []), coalesce(cr.ev, [])),
               CASE WHEN ir.order_id IS NULL THEN 'channel' ELSE 'internal' END, coalesce(ir.order_id, cr.order_id)
        FROM ir FULL OUTER JOIN cr ON ir.order_id = cr.order_id
        WHERE coalesce(ir.day, cr.day) = {d}
          AND (ir.order_id IS NULL OR cr.order_id IS NULL
               OR abs(coalesce(cr.amount, 0) - coalesce(ir.amount, 0)) > {tol('coalesce(ir.amount, cr.amount)')})
    """
    findings = con.sql(findings_sql).fetchall()
    names = ["type", "kind", "rule", "order_id", "txn_id", "internal_amount", "channel_amount", "difference",
             "currency", "status", "tolerance", "evidence", "anchor_side", "anchor_ref"]
    rows = [dict(zip(names, r)) for r in findings]
    stats = dict(zip(
        ["internal_payments", "internal_amount", "channel_payments", "channel_amount", "matched"],
        con.execute(f"""
            SELECT (SELECT count(*) FROM ip WHERE day = {d}), (SELECT coalesce(sum(amount), 0) FROM ip WHERE day = {d}),
                   (SELECT count(*) FROM cp WHERE day = {d}), (SELECT coalesce(sum(amount), 0) FROM cp WHERE day = {d}),
                   (SELECT count(*) FROM pairs WHERE iday = {d})
        """).fetchone(),
    ))
    stats = {k: int(v) for k, v in stats.items()}
    con.close()
    return rows, stats

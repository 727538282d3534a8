"""Baseline for `make bench`: a bare DuckDB query doing the exact-key join on the same files.

    python bench/baseline_duckdb.py orders.csv wechatpay_tradebill_ALL_2026-11-20.csv

One SQL statement: `read_csv` of both files as text, the minimal cleaning the WeChat bill
needs (its summary rows padded and dropped, the backtick before every field trimmed,
amounts to integer fen through DECIMAL, never a float), the bill's successful payments,
one FULL OUTER JOIN with our orders on the channel transaction id, and counts. Prints one
JSON line.

It is the floor for the join itself, not a reconciliation: no second key (order id), no
refunds, no duplicate or status logic, nothing stored. Its counts follow from planted.json
all the same (bench_day.py checks them):
    orders_unmatched   paid orders with no payment of that transaction id   = short
    bill_unmatched     payments with no order of that transaction id        = long + duplicate
                       charges + payments of orders our books say are unpaid (those carry no
                       transaction id in our books)
    amount_mismatched  joined pairs whose amounts differ                   = amount_mismatch
DuckDB uses every core, as reconbot's DuckDB does.
"""

from __future__ import annotations

import json
import sys

import duckdb

QUERY = """
WITH o AS (
    SELECT order_id, status, channel_txn_id AS txn, CAST(CAST(amount AS DECIMAL(18, 2)) * 100 AS BIGINT) AS amount
    FROM read_csv($orders, header = true, all_varchar = true)),
b AS (
    SELECT ltrim("微信订单号", '`') AS txn,
           CAST(CAST(ltrim("订单金额", '`') AS DECIMAL(18, 2)) * 100 AS BIGINT) AS amount
    -- the two summary rows at the end have 7 fields: padded with NULLs, then dropped
    FROM read_csv($bill, header = true, all_varchar = true, null_padding = true, quote = '"')
    WHERE "公众账号ID" IS NOT NULL AND "交易状态" = '`SUCCESS')
SELECT count(*) FILTER (WHERE b.txn IS NULL AND o.status IN ('paid', 'refunded', 'partially_refunded'))
           AS orders_unmatched,
       count(*) FILTER (WHERE o.order_id IS NULL) AS bill_unmatched,
       count(*) FILTER (WHERE o.amount <> b.amount) AS amount_mismatched,
       count(*) FILTER (WHERE o.txn IS NOT NULL AND b.txn IS NOT NULL) AS matched,
       count(o.order_id) AS orders_rows
FROM o FULL OUTER JOIN b ON o.txn = b.txn
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    con = duckdb.connect()
    rel = con.execute(QUERY, {"orders": argv[0], "bill": argv[1]})
    row = dict(zip([d[0] for d in rel.description], rel.fetchone()))
    print(json.dumps({"counts": {k: int(v) for k, v in row.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Baseline for `make bench`: the plain pandas script a merchant would write for the same day.

    python bench/baseline_pandas.py orders.csv wechatpay_tradebill_ALL_2026-11-20.csv

Reads the shop's orders CSV and the WeChat Pay v3 trade bill exactly as bench/gen_day.py
writes them (the bill: UTF-8 with a BOM, every field prefixed with a backtick so Excel keeps
long ids as text, two summary rows at the end), turns amounts into integer fen, matches by
the channel transaction id and then, for what is left, by the order id, and counts the
breaks reconbot reports for this data: short, long, amount_mismatch, status_mismatch,
duplicate_charge. Prints one JSON line: the counts and the rows read.

Written the way pandas is ordinarily used: `read_csv` with the columns it needs as text,
`.str` methods, `merge` (with `indicator` for what is left on each side), `groupby`; no hand
tuning, no Python loop per row. It is the baseline, not a second engine: one channel, exact
keys only (no groups, no fuzzy pass, no tolerances, no evidence file:line), which is all this
synthetic day needs. bench_day.py checks its counts against planted.json, so the comparison
is like for like.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

PAID = ["paid", "refunded", "partially_refunded"]
BILL_COLUMNS = {"交易时间": "time", "微信订单号": "txn", "商户订单号": "order_id", "交易状态": "state",
                "订单金额": "gross", "退款金额": "refunded"}


def fen(text: pd.Series) -> pd.Series:
    """'144.50' -> 14450, exactly (never through a float): both files write two decimals, so
    dropping the point gives fen; anything else is refused rather than misread."""
    if not (text.str.len() - text.str.find(".") == 3).all():
        raise ValueError(f"{text.name}: an amount without exactly two decimals")
    return text.str.replace(".", "", regex=False).astype("int64")


def read_orders(path: str) -> pd.DataFrame:
    orders = pd.read_csv(path, dtype=str, keep_default_na=False,
                         usecols=["order_id", "status", "amount", "refund_amount", "channel_txn_id"])
    orders["amount"] = fen(orders["amount"])
    orders["refund_amount"] = fen(orders["refund_amount"])
    return orders.rename(columns={"channel_txn_id": "txn"})


def read_bill(path: str) -> pd.DataFrame:
    bill = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", usecols=list(BILL_COLUMNS))
    bill = bill.rename(columns=BILL_COLUMNS)
    # the summary (总交易单数, ...) follows the last transaction: cut it off
    summary = bill.index[bill["time"] == "总交易单数"]
    if len(summary):
        bill = bill.iloc[:summary[0]]
    bill = bill.apply(lambda column: column.str.lstrip("`"))
    bill["gross"] = fen(bill["gross"])
    bill["refunded"] = fen(bill["refunded"])
    return bill


def reconcile(orders: pd.DataFrame, bill: pd.DataFrame) -> dict[str, int]:
    payments = bill.loc[bill["state"] == "SUCCESS", ["txn", "order_id", "gross"]]
    refunds = bill[bill["state"] == "REFUND"]

    # 1. exact key: the channel transaction id (merge with indicator: the usual pandas
    #    way to see both sides' leftovers; Series.isin on a million strings is much slower)
    first = orders.merge(payments, on="txn", how="outer", suffixes=("", "_bill"), indicator=True)
    by_txn = first[first["_merge"] == "both"]
    orders_left = first.loc[first["_merge"] == "left_only", orders.columns]
    payments_left = first.loc[first["_merge"] == "right_only", ["txn", "order_id_bill", "gross"]]
    payments_left = payments_left.rename(columns={"order_id_bill": "order_id"})
    # a further payment of an order already matched is a duplicate charge, not a candidate
    again = payments_left.merge(by_txn[["order_id"]], on="order_id", how="left", indicator=True)
    second_charge = again["_merge"] == "both"
    # 2. else the order id, for what the first join left
    second = orders_left.merge(again.loc[~second_charge, ["order_id", "gross"]], on="order_id", how="outer",
                               indicator=True)
    by_order = second[second["_merge"] == "both"]
    matched = pd.concat([by_txn[["status", "amount", "gross"]], by_order[["status", "amount", "gross"]]])
    short = (second["_merge"] == "left_only") & second["status"].isin(PAID)
    long = second["_merge"] == "right_only"

    # refunds, per order: on one side only is a status mismatch, on both but different an amount mismatch
    ours = orders.loc[orders["refund_amount"] > 0, ["order_id", "refund_amount"]]
    theirs = refunds.groupby("order_id", as_index=False)["refunded"].sum()
    both = ours.merge(theirs, on="order_id", how="outer", indicator=True)
    refund_one_side = (both["_merge"] != "both").sum()
    refund_differs = ((both["_merge"] == "both") & (both["refund_amount"] != both["refunded"])).sum()

    return {
        "short": int(short.sum()),
        "long": int(long.sum()),
        "amount_mismatch": int((matched["amount"] != matched["gross"]).sum() + refund_differs),
        "status_mismatch": int((~matched["status"].isin(PAID)).sum() + refund_one_side),
        "duplicate_charge": int(second_charge.sum()),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    orders, bill = read_orders(argv[0]), read_bill(argv[1])
    breaks = reconcile(orders, bill)
    print(json.dumps({"breaks": breaks, "rows": {"orders": len(orders), "bill": len(bill)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

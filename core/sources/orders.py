"""The merchant's own orders: a CSV or XLSX export from the shop system.

Canonical header (any order of columns; extra columns are ignored):
    order_id, channel, amount, currency, status, paid_at, refund_amount, channel_txn_id
optional: refunded_at, payer, memo.
A shop whose export names them differently maps its headers in config:
`columns = { "订单号" = "order_id", ... }`; `channel_names` maps the values of the channel
column to source names (`"微信支付" = "wechatpay"`).

`amount` and `refund_amount` are in major units (12.50); `paid_at` is ISO-8601, with an
offset or in the merchant's time zone. Each order becomes a payment record and, when
`refund_amount` is above zero, a refund record.
"""

from __future__ import annotations

import io

import pyarrow as pa

from core.config import MerchantConfig, SourceConfig
from core.sources import tabular as T
from core.sources.base import InputFile, ParseError, Parsed, decode_text, mode_day, sniff_text

CANONICAL = ["order_id", "channel", "amount", "currency", "status", "paid_at", "refund_amount", "channel_txn_id"]
OPTIONAL = ["refunded_at", "payer", "memo"]
REQUIRED = ["order_id", "channel", "amount", "status", "paid_at"]

# status words shops use -> ours
STATUS = {
    "paid": "paid", "success": "paid", "succeeded": "paid", "completed": "paid", "已支付": "paid", "支付成功": "paid",
    "refunded": "refunded", "已退款": "refunded", "全额退款": "refunded",
    "partially_refunded": "partially_refunded", "partial_refund": "partially_refunded", "部分退款": "partially_refunded",
    "unpaid": "unpaid", "pending": "unpaid", "未支付": "unpaid", "待支付": "unpaid",
    "closed": "closed", "cancelled": "closed", "canceled": "closed", "已关闭": "closed", "已取消": "closed",
}


class OrdersExport:
    format = "orders.export"
    side = "internal"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.mapping = {k.strip(): v for k, v in source.columns.items()}
        self.channel_names = {**{s.name: s.name for s in merchant.sources}, **source.channel_names}
        self.tz = merchant.timezone
        self.currency = merchant.currency

    def _canonical(self, header: list[str]) -> list[str]:
        return [self.mapping.get(h.strip().lstrip("\ufeff"), h.strip().lstrip("\ufeff")) for h in header]

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            if not any(n.startswith("xl/") for n in file.member_names):
                return False
            try:
                header = next(_xlsx_rows(file), [])
            except ParseError:
                return False
        else:
            first = file.head().split("\n", 1)[0].rstrip("\r")
            header = next(iter(_csv_rows(first)), [])
        return set(REQUIRED) <= set(self._canonical([str(h or "") for h in header]))

    def _table(self, file: InputFile) -> pa.Table:
        if file.is_zip:
            rows = list(_xlsx_rows(file))
            if not rows:
                raise ParseError(file.path, "workbook's first sheet is empty")
            header = self._canonical([str(h or "") for h in rows[0]])
            width = len(header)
            cols = [[_cell(r[i]) if i < len(r) else "" for r in rows[1:]] for i in range(width)]
            table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], names=header)
            return table.append_column("line", pa.array(range(2, len(rows) + 1), pa.int64()))
        text = decode_text(file.path, file.raw, ("utf-8-sig", "gb18030"))
        first, _, body = text.partition("\n")
        header = self._canonical(next(iter(_csv_rows(first.rstrip("\r")))))
        return T.read_rows(file.path, body, 2, header)

    def parse(self, file: InputFile) -> Parsed:
        return self.normalise(self._table(file), file.path)

    def normalise(self, raw: pa.Table, path) -> Parsed:
        """Text columns named canonically (+ `line`) -> records; shared with the SQL source."""
        missing = [c for c in REQUIRED if c not in raw.column_names]
        if missing:
            raise ParseError(path, f"header lacks {', '.join(missing)} (map your headers with `columns` in config)", line=1)
        for col in CANONICAL + OPTIONAL:
            if col not in raw.column_names:
                raw = raw.append_column(col, pa.array([""] * raw.num_rows, pa.string()))
        con = T.connect()
        con.register("raw", raw)
        T.required(con, path, REQUIRED)
        cur = f"upper(coalesce(clean_text(currency), '{self.currency}'))"
        # An explicit offset (+08:00, Z) wins; a bare local time is in the merchant's zone.
        paid_at = ("CASE WHEN regexp_matches(clean_text(paid_at), '(Z|[+-]\\d\\d:?\\d\\d)$') "
                   "THEN TRY_CAST(clean_text(paid_at) AS TIMESTAMPTZ) ELSE timezone('{tz}', local_ts(paid_at)) END")
        refunded_at = paid_at.replace("paid_at", "refunded_at")
        ts_check = lambda c: T.Check(c, paid_at.replace("paid_at", c).format(tz=self.tz),  # noqa: E731
                                     "not a date-time (ISO-8601, e.g. 2026-11-20 14:03:00 or with +08:00)")
        T.first_bad_value(con, path, [
            T.money_check("amount", cur), T.money_check("refund_amount", cur),
            ts_check("paid_at"), ts_check("refunded_at"),
            T.Check("currency", "regexp_full_match(clean_text(currency), '[A-Za-z]{3}') OR NULL", "not an ISO currency code"),
        ])
        self._check_values(con, path, "status", STATUS, "lower(clean_text(status))")
        self._check_values(con, path, "channel", self.channel_names, "clean_text(channel)")
        con.register("status_map", pa.table({"k": list(STATUS), "v": list(STATUS.values())}))
        con.register("channel_map", pa.table({"k": list(self.channel_names), "v": list(self.channel_names.values())}))
        local = lambda ts: f"CAST(timezone('{self.tz}', {ts.format(tz=self.tz)}) AS DATE)"  # noqa: E731
        refund_when = f"coalesce({refunded_at}, {paid_at})"
        records = con.sql(f"""
            WITH o AS (
                SELECT raw.*, s.v AS norm_status, c.v AS norm_channel
                FROM raw JOIN status_map s ON s.k = lower(clean_text(raw.status))
                         JOIN channel_map c ON c.k = clean_text(raw.channel)
            )
            SELECT line, norm_channel AS source, 'payment' AS kind, clean_text(order_id) AS ref,
                   clean_text(channel_txn_id) AS txn_id, clean_text(order_id) AS order_id,
                   {T.minor_sql('amount', cur)} AS amount, {cur} AS currency,
                   CAST(0 AS BIGINT) AS fee, CAST(0 AS BIGINT) AS discount, norm_status AS status,
                   timezone('UTC', {paid_at.format(tz=self.tz)}) AS occurred_at,
                   {local(paid_at)} AS business_day,
                   clean_text(payer) AS payer, clean_text(memo) AS memo
            FROM o
            UNION ALL
            SELECT line, norm_channel, 'refund', clean_text(order_id), clean_text(channel_txn_id), clean_text(order_id),
                   -{T.minor_sql('refund_amount', cur)}, {cur}, 0, 0, norm_status,
                   timezone('UTC', {refund_when.format(tz=self.tz)}), {local(refund_when)},
                   clean_text(payer), clean_text(memo)
            FROM o WHERE coalesce({T.minor_sql('refund_amount', cur)}, 0) > 0
            ORDER BY line, kind
        """).to_arrow_table()
        dupes = con.execute("SELECT clean_text(order_id), min(line), max(line) FROM raw GROUP BY 1 "
                            "HAVING count(*) > 1 ORDER BY 2 LIMIT 1").fetchone()
        if dupes:
            raise ParseError(path, f"order appears twice (also on line {dupes[1]})", line=dupes[2],
                             field="order_id", value=dupes[0])
        totals = con.execute(f"SELECT count(*), {cur} AS c, sum({T.minor_sql('amount', cur)}), "
                             f"coalesce(sum({T.minor_sql('refund_amount', cur)}), 0) FROM raw GROUP BY c ORDER BY c").fetchall()
        control = {"orders": sum(t[0] for t in totals),
                   "amount_minor": {t[1]: int(t[2]) for t in totals},
                   "refund_minor": {t[1]: int(t[3]) for t in totals}}
        return Parsed(self.format, self.side, records, mode_day(records.filter(_is_payment(records))), control)

    def _check_values(self, con, path, column, allowed: dict, expr: str) -> None:
        con.register("allowed", pa.table({"k": list(allowed)}))
        bad = con.execute(f"SELECT line, {column} FROM raw WHERE {expr} NOT IN (SELECT k FROM allowed) "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            known = ", ".join(sorted(set(allowed)))
            raise ParseError(path, f"unknown {column} (known: {known})", line=bad[0], field=column, value=bad[1])


def _is_payment(records: pa.Table):
    import pyarrow.compute as pc

    return pc.equal(records["kind"], "payment")


def _csv_rows(text: str):
    import csv

    return csv.reader(io.StringIO(text))


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _xlsx_rows(file: InputFile):
    """Rows of the first sheet, read with openpyxl (values, not formulas)."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(io.BytesIO(file.raw), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise ParseError(file.path, f"not a readable XLSX workbook ({exc.__class__.__name__}: {exc})") from None
    try:
        yield from wb.worksheets[0].iter_rows(values_only=True)
    finally:
        wb.close()

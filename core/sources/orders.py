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
        raw = file.raw
        start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        try:  # UTF-8, the common case: Arrow reads (and validates) the bytes as they are
            first = raw[start:end].decode("utf-8")
            header = self._canonical(next(iter(_csv_rows(first.rstrip("\r")))))
            return T.read_rows(file.path, memoryview(raw)[end + 1:], 2, header)
        except (UnicodeDecodeError, ParseError):
            pass  # GB18030 (Excel on a Chinese Windows), or a real error the slow path names
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
        con.register("status_map", pa.table({"k": list(STATUS), "v": list(STATUS.values())}))
        con.register("channel_map", pa.table({"k": list(self.channel_names), "v": list(self.channel_names.values())}))
        currency = T.constant_if_single(con, f"upper(coalesce(clean_text(currency), '{self.currency}'))")
        cols = [T.Col("oid", "order_id", required=True), T.Col("chan", "channel", required=True),
                T.Col("st", "status", required=True), T.Col("paid_s", "paid_at", required=True),
                T.Col("amt", "amount", "money", required=True), T.Col("refund", "refund_amount", "money"),
                T.Col("refunded_s", "refunded_at"), T.Col("txn", "channel_txn_id"), T.Col("payer", "payer"),
                T.Col("memo", "memo"), T.Col("cur_s", "currency")]
        # An explicit offset (+08:00, Z) wins; a bare local time is in the merchant's zone.
        at = ("CASE WHEN regexp_matches({s}, '(Z|[+-]\\d\\d:?\\d\\d)$') THEN TRY_CAST({s} AS TIMESTAMPTZ) "
              f"ELSE timezone('{self.tz}', TRY_STRPTIME({{s}}, {T.TIME_FORMATS})) END")
        # One projection types every column once; the checks below read its flags.
        con.execute(f"""
            CREATE TEMP TABLE o AS
            SELECT t.line, t._cur, t._bad, t.oid, t.chan, t.st, t.paid_s, t.amt, t.refund, t.refunded_s, t.txn,
                   t.payer, t.memo, t.cur_s,  -- not the conversion's helper columns: o is materialised
                   {at.format(s="paid_s")} AS paid, {at.format(s="refunded_s")} AS refunded,
                   s.v AS norm_status, c.v AS norm_channel
            FROM {T.typed_select(cols, currency_sql=currency)} t
            LEFT JOIN status_map s ON s.k = lower(t.st) LEFT JOIN channel_map c ON c.k = t.chan
        """)
        self._first_problem(con, path, cols, currency)
        local = lambda ts: f"CAST(timezone('{self.tz}', {ts}) AS DATE)"  # noqa: E731
        records = con.sql(f"""
            SELECT line, norm_channel AS source, 'payment' AS kind, oid AS ref, txn AS txn_id, oid AS order_id,
                   amt AS amount, _cur AS currency, CAST(0 AS BIGINT) AS fee, CAST(0 AS BIGINT) AS discount,
                   norm_status AS status, timezone('UTC', paid) AS occurred_at, {local('paid')} AS business_day,
                   payer, memo
            FROM o
            UNION ALL
            SELECT line, norm_channel, 'refund', oid, txn, oid, -refund, _cur, 0, 0, norm_status,
                   timezone('UTC', coalesce(refunded, paid)), {local('coalesce(refunded, paid)')}, payer, memo
            FROM o WHERE coalesce(refund, 0) > 0
        """).to_arrow_table()
        dupes = con.execute("SELECT oid, min(line), max(line) FROM o GROUP BY 1 "
                            "HAVING count(*) > 1 ORDER BY 2 LIMIT 1").fetchall()
        if dupes:
            dupes = dupes[0]
            raise ParseError(path, f"order appears twice (also on line {dupes[1]})", line=dupes[2],
                             field="order_id", value=dupes[0])
        totals = con.execute("SELECT count(*), _cur, sum(amt), coalesce(sum(refund), 0) FROM o "
                             "GROUP BY _cur ORDER BY _cur").fetchall()
        control = {"orders": sum(t[0] for t in totals),
                   "amount_minor": {t[1]: int(t[2]) for t in totals},
                   "refund_minor": {t[1]: int(t[3]) for t in totals}}
        return Parsed(self.format, self.side, records, mode_day(records.filter(_is_payment(records))), control)

    def _first_problem(self, con, path, cols, currency) -> None:
        """Name the first row that is wrong, and how; nothing when every row is right."""
        problems = [
            ("paid_at", "paid_s IS NOT NULL AND paid IS NULL", "not a date-time (ISO-8601, e.g. 2026-11-20 14:03:00 or with +08:00)"),
            ("refunded_at", "refunded_s IS NOT NULL AND refunded IS NULL", "not a date-time (ISO-8601, e.g. 2026-11-20 14:03:00 or with +08:00)"),
            ("currency", "cur_s IS NOT NULL AND NOT regexp_full_match(cur_s, '[A-Za-z]{3}')", "not an ISO currency code"),
            ("status", "st IS NOT NULL AND norm_status IS NULL", f"unknown status (known: {', '.join(sorted(STATUS))})"),
            ("channel", "chan IS NOT NULL AND norm_channel IS NULL",
             f"unknown channel (known: {', '.join(sorted(set(self.channel_names)))})"),
        ]
        any_bad = " OR ".join(["_bad"] + [f"({cond})" for _f, cond, _r in problems])
        line = con.execute(f"SELECT min(line) FROM o WHERE {any_bad}").fetchall()[0][0]
        if line is None:
            return
        flagged = con.sql(f"SELECT line, _bad FROM o WHERE line = {int(line)}").to_arrow_table()
        if flagged["_bad"][0].as_py():
            T.check_bad(con, path, flagged, cols, currency_sql=currency)
        for field, cond, reason in problems:
            hit = con.execute(f'SELECT CAST(raw."{field}" AS VARCHAR) FROM o JOIN raw USING (line) '
                              f"WHERE line = ? AND {cond}", [line]).fetchall()
            if hit:
                hit = hit[0]
                raise ParseError(path, reason, line=line, field=field, value=hit[0])


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

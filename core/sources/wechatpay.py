"""WeChat Pay trade bill (交易账单), as `downloadbill` (v2) and `/v3/bill/tradebill` (v3) write it.

Layout: optional UTF-8 BOM; a header row of Chinese column names; one row per payment or
refund, every field prefixed with a backtick; then a summary header (总交易单数, ...) and
one summary row, which we check against the rows. Plain or gzip (v3 `tar_type=GZIP`).
The column set varies by era and bill type (ALL / SUCCESS / REFUND; the pre-2018 legacy
set with 总金额), so columns are found by name, never by position.

Times are Beijing time (the bill's day runs 00:00-24:00 China Standard Time).

A payment's identity (`ref`) is 微信订单号 + 商户订单号: WeChat's own SDK fixture repeats a
微信订单号 across different orders, and we must not fold two real rows into one.
"""

from __future__ import annotations

from decimal import Decimal

from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, first_line, mode_day

HEADER_START = "交易时间,公众账号ID,商户号"
SUMMARY_START = "总交易单数"

# Summary column -> (row column it totals, alternatives in older layouts)
SUMMARY_TOTALS = {
    "应结订单总金额": "应结订单金额",
    "总交易额": "总金额",  # legacy
    "退款总金额": "退款金额",
    "总退款金额": "退款金额",  # legacy
    "充值券退款总金额": "充值券退款金额",
    "总代金券或立减优惠退款金额": "代金券或立减优惠退款金额",  # legacy
    "手续费总金额": "手续费",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
}

# 交易状态 / 退款状态 -> our status words
STATUS = {"SUCCESS": "success", "REFUND": "success", "REVOKED": "revoked", "PROCESSING": "pending",
          "CHANGE": "failed", "REFUNDCLOSE": "closed", "ABNORMAL": "failed"}


def _first(columns: list[str], *names: str) -> str | None:
    return next((n for n in names if n in columns), None)


class WeChatPayTradeBill(ChannelSource):
    format = "wechatpay.trade_bill"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        line = first_line(file)
        return line.startswith(HEADER_START) and "微信订单号" in line

    # -- layout -------------------------------------------------------------------------

    def _split(self, file: InputFile) -> tuple[list[str], int, str, list[str], list[str], int]:
        """-> header, first data line no., body text, summary names, summary values, summary line no."""
        text = decode_text(file.path, file.raw, ("utf-8-sig",))
        lines = text.split("\n")
        i = 0
        while i < len(lines) and (lines[i].startswith("# ") or not lines[i].strip()):
            i += 1
        header = [h.strip() for h in lines[i].rstrip("\r").split(",")]
        header_line = i + 1
        end = next((j for j in range(i + 1, len(lines)) if lines[j].lstrip("`").startswith(SUMMARY_START)), None)
        if end is None:
            raise ParseError(file.path, f"no summary row ({SUMMARY_START}, ...) after the transactions: "
                                        "the bill is truncated")
        if end + 1 >= len(lines) or not lines[end + 1].strip():
            raise ParseError(file.path, "summary header has no values row", line=end + 1)
        trailing = [k for k in range(end + 2, len(lines)) if lines[k].strip()]
        if trailing:
            raise ParseError(file.path, "unexpected content after the summary row", line=trailing[0] + 1)
        names = [n.strip() for n in lines[end].rstrip("\r").split(",")]
        values = [v.strip().lstrip("`") for v in lines[end + 1].rstrip("\r").split(",")]
        if len(names) != len(values):
            raise ParseError(file.path, f"summary has {len(names)} names but {len(values)} values", line=end + 2)
        body = "\n".join(lines[i + 1:end])
        return header, header_line + 1, body, names, values, end + 2

    # -- parse --------------------------------------------------------------------------

    def parse(self, file: InputFile) -> Parsed:
        header, first_line, body, sum_names, sum_values, sum_line = self._split(file)
        raw = T.read_rows(file.path, body, first_line, header)
        for needed in ("交易时间", "微信订单号", "商户订单号", "交易状态", "货币种类", "手续费"):
            if needed not in header:
                raise ParseError(file.path, f"header lacks column {needed}", line=first_line - 1)

        cols = header
        gross = _first(cols, "订单金额", "总金额", "应结订单金额")
        settle = _first(cols, "应结订单金额", "总金额")
        coupon = _first(cols, "代金券金额", "代金券或立减优惠金额")
        refund = _first(cols, "申请退款金额", "退款金额")
        refund_coupon = _first(cols, "充值券退款金额", "代金券或立减优惠退款金额")
        refund_time = _first(cols, "退款成功时间")
        attach = _first(cols, "商户数据包")
        cur = 'coalesce(clean_text("货币种类"), \'CNY\')'

        con = T.connect()
        con.register("raw", raw)
        T.required(con, file.path, ["交易时间", "微信订单号", "交易状态"])
        money_cols = [c for c in {gross, settle, coupon, refund, refund_coupon, "退款金额"} if c and c in cols]
        checks = [T.time_check("交易时间")] + [T.money_check(c, cur) for c in sorted(money_cols)]
        checks.append(T.fee_check("手续费"))
        if refund_time:
            checks.append(T.time_check(refund_time))
        T.first_bad_value(con, file.path, checks)
        bad_status = con.execute(
            "SELECT line, clean_text(\"交易状态\") FROM raw WHERE clean_text(\"交易状态\") NOT IN "
            "('SUCCESS', 'REFUND', 'REVOKED') ORDER BY line LIMIT 1").fetchone()
        if bad_status:
            raise ParseError(file.path, "unknown 交易状态 (expected SUCCESS, REFUND or REVOKED)",
                             line=bad_status[0], field="交易状态", value=bad_status[1])

        m = lambda c: T.minor_sql(f'"{c}"', cur) if c else "0"  # noqa: E731
        is_refund = "clean_text(\"交易状态\") = 'REFUND'"
        refund_id = f'clean_text("{_first(cols, "微信退款单号")}")' if "微信退款单号" in cols else "NULL"
        when = f"coalesce(local_ts(\"{refund_time}\"), local_ts(\"交易时间\"))" if refund_time else 'local_ts("交易时间")'
        refund_status = f"coalesce(clean_text(\"{_first(cols, '退款状态')}\"), 'SUCCESS')" if "退款状态" in cols else "'SUCCESS'"
        memo = (f"concat_ws(' | ', clean_text(\"商品名称\"), clean_text(\"{attach}\"))" if attach
                else "clean_text(\"商品名称\")") if "商品名称" in cols else "NULL"
        payer = 'clean_text("用户标识")' if "用户标识" in cols else "NULL"
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source,
                   CASE WHEN {is_refund} THEN 'refund' ELSE 'payment' END AS kind,
                   CASE WHEN {is_refund} THEN coalesce({refund_id}, clean_text("微信订单号") || ':refund:' || line)
                        ELSE clean_text("微信订单号") || '/' || coalesce(clean_text("商户订单号"), '') END AS ref,
                   clean_text("微信订单号") AS txn_id,
                   clean_text("商户订单号") AS order_id,
                   CASE WHEN {is_refund} THEN -{m(refund)} ELSE {m(gross)} END AS amount,
                   {cur} AS currency,
                   {T.fee_minor_sql('"手续费"', cur)} AS fee,
                   CASE WHEN {is_refund} THEN -{m(refund_coupon)} ELSE {m(coupon)} END AS discount,
                   CASE WHEN {is_refund} THEN {refund_status} ELSE clean_text("交易状态") END AS status,
                   {T.utc_sql(when, self.tz)} AS occurred_at,
                   CAST({when} AS DATE) AS business_day,
                   {payer} AS payer,
                   {memo} AS memo
            FROM raw ORDER BY line
        """).to_arrow_table()
        records = T.map_values(records, "status", STATUS)
        totals = self._check_totals(con, file, sum_names, sum_values, sum_line, cols, raw.num_rows)
        return Parsed(self.format, self.side, records, mode_day(records), totals)

    def _check_totals(self, con, file, names, values, line, cols, row_count) -> dict:
        totals: dict[str, str] = {}
        for name, value in zip(names, values):
            try:
                stated = Decimal(value)
            except ArithmeticError:
                raise ParseError(file.path, "summary value is not a number", line=line, field=name, value=value) from None
            totals[name] = value
            if name == SUMMARY_START:
                if stated != row_count:
                    raise ControlTotalError(file.path, f"the summary says {stated.normalize():f} rows but the bill has "
                                            f"{row_count}", line=line, field=name, value=value)
                continue
            column = SUMMARY_TOTALS.get(name)
            if column is None or column not in cols:
                continue
            actual = con.execute(f'SELECT coalesce(sum(to_dec("{column}")), 0) FROM raw').fetchone()[0]
            if Decimal(actual) != stated:
                shown = Decimal(actual).quantize(Decimal(1).scaleb(min(stated.as_tuple().exponent, 0)))
                raise ControlTotalError(file.path, f"the rows' {column} add up to {shown}",
                                        line=line, field=name, value=value)
        return totals

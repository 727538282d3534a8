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

import pyarrow as pa
import pyarrow.compute as pc

from core.sources import convert as C
from core.sources import tabular as T
from core.sources.base import (RECORD_FIELDS, ChannelSource, ControlTotalError, DayCounts, InputFile, ParseError, Parsed,
                               Statement, collect, first_line, summary_number)

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


def _money_name(column: str) -> str:
    """A SQL-safe name for an amount column in the typed table."""
    return "m_" + column.encode("utf-8").hex()


def _decode_line(file: InputFile, line: bytes, line_no: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(file.path, f"not valid utf-8-sig text (byte {exc.start} of the line)", line=line_no) from None


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

    def _split(self, file: InputFile) -> tuple[list[str], int, tuple[int, int], list[str], list[str]]:
        """-> header, first data line no., the body's (start, end) in file.raw, summary
        names, summary values. (The summary's own line number follows from the body's line
        count, which `line_pieces` takes as it goes.)

        Works on bytes: a day's bill can be hundreds of megabytes, and only the header and
        summary lines need decoding here (Arrow validates the body's UTF-8 as it reads).
        """
        raw = file.raw
        pos = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        line_no = 1
        while True:  # skip "# " comment lines and blank lines above the header
            nl = raw.find(b"\n", pos)
            line = raw[pos:nl if nl >= 0 else len(raw)]
            if line.strip() and not line.startswith(b"# "):
                break
            if nl < 0:
                raise ParseError(file.path, "no header row")
            pos, line_no = nl + 1, line_no + 1
        header = [h.strip() for h in _decode_line(file, line, line_no).rstrip("\r").split(",")]
        body_start = nl + 1
        summary = raw.rfind(b"\n" + SUMMARY_START.encode(), body_start - 1)
        if summary < 0:
            raise ParseError(file.path, f"no summary row ({SUMMARY_START}, ...) after the transactions: "
                                        "the bill is truncated")
        # the newline at `summary` ends the last data row (or the header, when there is none)
        def summary_line() -> int:  # counted only for an error here: a pass over the whole body
            return line_no + 1 if summary < body_start else line_no + 2 + raw.count(b"\n", body_start, summary)

        tail = raw[summary + 1:].split(b"\n")
        if len(tail) < 2 or not tail[1].strip():
            raise ParseError(file.path, "summary header has no values row", line=summary_line())
        trailing = [k for k, t in enumerate(tail[2:]) if t.strip()]
        if trailing:
            raise ParseError(file.path, "unexpected content after the summary row", line=summary_line() + 2 + trailing[0])
        try:
            names = [n.strip() for n in tail[0].decode("utf-8").rstrip("\r").split(",")]
            values = [v.strip().lstrip("`") for v in tail[1].decode("utf-8").rstrip("\r").split(",")]
        except UnicodeDecodeError:
            _decode_line(file, tail[0], summary_line())
            _decode_line(file, tail[1], summary_line() + 1)
            raise
        if len(names) != len(values):
            raise ParseError(file.path, f"summary has {len(names)} names but {len(values)} values", line=summary_line() + 1)
        return header, line_no + 1, (body_start, summary + 1), names, values

    # -- parse --------------------------------------------------------------------------

    def parse(self, file: InputFile) -> Parsed:
        return collect(self.format, self.side, self.parse_pieces(file, None))

    def parse_pieces(self, file: InputFile, piece_bytes: int | None, ramp: bool = True):
        """Records piece by piece (`core.sources.base.pieces`), then the `Statement`; the
        summary row is checked against the sums of every piece once the last is read."""
        header, first_line, (start, end), sum_names, sum_values = self._split(file)
        for needed in ("交易时间", "微信订单号", "商户订单号", "交易状态", "货币种类", "手续费"):
            if needed not in header:
                raise ParseError(file.path, f"header lacks column {needed}", line=first_line - 1)
        cols = header
        gross = _first(cols, "订单金额", "总金额", "应结订单金额")
        coupon = _first(cols, "代金券金额", "代金券或立减优惠金额")
        refund = _first(cols, "申请退款金额", "退款金额")
        refund_coupon = _first(cols, "充值券退款金额", "代金券或立减优惠退款金额")
        refund_time = _first(cols, "退款成功时间")
        typed = [C.Col("paid_at", "交易时间", "time", required=True), C.Col("txn", "微信订单号", required=True),
                 C.Col("ord", "商户订单号"), C.Col("state", "交易状态", required=True), C.Col("fee", "手续费", "fee")]
        typed += [C.Col(name, col, "text") for name, col in (
            ("refund_id", "微信退款单号"), ("refund_state", "退款状态"), ("payer", "用户标识"), ("goods", "商品名称"),
            ("attach", "商户数据包")) if col in cols]
        if refund_time:
            typed.append(C.Col("refunded_at", refund_time, "time"))
        # every amount the summary totals, typed exactly (the records use four of them)
        totalled = {col for col in SUMMARY_TOTALS.values() if col in cols and col != "手续费"}
        totalled |= {c for c in (gross, coupon, refund, refund_coupon) if c}
        typed += [C.Col(_money_name(col), col, "money") for col in sorted(totalled)]
        typed.append(C.Col("fee_exact", "手续费", "dec"))
        summed = [c.name for c in typed if c.kind == "money"] + ["fee_exact"]
        sums, rows, body_lines, days = dict.fromkeys(summed, 0), 0, 0, DayCounts()
        for piece in T.line_pieces(file.raw, start, end, first_line, piece_bytes, ramp):
            raw = T.read_rows(file.path, piece.data, piece.first_line, header, physical_lines=piece.lines,
                              only=[c.source for c in typed] + ["货币种类"])
            body_lines += piece.lines
            t = self._typed(file, raw, typed)
            for name in summed:
                sums[name] += pc.sum(t[name]).as_py() or 0
            rows += t.num_rows
            records = self._records(t, cols, gross, coupon, refund, refund_coupon)
            days.add(records)
            yield records
        # the summary's values row: below the body's lines and the summary's header line
        sum_line = first_line + body_lines + 1
        totals = self._check_totals(rows, sums, file, sum_names, sum_values, sum_line, cols)
        yield Statement(days.mode(), totals, rows)

    @staticmethod
    def _typed(file: InputFile, raw: pa.Table, typed: list) -> pa.Table:
        currency = pc.fill_null(C.clean_text(raw["货币种类"], "backtick"), "CNY")
        t = C.check_bad(file.path, C.typed_table(raw, typed, currency=currency, cleaner="backtick"), raw, typed,
                        cleaner="backtick")
        unknown = pc.invert(pc.is_in(t["state"], value_set=pa.array(["SUCCESS", "REFUND", "REVOKED"])))
        if pc.any(unknown).as_py():
            first = pc.index(unknown, True).as_py()
            raise ParseError(file.path, "unknown 交易状态 (expected SUCCESS, REFUND or REVOKED)",
                             line=t["line"][first].as_py(), field="交易状态", value=t["state"][first].as_py())
        return t

    def _records(self, t: pa.Table, cols, gross, coupon, refund, refund_coupon) -> pa.Table:
        is_refund = pc.equal(t["state"], "REFUND")
        n = t.num_rows
        zero = pa.scalar(0, pa.int64())
        money = lambda col: t[_money_name(col)] if col else zero  # noqa: E731
        either = lambda refund_value, payment_value: pc.if_else(is_refund, refund_value, payment_value)  # noqa: E731
        text = lambda name: t[name] if name in t.column_names else pa.nulls(n, pa.string())  # noqa: E731
        line_text = pc.cast(t["line"], pa.string())
        refund_ref = pc.coalesce(text("refund_id"), pc.binary_join_element_wise(t["txn"], line_text, ":refund:"))
        when = pc.coalesce(t["refunded_at"], t["paid_at"]) if "refunded_at" in t.column_names else t["paid_at"]
        memo = C.join_text(t["goods"], t["attach"], " | ") if "商户数据包" in cols else text("goods")
        records = pa.table({
            "line": t["line"],
            "source": pa.nulls(n, pa.string()),
            "kind": either(pa.scalar("refund"), pa.scalar("payment")),
            "ref": either(refund_ref, pc.binary_join_element_wise(t["txn"], pc.fill_null(t["ord"], ""), "/")),
            "txn_id": t["txn"],
            "order_id": t["ord"],
            "amount": either(pc.negate(money(refund)), money(gross)),
            "currency": t["_cur"],
            "fee": t["fee"],
            "discount": either(pc.negate(money(refund_coupon)), money(coupon)),
            "status": either(pc.fill_null(text("refund_state"), "SUCCESS"), t["state"]),
            "occurred_at": C.to_utc(when, self.tz),
            "business_day": pc.cast(when, pa.date32()),
            "payer": text("payer"),
            "memo": memo,
        }, schema=RECORD_FIELDS)
        return T.map_values(records, "status", STATUS)

    def _check_totals(self, rows: int, sums: dict, file, names, values, line, cols) -> dict:
        """The summary row against the rows: `sums` holds each typed amount column's total."""
        totals: dict[str, str] = {}
        for name, value in zip(names, values):
            stated = summary_number(file.path, name, value, line)
            totals[name] = value
            if name == SUMMARY_START:
                if stated != rows:
                    raise ControlTotalError(file.path, f"the summary says {stated.normalize():f} rows but the bill has "
                                            f"{rows}", line=line, field=name, value=value)
                continue
            column = SUMMARY_TOTALS.get(name)
            if column is None or column not in cols:
                continue
            if column == "手续费":
                actual = Decimal(sums["fee_exact"])
            else:  # amounts are summed exactly in minor units (fen)
                actual = Decimal(sums[_money_name(column)]).scaleb(-2)
            if actual != stated:
                shown = actual.quantize(Decimal(1).scaleb(min(stated.as_tuple().exponent, 0)))
                raise ControlTotalError(file.path, f"the rows' {column} add up to {shown}",
                                        line=line, field=name, value=value)
        return totals

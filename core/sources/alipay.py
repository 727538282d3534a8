"""Alipay merchant trade bill (业务明细, `bill_type=trade`), as the bill-download URL serves it.

What arrives is a zip holding GBK CSVs with GBK-encoded member names,
`<account>_<yyyymmdd>_业务明细.csv` and `..._业务明细(汇总).csv`. The detail file has `#`
banner lines (account, 起始日期/终止日期), a header, one row per trade or refund (refunds
as negative rows, ids suffixed with a TAB), and `#` footer lines whose 交易合计 / 退款合计
totals we check. An unzipped detail CSV (GBK or UTF-8) is accepted too.

Times are Beijing time.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day, sniff_text

BANNER = "#支付宝业务明细查询"
PERIOD = re.compile(r"起始日期[：:]\s*\[(\d{4})年(\d{2})月(\d{2})日")  # also the account statement's banner
TOTAL = re.compile(r"#(交易|退款)合计：(-?\d+)笔，商家实收(?:退款)?共(-?[\d.,]+)元，商家优惠(?:退款)?共(-?[\d.,]+)元")

COL_SETTLE = "商家实收（元）"
COL_AMOUNT = "订单金额（元）"
COL_MERCHANT_DISCOUNT = "商家优惠（元）"
COL_FEE = "服务费（元）"


class AlipayTradeBill(ChannelSource):
    format = "alipay.trade_bill"

    def _detail(self, file: InputFile) -> tuple[str, bytes] | None:
        if not file.is_zip:
            return (str(file.path), file.raw) if sniff_text(file.raw[:64]).startswith(BANNER) else None
        for name, data in file.members.items():
            if "汇总" not in name and sniff_text(data[:64]).startswith(BANNER):
                return f"{file.path}!{name}", data
        return None

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            try:
                return self._detail(file) is not None
            except ParseError:
                # A damaged zip that names an Alipay bill is still ours: parse() reports it.
                return any("业务明细" in n for n in file.member_names)
        return self._detail(file) is not None

    def parse(self, file: InputFile) -> Parsed:
        found = self._detail(file)
        if found is None:
            raise ParseError(file.path, "zip holds no Alipay 业务明细 file")
        path, data = found
        text = decode_text(path, data, ("utf-8-sig", "gb18030"))
        lines = text.split("\n")
        header_idx = next((i for i, l in enumerate(lines) if l.strip() and not l.startswith("#")), None)
        if header_idx is None:
            raise ParseError(path, "no header row after the # banner")
        end = next((i for i in range(header_idx + 1, len(lines)) if lines[i].startswith("#")), None)
        if end is None:
            raise ParseError(path, "no # footer after the rows: the bill is truncated")
        header = [h.strip() for h in lines[header_idx].rstrip("\r").split(",")]
        for needed in ("支付宝交易号", "商户订单号", "业务类型", "完成时间", COL_AMOUNT, COL_SETTLE):
            if needed not in header:
                raise ParseError(path, f"header lacks column {needed}", line=header_idx + 1)
        body = "\n".join(l for l in lines[header_idx + 1:end])
        raw = T.read_rows(path, body, header_idx + 2, header)

        con = T.connect()
        con.register("raw", raw)
        cur = "'CNY'"  # the trade bill is in yuan (元) by definition
        T.required(con, path, ["支付宝交易号", "业务类型", "完成时间", COL_AMOUNT])
        money = [c for c in (COL_AMOUNT, COL_SETTLE, COL_MERCHANT_DISCOUNT) if c in header]
        checks = [T.time_check("完成时间")] + [T.money_check(c, cur) for c in money]
        if COL_FEE in header:
            checks.append(T.fee_check(COL_FEE))
        T.first_bad_value(con, path, checks)
        bad = con.execute("SELECT line, clean_text(\"业务类型\") FROM raw WHERE clean_text(\"业务类型\") "
                          "NOT IN ('交易', '退款') ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(path, "unknown 业务类型 (expected 交易 or 退款)", line=bad[0], field="业务类型", value=bad[1])

        is_refund = "clean_text(\"业务类型\") = '退款'"
        refund_ref = '"退款批次号/请求号"' if "退款批次号/请求号" in header else "NULL"
        discount = T.minor_sql(f'"{COL_MERCHANT_DISCOUNT}"', cur) if COL_MERCHANT_DISCOUNT in header else "0"
        # 服务费 is printed with either sign depending on the bill's era; charged fees are
        # positive in our records and fees returned on a refund negative.
        fee = f"abs(coalesce({T.fee_minor_sql(chr(34) + COL_FEE + chr(34), cur)}, 0))" if COL_FEE in header else "0"
        memo = ("concat_ws(' | ', clean_text(\"商品名称\"), nullif(clean_text(\"备注\"), clean_text(\"商品名称\")))"
                if "备注" in header else "clean_text(\"商品名称\")")
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source,
                   CASE WHEN {is_refund} THEN 'refund' ELSE 'payment' END AS kind,
                   CASE WHEN {is_refund}
                        THEN coalesce(clean_text({refund_ref}), clean_text("支付宝交易号") || ':refund:' || clean_text("完成时间"))
                        ELSE clean_text("支付宝交易号") END AS ref,
                   clean_text("支付宝交易号") AS txn_id,
                   clean_text("商户订单号") AS order_id,
                   {T.minor_sql(f'"{COL_AMOUNT}"', cur)} AS amount,
                   {cur} AS currency,
                   CASE WHEN {is_refund} THEN -{fee} ELSE {fee} END AS fee,
                   coalesce({discount}, 0) AS discount,
                   'success' AS status,
                   {T.utc_sql('local_ts("完成时间")', self.tz)} AS occurred_at,
                   CAST(local_ts("完成时间") AS DATE) AS business_day,
                   {'clean_text("对方账户")' if "对方账户" in header else "NULL"} AS payer,
                   {memo} AS memo
            FROM raw ORDER BY line
        """).to_arrow_table()
        totals = self._check_totals(con, path, lines, end, header)
        day = _period_start(lines[:header_idx]) or mode_day(records)
        member = path.split("!", 1)[1] if "!" in path else None
        return Parsed(self.format, self.side, records, day, totals, member)

    def _check_totals(self, con, path, lines, end, header) -> dict:
        totals = {}
        for offset, line in enumerate(lines[end:], start=end + 1):
            m = TOTAL.match(line.strip())
            if not m:
                continue
            kind, count, settle, discount = m.groups()
            totals[kind] = {"count": int(count), "settle": settle, "merchant_discount": discount}
            disc = f'to_dec("{COL_MERCHANT_DISCOUNT}")' if COL_MERCHANT_DISCOUNT in header else "0"
            n, s, d = con.execute(
                f"SELECT count(*), coalesce(sum(to_dec(\"{COL_SETTLE}\")), 0), coalesce(sum({disc}), 0) "
                f"FROM raw WHERE clean_text(\"业务类型\") = ?", [kind]).fetchone()
            checks = [("笔数", int(count), n), ("商家实收", Decimal(settle.replace(",", "")), Decimal(s)),
                      ("商家优惠", Decimal(discount.replace(",", "")), Decimal(d))]
            for what, stated, actual in checks:
                if stated != actual:
                    raise ControlTotalError(
                        path, f"footer #{kind}合计 says {what} {stated} but the {kind} rows add up to {actual}", line=offset)
        if set(totals) != {"交易", "退款"}:
            missing = {"交易", "退款"} - set(totals)
            raise ParseError(path, f"footer lacks the #{'/#'.join(sorted(missing))}合计 line: the bill is truncated")
        return totals


def _period_start(banner: list[str]) -> date | None:
    for line in banner:
        m = PERIOD.search(line)
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return None


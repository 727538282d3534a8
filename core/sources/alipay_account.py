"""Alipay account statement (账务明细, `bill_type=signcustomer`): every movement of the merchant's balance.

No real file of this kind was available to us (the samples hold only the trade bill), so
the layout is built from Alipay's published description and the public copies of it we
found in other projects' code, and the tests use statements we wrote ourselves
(tests/data/alipay/). Column names vary by era, so we find columns by name and accept the
common variants; please send a real file if yours is refused.

Layout: GBK (UTF-8 accepted), CRLF; `#` banner lines
    #支付宝账务明细查询 / #账号：[2088...] / #起始日期：[2026年11月20日 00:00:00]   终止日期：[...] / #-----账务明细列表-----
a header, e.g. the classic one
    账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注
(newer files add 业务描述, 业务账单来源, 业务基础订单号, 业务订单号, and some write the
parentheses half-width or drop them: 收入金额(+元), 收入金额), one row per movement (ids
suffixed with a TAB), and `#` footer lines: `#-----账务明细列表结束-----`,
`#支出合计：N笔，共X元`, `#收入合计：N笔，共Y元`, `#导出时间：[...]` (sometimes with trailing commas).
It comes as a zip `<account>_<yyyymmdd>.csv.zip` holding `..._账务明细.csv` and
`..._账务明细(汇总).csv`; only the detail is read. A zip that also holds a trade bill
(业务明细) belongs to the trade-bill source (`alipay`), which reads only that: this source
stays out of it so that exactly one source claims the file.

Records: one per row. amount = 收入金额 - |支出金额| (支出 is printed positive or negative by
era). kind from 业务类型 (else 业务描述): 退款 -> refund; 收费 / 服务费 / 手续费 -> fee (a fee is a
row of its own: `fee` stays 0 on every row); 提现 -> payout; 在线支付 / 交易付款 / 交易收款 /
交易 / 收款 -> payment; anything else (转账, 充值, 分账, ...) -> adjustment, 业务类型 kept in memo.
ref = 账务流水号, txn_id = 业务流水号 (the 支付宝交易号 for trades), order_id = 商户订单号,
payer = 对方账号. Times are Beijing time; the file's business day is its 起始日期.

Control totals: the footer's 收入合计 (rows with 收入金额 > 0: count and sum) and 支出合计
(rows with a non-zero 支出金额: count and sum of |支出|, compared with |stated|); a mismatch
or a missing footer rejects the file. 账户余额 is NOT checked row to row: Alipay's own API
documentation for the same ledger says the balance is for reference only and not guaranteed
continuous ("余额变动并不保证连续 ... 但是会保证最终一致").
"""

from __future__ import annotations

import re
from decimal import Decimal

from core.sources import tabular as T
from core.sources.alipay import _period_start  # the same banner as the trade bill
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day, sniff_text

BANNER = "#支付宝账务明细查询"
TRADE_BANNER = "#支付宝业务明细查询"  # the trade bill: the `alipay` source's
ACCOUNT = re.compile(r"账号[：:]\s*\[([^\]]*)\]")
TOTAL = re.compile(r"#(收入|支出)合计[：:]\s*(\d+)\s*笔[，,]\s*共\s*(-?[\d,]*\.?\d+)\s*元")
REQUIRED = ["账务流水号", "发生时间", "收入金额", "支出金额"]
PAYMENT_TYPES = ("在线支付", "交易付款", "交易收款", "交易", "收款", "在线收款")


def _column(name: str) -> str:
    """收入金额（+元） / 收入金额(+元) / 收入金额 -> 收入金额."""
    return re.sub(r"[（(].*$", "", name.strip().strip("\t\ufeff")).strip()


def _is_detail(name: str, data: bytes) -> bool:
    """Our banner, then (within the first lines) a header naming 账务流水号; not the (汇总) member."""
    head = sniff_text(data[:2048])
    return "汇总" not in name and head.startswith(BANNER) and "账务流水号" in head


def _is_trade_bill(name: str, data: bytes) -> bool:
    """What the `alipay` trade-bill source claims (kept in step with AlipayTradeBill._detail)."""
    return "汇总" not in name and sniff_text(data[:64]).startswith(TRADE_BANNER)


class AlipayAccountStatement(ChannelSource):
    format = "alipay.account_statement"

    def _detail(self, file: InputFile) -> tuple[str, bytes] | None:
        if not file.is_zip:
            return (str(file.path), file.raw) if _is_detail("", file.raw) else None
        members = file.members
        if any(_is_trade_bill(n, d) for n, d in members.items()):
            return None
        found = [(n, d) for n, d in members.items() if _is_detail(n, d)]
        if len(found) > 1:
            raise ParseError(file.path, f"zip holds {len(found)} 账务明细 files, expected one")
        return (f"{file.path}!{found[0][0]}", found[0][1]) if found else None

    def identify(self, file: InputFile) -> bool:
        try:
            return self._detail(file) is not None
        except ParseError:
            # A damaged zip that names an account statement (and no trade bill) is still ours.
            names = file.member_names
            return any("账务明细" in n for n in names) and not any("业务明细" in n for n in names)

    def parse(self, file: InputFile) -> Parsed:
        found = self._detail(file)
        if found is None:
            raise ParseError(file.path, "holds no Alipay 账务明细 statement")
        path, data = found
        lines = decode_text(path, data, ("utf-8-sig", "gb18030")).split("\n")
        header_idx = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#")), None)
        if header_idx is None:
            raise ParseError(path, "no header row after the # banner")
        end = next((i for i in range(header_idx + 1, len(lines)) if lines[i].startswith("#")), None)
        if end is None:
            raise ParseError(path, "no # footer after the rows: the statement is truncated")
        header = [_column(h) for h in lines[header_idx].rstrip("\r").split(",")]
        for needed in REQUIRED:
            if needed not in header:
                raise ParseError(path, f"header lacks column {needed}", line=header_idx + 1)
        if len(set(header)) != len(header):
            raise ParseError(path, "header names a column twice", line=header_idx + 1)
        raw = T.read_rows(path, "\n".join(lines[header_idx + 1:end]), header_idx + 2, header)

        con = T.connect()
        con.register("raw", raw)
        cur = "'CNY'"
        col = lambda c: f'clean_text("{c}")' if c in header else "NULL"  # noqa: E731
        T.required(con, path, ["账务流水号", "发生时间"])
        checks = [T.time_check("发生时间"), T.money_check("收入金额", cur), T.money_check("支出金额", cur)]
        if "账户余额" in header:
            checks.append(T.money_check("账户余额", cur))
        T.first_bad_value(con, path, checks)
        neg = con.execute('SELECT line, "收入金额" FROM raw WHERE to_dec("收入金额") < 0 ORDER BY line LIMIT 1').fetchone()
        if neg:
            raise ParseError(path, "negative income: money out belongs in 支出金额", line=neg[0], field="收入金额",
                             value=neg[1].strip())

        income = f"coalesce({T.minor_sql(chr(34) + '收入金额' + chr(34), cur)}, 0)"
        expense = f"abs(coalesce({T.minor_sql(chr(34) + '支出金额' + chr(34), cur)}, 0))"
        biz = f"coalesce({col('业务类型')}, {col('业务描述')}, '')"
        kind = (f"CASE WHEN {biz} LIKE '%退款%' THEN 'refund' "
                f"WHEN {biz} = '收费' OR {biz} LIKE '%服务费%' OR {biz} LIKE '%手续费%' THEN 'fee' "
                f"WHEN {biz} LIKE '%提现%' THEN 'payout' "
                f"WHEN {biz} IN ({', '.join(repr(t) for t in PAYMENT_TYPES)}) THEN 'payment' ELSE 'adjustment' END")
        # 业务类型 first; 商品名称 / 业务描述 only where they add to it
        memo_parts = [col("业务类型")] + [f"nullif({col(c)}, {col('业务类型')})" for c in ("商品名称", "备注", "业务描述")
                                         if c in header]
        when = 'local_ts("发生时间")'
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, {kind} AS kind, clean_text("账务流水号") AS ref,
                   {col('业务流水号')} AS txn_id, {col('商户订单号')} AS order_id,
                   {income} - {expense} AS amount, {cur} AS currency,
                   CAST(0 AS BIGINT) AS fee, CAST(0 AS BIGINT) AS discount, 'success' AS status,
                   {T.utc_sql(when, self.tz)} AS occurred_at, CAST({when} AS DATE) AS business_day,
                   {col('对方账号')} AS payer,
                   nullif(concat_ws(' | ', {', '.join(memo_parts) or 'NULL'}), '') AS memo
            FROM raw ORDER BY line
        """).to_arrow_table()
        con.register("rec", records)
        dupe = con.execute("SELECT ref, min(line), max(line) FROM rec GROUP BY ref HAVING count(*) > 1 "
                           "ORDER BY 3 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(path, f"the same movement appears twice (also on line {dupe[1]})", line=dupe[2],
                             field="账务流水号", value=dupe[0])

        totals = self._check_footer(con, path, lines, end, income, expense)
        banner = lines[:header_idx]
        account = next((m.group(1) for ln in banner if (m := ACCOUNT.search(ln))), None)
        if account is not None:
            totals["账号"] = account
        day = _period_start(banner) or mode_day(records)
        member = path.split("!", 1)[1] if "!" in path else None
        return Parsed(self.format, self.side, records, day, totals, member)

    def _check_footer(self, con, path, lines, end, income, expense) -> dict:
        n_in, s_in, n_out, s_out = con.execute(
            f"SELECT count(*) FILTER (WHERE {income} > 0), coalesce(sum({income}), 0), "
            f"count(*) FILTER (WHERE {expense} > 0), coalesce(sum({expense}), 0) FROM raw").fetchone()
        actual = {"收入": (n_in, s_in), "支出": (n_out, s_out)}
        totals: dict = {}
        for no, line in enumerate(lines[end:], start=end + 1):
            m = TOTAL.match(line.strip())
            if not m:
                continue
            side, count, amount = m.groups()
            totals[f"{side}合计"] = {"count": int(count), "amount": amount}
            n, fen = actual[side]
            stated = abs(Decimal(amount.replace(",", "")))
            got = Decimal(fen).scaleb(-2)
            if int(count) != n:
                raise ControlTotalError(path, f"footer #{side}合计 says {count} rows but the statement has {n} "
                                              f"rows with {side}", line=no, field=f"{side}合计", value=line.strip().rstrip(","))
            if stated != got:
                raise ControlTotalError(path, f"footer #{side}合计 says {stated:.2f} but the {side} rows add up to {got:.2f}",
                                        line=no, field=f"{side}合计", value=line.strip().rstrip(","))
        missing = [f"#{s}合计" for s in actual if f"{s}合计" not in totals]
        if missing:
            raise ParseError(path, f"footer lacks the {' and '.join(missing)} line: the statement is truncated")
        return totals


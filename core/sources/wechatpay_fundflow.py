"""WeChat Pay fund-flow bill (资金账单), as `downloadfundflow` (v2) and `/v3/bill/fundflowbill` (v3) write it.

One bill per account type (BASIC 基本账户, OPERATION 运营账户, FEES 手续费账户) and day.
Layout: optional UTF-8 BOM; a header row
    记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),
    资金变更提交申请人,备注,业务凭证号
(half-width parentheses in the real files; full-width ones are accepted too); one row per
booking, every field prefixed with a backtick; then a summary header
    资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额
and one values row (counts sometimes rendered as `20.0`). Plain or gzip (v3 `tar_type=GZIP`).

Records:
- kind from 业务类型: 交易 -> payment, 退款 -> refund, anything naming 手续费 -> fee,
  提现 / 结算 -> payout, anything else (充值, 企业付款, 分账, 冻结, ...) -> adjustment.
- amount is signed by 收支类型 (收入 +, 支出 -): a fee row is a negative amount of its own,
  so `fee` stays 0 on every row (the fee is not also charged on the payment it belongs to).
- ref = 资金流水单号/微信支付业务单号. 资金流水单号 alone is not enough: in the real v3 sample
  a refund's 资金流水单号 is the original payment's 微信订单号 (4200...20210119..., booked on
  2021-02-01), so two partial refunds of one payment would share it; the 微信退款单号 in
  微信支付业务单号 tells them apart. A bill holding the same (kind, ref) twice is rejected
  rather than folded into one record.
- txn_id = 微信支付业务单号 (the payment's 微信订单号 or the refund's 微信退款单号),
  order_id = 业务凭证号 (the merchant's order / refund number).

Control totals, all checked, any mismatch rejects the file (`ControlTotalError`):
- the summary's row count, 收入笔数 / 收入金额, 支出笔数 / 支出金额;
- the running balance: 账户结余 is the account balance after each booking, and WeChat
  writes the bookings in 记账时间 order, so every balance must equal the previous one plus
  the bookings since (rows with an empty 账户结余 are carried through). A break means a row
  is missing, altered or out of order. The real sample (gunsluo) is continuous. Should real
  bills turn out not to be (Alipay says its own account balances are "仅供参考", not
  guaranteed continuous), this is the one check to relax.

Times are Beijing time.
"""

from __future__ import annotations

from decimal import Decimal

from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, first_line, mode_day, summary_number

HEADER_START = "记账时间,微信支付业务单号,资金流水单号"
SUMMARY_START = "资金流水总笔数"
AMOUNT = "收支金额(元)"
BALANCE = "账户结余(元)"
REQUIRED = ["记账时间", "资金流水单号", "业务类型", "收支类型", AMOUNT]
OPTIONAL = ["微信支付业务单号", "业务名称", BALANCE, "资金变更提交申请人", "备注", "业务凭证号"]

# 业务类型 -> kind, first match wins (SQL LIKE patterns).
KINDS = [
    ("%手续费%", "fee"),
    ("%退款%", "refund"),
    ("%提现%", "payout"),
    ("%结算%", "payout"),
    ("交易", "payment"),
]


def _name(cell: str) -> str:
    return cell.strip().lstrip("`").replace("（", "(").replace("）", ")").strip()


class WeChatPayFundFlowBill(ChannelSource):
    format = "wechatpay.fundflow_bill"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        return ",".join(_name(c) for c in first_line(file).split(",")[:3]) == HEADER_START

    def _split(self, file: InputFile):
        """-> header, first data line no., body, summary names, summary values, summary line no."""
        text = decode_text(file.path, file.raw, ("utf-8-sig", "gb18030"))
        lines = text.split("\n")
        i = 0
        while i < len(lines) and (lines[i].startswith("# ") or not lines[i].strip()):
            i += 1
        header = [_name(h) for h in lines[i].rstrip("\r").split(",")]
        end = next((j for j in range(i + 1, len(lines)) if _name(lines[j]).startswith(SUMMARY_START)), None)
        if end is None:
            raise ParseError(file.path, f"no summary row ({SUMMARY_START}, ...) after the bookings: the bill is truncated")
        if end + 1 >= len(lines) or not lines[end + 1].strip():
            raise ParseError(file.path, "summary header has no values row", line=end + 1)
        trailing = [k for k in range(end + 2, len(lines)) if lines[k].strip()]
        if trailing:
            raise ParseError(file.path, "unexpected content after the summary row", line=trailing[0] + 1)
        names = [_name(n) for n in lines[end].rstrip("\r").split(",")]
        values = [_name(v) for v in lines[end + 1].rstrip("\r").split(",")]
        if len(names) != len(values):
            raise ParseError(file.path, f"summary has {len(names)} names but {len(values)} values", line=end + 2)
        return header, i + 2, "\n".join(lines[i + 1:end]), names, values, end + 2

    def parse(self, file: InputFile) -> Parsed:
        header, first_line, body, sum_names, sum_values, sum_line = self._split(file)
        for needed in REQUIRED:
            if needed not in header:
                raise ParseError(file.path, f"header lacks column {needed}", line=first_line - 1)
        if len(set(header)) != len(header):
            raise ParseError(file.path, "header names a column twice", line=first_line - 1)
        raw = T.read_rows(file.path, body, first_line, header)
        con = T.connect()
        con.register("raw", raw)
        col = lambda c: f'clean_text("{c}")' if c in header else "NULL"  # noqa: E731
        cur = "'CNY'"
        T.required(con, file.path, REQUIRED)
        checks = [T.time_check("记账时间"), T.money_check(AMOUNT, cur)]
        if BALANCE in header:
            checks.append(T.money_check(BALANCE, cur))
        T.first_bad_value(con, file.path, checks)
        bad = con.execute(f"SELECT line, {col('收支类型')} FROM raw WHERE {col('收支类型')} NOT IN ('收入', '支出') "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "unknown 收支类型 (expected 收入 or 支出)", line=bad[0], field="收支类型", value=bad[1])
        neg = con.execute(f'SELECT line, "{AMOUNT}" FROM raw WHERE to_dec("{AMOUNT}") < 0 ORDER BY line LIMIT 1').fetchone()
        if neg:
            raise ParseError(file.path, "negative amount: the direction is given by 收支类型", line=neg[0],
                             field=AMOUNT, value=neg[1].strip("`"))

        signed = f"(CASE WHEN {col('收支类型')} = '收入' THEN 1 ELSE -1 END * {T.minor_sql(chr(34) + AMOUNT + chr(34), cur)})"
        kind = "CASE " + " ".join(f"WHEN {col('业务类型')} LIKE '{p}' THEN '{k}'" for p, k in KINDS) + " ELSE 'adjustment' END"
        when = 'local_ts("记账时间")'
        con.execute(f"CREATE TEMP TABLE rec AS SELECT line, {kind} AS kind, {signed} AS amount, "
                    f"{T.minor_sql(chr(34) + BALANCE + chr(34), cur) if BALANCE in header else 'NULL'} AS balance, "
                    f"{col('资金流水单号')} || '/' || coalesce({col('微信支付业务单号')}, '') AS ref FROM raw")
        records = con.sql(f"""
            SELECT raw.line, CAST(NULL AS VARCHAR) AS source, rec.kind, rec.ref,
                   {col('微信支付业务单号')} AS txn_id, {col('业务凭证号')} AS order_id,
                   rec.amount, {cur} AS currency, CAST(0 AS BIGINT) AS fee, CAST(0 AS BIGINT) AS discount,
                   'success' AS status,
                   {T.utc_sql(when, self.tz)} AS occurred_at, CAST({when} AS DATE) AS business_day,
                   CAST(NULL AS VARCHAR) AS payer,
                   nullif(concat_ws(' | ', {col('业务名称')}, {col('备注')}), '') AS memo
            FROM raw JOIN rec USING (line) ORDER BY raw.line
        """).to_arrow_table()
        dupe = con.execute("SELECT ref, min(line), max(line) FROM rec GROUP BY kind, ref HAVING count(*) > 1 "
                           "ORDER BY 3 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"the same booking appears twice (also on line {dupe[1]})", line=dupe[2],
                             field="资金流水单号/微信支付业务单号", value=dupe[0])
        totals = self._check_summary(con, file, sum_names, sum_values, sum_line, raw.num_rows)
        self._check_balance(con, file)
        return Parsed(self.format, self.side, records, mode_day(records), totals)

    def _check_summary(self, con, file, names, values, line, row_count) -> dict:
        income, n_in, expense, n_out = con.execute(f"""
            SELECT coalesce(sum(to_dec("{AMOUNT}")) FILTER (WHERE clean_text("收支类型") = '收入'), 0),
                   count(*) FILTER (WHERE clean_text("收支类型") = '收入'),
                   coalesce(sum(to_dec("{AMOUNT}")) FILTER (WHERE clean_text("收支类型") = '支出'), 0),
                   count(*) FILTER (WHERE clean_text("收支类型") = '支出')
            FROM raw""").fetchone()
        rows = lambda n, what="": f"the bill has {n} {what}booking{'' if n == 1 else 's'}"  # noqa: E731
        actual = {SUMMARY_START: (row_count, rows(row_count)), "收入笔数": (n_in, rows(n_in, "收入 ")),
                  "收入金额": (income, "the 收入 rows add up to {}"), "支出笔数": (n_out, rows(n_out, "支出 ")),
                  "支出金额": (expense, "the 支出 rows add up to {}")}
        totals: dict[str, str] = {}
        for name, value in zip(names, values):
            stated = summary_number(file.path, name, value, line)
            totals[name] = value
            if name not in actual:
                continue
            got, says = actual[name]
            if stated != Decimal(got):
                money = "金额" in name
                shown = f"{Decimal(got).quantize(Decimal('0.01')):f}" if money else str(got)
                said = value if money else f"{stated.normalize():f}"
                raise ControlTotalError(file.path, f"the summary says {said} but " + says.format(shown),
                                        line=line, field=name, value=value)
        missing = [n for n in actual if n not in totals]
        if missing:
            raise ParseError(file.path, f"summary lacks {', '.join(missing)}", line=line - 1)
        return totals

    def _check_balance(self, con, file) -> None:
        """Every 账户结余 = the previous one + the bookings since (vectorised: balance - running sum is constant)."""
        row = con.execute("""
            WITH r AS (SELECT line, amount, balance, sum(amount) OVER (ORDER BY line) AS run FROM rec),
                 b AS (SELECT line, balance, run, balance - run AS opening,
                              lag(balance) OVER (ORDER BY line) AS prev_balance, lag(run) OVER (ORDER BY line) AS prev_run
                       FROM r WHERE balance IS NOT NULL),
                 first AS (SELECT opening FROM b ORDER BY line LIMIT 1)
            SELECT b.line, b.balance, b.prev_balance + (b.run - b.prev_run) AS expected
            FROM b, first WHERE b.opening <> first.opening ORDER BY b.line LIMIT 1
        """).fetchone()
        if row:
            line, balance, expected = row
            raise ControlTotalError(
                file.path, f"the previous 账户结余 and the bookings since come to {Decimal(expected).scaleb(-2):f}: "
                           "a booking is missing, altered or out of order", line=line, field=BALANCE,
                value=f"{Decimal(balance).scaleb(-2):f}")

"""UnionPay online (全渠道 ACP) reconciliation files, as the fileTransfer API (txnType=76) serves them.

What arrives is a zip `<商户代码>_<yyyyMMdd>.zip` holding
- `INN<yyMMdd><nn>ZM_<商户代码>`: the flow file (全渠道商户一般交易明细, "ZM"), one fixed-width
  record of 607 bytes per transaction, CRLF, ASCII/GBK, 42 fields separated by one space
  (widths as in UnionPay's own SDK demo `parseZMFile`, 《全渠道平台接入接口规范 第3部分 文件接口》 6.1);
- `RD<...>_<商户代码>`: the GBK summary report (中国银联全渠道商户交易汇总表), text, not CSV;
- possibly `INN...ZME_<商户代码>`: error / adjustment records (差错), another layout.
The zip as a whole is one statement (the ZM records, checked against the RD totals); a loose
ZM file is a statement too (no totals to check). A loose RD file is not a statement.

Records, one per ZM record:
- kind from 交易类型 (txnType): 01 消费, 03 预授权完成 -> payment; 04 退货, 31 消费撤销,
  33 预授权完成撤销 -> refund; any other value rejects the file (naming line and value).
- amount = 交易金额 (fen, unsigned, 12 digits), negative for refunds; fee = 商户手续费, whose
  `D` prefix means charged to the merchant (fee positive) and `C` returned (fee negative);
  discount = 优惠金额 (unverified: zero in the only sample).
- ref = 查询流水号 (queryId, UnionPay's id of this transaction); txn_id = the same for a payment,
  the original's 原交易查询流水号 for a refund (so it points at the payment, like the other
  channels' refunds); order_id = 商户订单号 (a refund carries its own order id in ACP);
  payer = 账号 (masked card number); memo = 交易代码 and 交易类型, plus 商户自定义域.
  交易代码 (S56 in the sample) is only carried in memo: its code list is not known to us.
- 交易传输时间 is MMDDhhmmss, Beijing time, without a year. The year is the one that puts
  the date within half a year of the file's settlement date (清算日期, from the member / file
  name INN<yyMMdd>, cross-checked with the RD report's 清算日期): a December transaction in a
  January file belongs to the year before, a January one in a December file to the next.
  A loose ZM file whose name no longer carries INN<yyMMdd> is rejected: it has no year.
- The file's business day is its settlement date.

Control totals (RD report, when the zip has one), in the 交易类型 table's 总计 line and the
卡性质 table's 总计 line, each checked against the ZM records:
    交易笔数 = number of records; 交易金额 贷 - 借 = sum of signed amounts;
    费用 借 - 贷 = sum of fees; 资金清算差额 贷 - 借 = sum of signed 结算金额;
plus 清算日期 = the flow file's settlement date, 清算币种 = 人民币, 商户代码 = the records'.
The sample holds purchases only (all 贷 in 交易金额, all 借 in 费用); that refunds sit on the
other side is inferred, which is why only the net of each pair is compared.
Not checked: the per-type lines above 总计 (自助消费, 借记卡, ...: the mapping from records to
those labels is not documented to us), 清算净额 (equals 结算金额 in the sample; with sub-merchant
splits it may not, and which of the two the report totals is unverified: we total 结算金额),
and the ZME file: a zip holding a non-empty one is rejected rather than half-read.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text

# The ZM record: (field, width), separated by single spaces (UnionPay SDK demo, parseZMFile).
FIELDS = [
    ("交易代码", 3), ("代理机构标识码", 11), ("发送机构标识码", 11), ("系统跟踪号", 6), ("交易传输时间", 10),
    ("账号", 19), ("交易金额", 12), ("商户类别", 4), ("终端类型", 2), ("查询流水号", 21), ("支付方式(旧)", 2),
    ("商户订单号", 32), ("支付卡类型", 2), ("原始交易的系统跟踪号", 6), ("原始交易日期时间", 10), ("商户手续费", 13),
    ("结算金额", 13), ("支付方式", 4), ("集团商户代码", 15), ("交易类型", 2), ("交易子类", 2), ("业务类型", 6),
    ("账号类型", 2), ("账单类型", 4), ("账单号码", 32), ("交互方式", 1), ("原交易查询流水号", 21), ("商户代码", 15),
    ("分账入账方式", 1), ("二级商户代码", 15), ("二级商户简称", 32), ("二级商户分账入账金额", 13), ("清算净额", 13),
    ("终端号", 8), ("商户自定义域", 32), ("优惠金额", 13), ("发票金额", 13), ("分期付款附加手续费", 12),
    ("分期付款期数", 2), ("交易介质", 1), ("保留使用", 32), ("保留使用2", 98),
]
WIDTH = sum(w for _, w in FIELDS) + len(FIELDS) - 1  # 607


def _starts() -> dict[str, tuple[int, int]]:
    """field -> (1-based start, width)"""
    out, at = {}, 1
    for name, width in FIELDS:
        out[name] = (at, width)
        at += width + 1
    return out


_START = _starts()

# The fields we read (the others are cut only to check the record's shape).
USED = ("交易代码", "交易传输时间", "账号", "交易金额", "查询流水号", "商户订单号", "商户手续费", "结算金额", "交易类型",
        "原交易查询流水号", "商户代码", "清算净额", "商户自定义域", "优惠金额")

# 交易类型 (txnType) -> (kind, label)
TXN_TYPES = {"01": ("payment", "消费"), "03": ("payment", "预授权完成"), "04": ("refund", "退货"),
             "31": ("refund", "消费撤销"), "33": ("refund", "预授权完成撤销")}

# The head of a record, enough to tell a ZM file from anything else.
RECORD_HEAD = re.compile(r"[0-9A-Z]{3} [0-9 ]{11} [0-9 ]{11} \d{6} \d{10} .{19} \d{12} ")
SETTLE_NAME = re.compile(r"INN(\d{2})(\d{2})(\d{2})\d{2}ZM_(\w*)")
REPORT_TITLE = "中国银联全渠道商户交易汇总表"
REPORT_FIELD = re.compile(r"(商户代码|清算币种|清算日期|收单机构|生成日期)[:：]\s*(\S+)")
_AMT = r"\s+(-?[\d,]+\.\d{2})"
REPORT_TOTAL = re.compile(r"总计\s+(\d+)" + _AMT * 6 + r"\s*$")
REPORT_TABLES = ("交易类型", "卡性质")
HALF_YEAR = 183


def _looks_like_flow(data: bytes) -> bool:
    first = data[:WIDTH + 2].split(b"\n", 1)[0].rstrip(b"\r")
    return len(first) == WIDTH and RECORD_HEAD.match(first.decode("latin-1")) is not None


def _signed(col: str) -> str:
    """A 13-character D/C amount in fen -> signed for the merchant (C = credit +, D = debit -); NULL if malformed."""
    c = f'"{col}"'
    return (f"(CASE WHEN regexp_full_match({c}, '[CD]\\d{{12}}') "
            f"THEN CASE left({c}, 1) WHEN 'D' THEN -1 ELSE 1 END * CAST(substr({c}, 2) AS BIGINT) "
            f"WHEN regexp_full_match({c}, ' 0{{12}}| {{13}}') THEN 0 END)")


class UnionPayAcpFlow(ChannelSource):
    format = "unionpay.acp_flow"

    # -- identify -----------------------------------------------------------------------

    def identify(self, file: InputFile) -> bool:
        if not file.is_zip:
            return _looks_like_flow(file.raw)
        try:
            return any(_looks_like_flow(data) for data in file.members.values())
        except ParseError:
            # A damaged or oversized zip that names a ZM file is still ours: parse() says why.
            return any(SETTLE_NAME.search(n) for n in file.member_names)

    # -- parse --------------------------------------------------------------------------

    def parse(self, file: InputFile) -> Parsed:
        report = None
        if file.is_zip:
            flows = [(n, d) for n, d in file.members.items() if _looks_like_flow(d)]
            if len(flows) != 1:
                raise ParseError(file.path, f"zip holds {len(flows)} ZM flow files, expected one")
            name, data = flows[0]
            path = f"{file.path}!{name}"
            for other, odata in file.members.items():
                if "ZME" in other and odata.strip():
                    raise ParseError(f"{file.path}!{other}", "a ZME (差错 / adjustment) file with records: "
                                     "not supported yet, and the zip is not read half")
            reports = [(n, d) for n, d in file.members.items() if sniff_report(d)]
            if len(reports) > 1:
                raise ParseError(file.path, f"zip holds {len(reports)} summary reports, expected at most one")
            if reports:
                report = _read_report(f"{file.path}!{reports[0][0]}", reports[0][1])
            member = name
            unread = sorted(set(file.members) - {name} - {n for n, _ in reports})
        else:
            name, data, path, member, unread = file.path.name, file.raw, str(file.path), None, []

        settle = _settlement_date(name)
        if report is not None:
            if settle is None:
                settle = report["清算日期"]
            elif report["清算日期"] != settle:
                raise ParseError(report["path"], f"清算日期 is {report['清算日期']} but the flow file {name} is for {settle}",
                                 line=report["lines"]["清算日期"], field="清算日期", value=report["清算日期"].strftime("%Y%m%d"))
        if settle is None:
            raise ParseError(path, "cannot tell the settlement date, and so the year of each MMDDhhmmss time: keep "
                                   "UnionPay's file name INN<yyMMdd><nn>ZM_<商户代码>, or ingest the zip it came in")

        raw = self._records_table(path, data)
        con = T.connect()
        con.register("raw", raw)
        self._check_rows(con, path, settle)
        records = self._records(con, settle)
        totals = {"清算日期": settle.isoformat(), "rows": raw.num_rows}
        if report is not None:
            totals.update(self._check_report(con, report, raw.num_rows))
        if unread:
            totals["members_not_read"] = unread  # e.g. an empty ZME file
        return Parsed(self.format, self.side, records, settle, totals, member)

    def _records_table(self, path: str, data: bytes) -> pa.Table:
        """Every non-blank line, cut into its fields by byte position, as Arrow columns (no Python loop per row)."""
        lines = pc.split_pattern(pa.array([data], pa.large_binary()), b"\n").flatten()
        numbers = pa.array(range(1, len(lines) + 1), pa.int64())
        lines = pc.replace_substring_regex(lines, pattern="\r$", replacement="")
        keep = pc.invert(pc.match_substring_regex(lines, pattern="^[ \t]*$"))
        lines, numbers = lines.filter(keep), numbers.filter(keep)
        shape = " ".join(f".{{{w}}}" for _, w in FIELDS)  # every field its width, one space between
        ok = pc.and_(pc.equal(pc.binary_length(lines), WIDTH),
                     pc.match_substring_regex(lines, pattern=f"^(?s:{shape})$"))
        bad = pc.index(ok, False).as_py()
        if bad != -1:
            raise ParseError(path, f"not a ZM flow record ({WIDTH} bytes, fields separated by spaces): "
                                   f"this line is {pc.binary_length(lines)[bad].as_py()} bytes", line=numbers[bad].as_py())
        columns = {name: _text(path, lines, numbers, name, start - 1, width)
                   for name, (start, width) in _START.items() if name in USED}
        return pa.table({**columns, "line": numbers})

    def _time_sql(self, settle: date) -> str:
        """交易传输时间 MMDDhhmmss -> local timestamp in the year nearest the settlement date."""
        cands = []
        for year in (settle.year, settle.year - 1, settle.year + 1):
            ts = f"TRY_STRPTIME('{year}' || \"交易传输时间\", '%Y%m%d%H%M%S')"
            cands.append(f"WHEN abs(date_diff('day', DATE '{settle}', CAST({ts} AS DATE))) <= {HALF_YEAR} THEN {ts}")
        return "(CASE " + " ".join(cands) + " END)"

    def _check_rows(self, con, path, settle: date) -> None:
        T.required(con, path, ["交易传输时间", "交易金额", "查询流水号", "交易类型", "商户手续费", "结算金额"])
        T.first_bad_value(con, path, [
            T.Check("交易传输时间", f"CASE WHEN regexp_full_match(\"交易传输时间\", '\\d{{10}}') THEN {self._time_sql(settle)} END",
                    f"not an MMDDhhmmss time within half a year of the settlement date {settle}"),
            T.Check("交易金额", "CASE WHEN regexp_full_match(\"交易金额\", '\\d{12}') THEN 1 END",
                    "not an amount in fen (12 digits)"),
            *[T.Check(c, _signed(c), "not a D/C amount in fen (D or C and 12 digits)")
              for c in ("商户手续费", "结算金额", "清算净额", "优惠金额")],
        ])
        known = ", ".join(f"{k} {v[1]}" for k, v in TXN_TYPES.items())
        bad = con.execute(f"SELECT line, \"交易类型\" FROM raw WHERE trim(\"交易类型\") NOT IN "
                          f"({', '.join(repr(k) for k in TXN_TYPES)}) ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(path, f"unknown 交易类型 (known: {known})", line=bad[0], field="交易类型", value=bad[1])
        dupe = con.execute("SELECT trim(\"查询流水号\"), min(line), max(line) FROM raw GROUP BY 1 HAVING count(*) > 1 "
                           "ORDER BY 3 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(path, f"the same transaction appears twice (also on line {dupe[1]})", line=dupe[2],
                             field="查询流水号", value=dupe[0])

    def _records(self, con, settle: date) -> pa.Table:
        con.register("types", pa.table({"code": list(TXN_TYPES), "kind": [v[0] for v in TXN_TYPES.values()],
                                        "label": [v[1] for v in TXN_TYPES.values()]}))
        when = self._time_sql(settle)
        sign = "CASE t.kind WHEN 'refund' THEN -1 ELSE 1 END"
        return con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, t.kind, trim("查询流水号") AS ref,
                   CASE WHEN t.kind = 'refund' THEN coalesce(clean_text("原交易查询流水号"), trim("查询流水号"))
                        ELSE trim("查询流水号") END AS txn_id,
                   clean_text("商户订单号") AS order_id,
                   {sign} * CAST("交易金额" AS BIGINT) AS amount, 'CNY' AS currency,
                   -{_signed('商户手续费')} AS fee,
                   {sign} * coalesce(abs({_signed('优惠金额')}), 0) AS discount,
                   'success' AS status,
                   {T.utc_sql(when, self.tz)} AS occurred_at, CAST({when} AS DATE) AS business_day,
                   clean_text("账号") AS payer,
                   concat_ws(' | ', trim("交易代码") || ' ' || t.label, clean_text("商户自定义域")) AS memo
            FROM raw JOIN types t ON t.code = trim(raw."交易类型") ORDER BY line
        """).to_arrow_table()

    def _check_report(self, con, report: dict, row_count: int) -> dict:
        path = report["path"]
        merchants = [r[0] for r in con.execute("SELECT DISTINCT trim(\"商户代码\") FROM raw ORDER BY 1").fetchall()]
        if merchants and merchants != [report["商户代码"]]:
            raise ParseError(path, f"商户代码 is {report['商户代码']} but the flow file's records are for {', '.join(merchants)}",
                             line=report["lines"]["商户代码"], field="商户代码", value=report["商户代码"])
        if report["清算币种"] != "人民币":
            raise ParseError(path, "only 人民币 (CNY) settlement is supported", line=report["lines"]["清算币种"],
                             field="清算币种", value=report["清算币种"])
        amount, fee, settle = con.execute(f"""
            SELECT coalesce(sum(CASE WHEN t.kind = 'refund' THEN -1 ELSE 1 END * CAST("交易金额" AS BIGINT)), 0),
                   coalesce(sum(-{_signed('商户手续费')}), 0), coalesce(sum({_signed('结算金额')}), 0)
            FROM raw JOIN types t ON t.code = trim(raw."交易类型")""").fetchone()
        yuan = lambda fen: f"{Decimal(fen).scaleb(-2):.2f}"  # noqa: E731
        out = {}
        for table, (line, count, amt_d, amt_c, fee_d, fee_c, net_d, net_c) in report["totals"].items():
            checks = [
                ("交易笔数", str(count), str(row_count), count == row_count, "records"),
                ("交易金额", f"贷 {yuan(amt_c)} - 借 {yuan(amt_d)}", yuan(amount), amt_c - amt_d == amount,
                 "records' signed 交易金额 add up to"),
                ("费用", f"借 {yuan(fee_d)} - 贷 {yuan(fee_c)}", yuan(fee), fee_d - fee_c == fee,
                 "records' 商户手续费 add up to"),
                ("资金清算差额", f"贷 {yuan(net_c)} - 借 {yuan(net_d)}", yuan(settle), net_c - net_d == settle,
                 "records' signed 结算金额 add up to"),
            ]
            for field, stated, actual, ok, what in checks:
                if not ok:
                    raise ControlTotalError(path, f"the {table} table's 总计 says {field} {stated} but the flow file's "
                                                  f"{what} {actual}", line=line, field=field, value=stated)
            out[table] = {"交易笔数": count, "交易金额": {"借": yuan(amt_d), "贷": yuan(amt_c)},
                          "费用": {"借": yuan(fee_d), "贷": yuan(fee_c)}, "资金清算差额": {"借": yuan(net_d), "贷": yuan(net_c)}}
        return {"report": {"商户代码": report["商户代码"], "清算币种": report["清算币种"], "总计": out}}


def sniff_report(data: bytes) -> bool:
    return REPORT_TITLE in data[:400].decode("gb18030", errors="replace")


def _read_report(path: str, data: bytes) -> dict:
    """The RD summary report: header fields and the 总计 line of each known table (amounts in fen)."""
    text = decode_text(path, data, ("gb18030",))
    fields: dict = {}
    lines: dict[str, int] = {}
    totals: dict[str, tuple] = {}
    table = None
    for no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r").strip()
        for key, value in REPORT_FIELD.findall(line):
            fields.setdefault(key, value)
            lines.setdefault(key, no)
        head = next((t for t in REPORT_TABLES if line.startswith(t)), None)
        if head:
            table = head
            continue
        if line.startswith("总计") and table:
            m = REPORT_TOTAL.match(line)
            if not m:
                raise ParseError(path, "a 总计 line that is not a count and six amounts", line=no)
            fen = [int(Decimal(v.replace(",", "")).scaleb(2)) for v in m.groups()[1:]]
            totals[table] = (no, int(m.group(1)), *fen)
            table = None
    for key in ("商户代码", "清算币种", "清算日期"):
        if key not in fields:
            raise ParseError(path, f"summary report lacks {key}")
    if REPORT_TABLES[0] not in totals:
        raise ParseError(path, f"summary report has no 总计 line under its {REPORT_TABLES[0]} table: nothing to check")
    try:
        settle = date(int(fields["清算日期"][:4]), int(fields["清算日期"][4:6]), int(fields["清算日期"][6:8]))
    except ValueError:
        raise ParseError(path, "not a date (expected yyyyMMdd)", line=lines["清算日期"], field="清算日期",
                         value=fields["清算日期"]) from None
    return {"path": path, "商户代码": fields["商户代码"], "清算币种": fields["清算币种"], "清算日期": settle,
            "lines": lines, "totals": totals}


def _settlement_date(name: str) -> date | None:
    m = SETTLE_NAME.search(name)
    if not m:
        return None
    try:
        return date(2000 + int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _text(path: str, lines: pa.Array, numbers: pa.Array, name: str, start: int, width: int) -> pa.Array:
    """One field of every record as text: ASCII as it is (the usual case), anything else decoded as GBK."""
    raw = pc.binary_slice(lines, start, start + width)
    text = raw.view(pa.large_string())  # no copy; valid as text only where every byte is ASCII
    ascii_ = pc.string_is_ascii(text)
    if pc.all(ascii_).as_py():
        return text.cast(pa.string())
    values = []
    for value, is_ascii, line in zip(raw.to_pylist(), ascii_.to_pylist(), numbers.to_pylist()):
        try:
            values.append(value.decode("ascii" if is_ascii else "gb18030"))
        except UnicodeDecodeError:
            raise ParseError(path, "not GBK text", line=line, field=name, value=value.decode("gb18030", "replace")) from None
    return pa.array(values, pa.string())

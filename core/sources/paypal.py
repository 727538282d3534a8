"""PayPal SFTP reports with record-type rows: Settlement (STL) and Transaction Detail (TRR).

Both are CSV files whose first field names the row's type:

    RH  report header (generated at, reporting window, account, version)
    FH  file header (sequence number of this file within the report)
    SH  section header (period start and end, with offsets, account)
    CH  column header: the names of the SB columns
    SB  section body: one transaction
    SF  section footer          SC  section record count
    RF  report footer           RC  report record count
    FF  file footer

Only SB rows are data; the others are the envelope, and the footers are checked when
present (excerpts often lack them). Columns are found by name from the CH row, with runs of
spaces collapsed (older report versions put two spaces in some names).

Amounts are unsigned integers in hundredths of the currency's major unit, whatever the
currency (PayPal writes 100 yen and $100.00 both as 10000), with a CR/DR column for the
direction: credit is money in for the merchant. `Fee Debit or Credit` = DR is a fee
charged (positive `fee` in our records), CR a fee returned (negative).

The two reports differ by content, not by file name: a TRR's CH row has `Transactional
Status` (it lists every transaction, settled or not), an STL's does not (only what moved
the balance, so every row is settled). STL footers carry per-currency totals, TRR footers
carry row counts.

Kinds follow PayPal's transaction event codes (T-codes):
    T00xx credit -> payment (a debit is a payment the merchant sent: adjustment)
    T01xx, T1108, T1109 -> fee (and fee reversals)
    T04xx, T06xx, T17xx (withdrawals to bank, card, elsewhere) -> payout
    T1107 (refund by the merchant) -> refund
    T13xx (authorisations, voids) -> payment with status authorized / voided: no money moved
    everything else (conversions, chargebacks, holds, reversals, ...) -> adjustment
`ref` is the Transaction ID; `txn_id` of a payment is its own id, of anything else the
transaction it refers to (`PayPal Reference ID` of type TXN), so a refund carries the id of
the payment it returns. `order_id` is the merchant's Invoice ID.

Time stamps carry their own offset (`2026/01/06 00:00:30 -0800`); `occurred_at` is the
completion time (the initiation time when a row has none). The business day is the date
in the source's configured time zone; the file's day is its SH period start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

import pyarrow as pa

from core.config import MerchantConfig, SourceConfig
from core.money import exponent, to_major
from core.sources import tabular as T
from core.sources.base import ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day

ENVELOPE_TYPES = ("RH", "FH", "SH", "CH", "SF", "SC", "RF", "RC", "FF")
_ENVELOPE = re.compile(r'^\ufeff?"?(RH|FH|SH|CH|SF|SC|RF|RC|FF)"?(?:,|\r?$)', re.M)
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S %z"

COL_ID = "Transaction ID"
COL_CODE = "Transaction Event Code"
COL_DIR = "Transaction Debit or Credit"
COL_GROSS = "Gross Transaction Amount"
COL_CUR = "Gross Transaction Currency"
COL_FEE_DIR = "Fee Debit or Credit"
COL_FEE = "Fee Amount"
COL_FEE_CUR = "Fee Currency"
COL_STATUS = "Transactional Status"
COL_DONE = "Transaction Completion Date"
COL_START = "Transaction Initiation Date"
IDENTIFYING = (COL_ID, COL_CODE, COL_DIR, COL_GROSS, COL_CUR)

# TRR Transactional Status -> ours. F (partially refunded) is a payment that was received:
# the refund is a row of its own.
TRR_STATUS = {"S": "success", "F": "success", "P": "pending", "D": "failed", "V": "reversed"}


def _norm(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split())


def _split_csv_line(line: str) -> list[str]:
    import csv

    return next(csv.reader([line.rstrip("\r")]), [])


@dataclass
class _Envelope:
    line: int
    type: str
    fields: list[str]


@dataclass
class _Report:
    """A record-type report split into its envelope rows and its SB rows (typed later in SQL)."""

    header: list[str]
    rows: pa.Table  # text columns of the CH names, plus `line`, `_type`, `_section`
    envelope: list[_Envelope] = field(default_factory=list)

    def of(self, *types: str) -> list[_Envelope]:
        return [e for e in self.envelope if e.type in types]


def _column_header(file: InputFile) -> list[str] | None:
    """The CH row's names from the head of the file, for identify()."""
    for line in file.head(32768).split("\n")[:12]:
        m = _ENVELOPE.match(line)
        if m and m.group(1) == "CH":
            return [_norm(n) for n in _split_csv_line(line.lstrip("\ufeff"))[1:]]
    return None


def _read(file: InputFile) -> _Report:
    text = decode_text(file.path, file.raw, ("utf-8-sig",))
    marks = list(_ENVELOPE.finditer(text))
    envelope: list[_Envelope] = []
    line_no, pos = 1, 0
    for m in marks:  # only the few envelope rows are visited in Python
        line_no += text.count("\n", pos, m.start())
        pos = m.start()
        end = text.find("\n", m.start())
        envelope.append(_Envelope(line_no, m.group(1), _split_csv_line(text[m.start():end if end >= 0 else None])))
    headers = [e for e in envelope if e.type == "CH"]
    if not headers:
        raise ParseError(file.path, "no CH (column header) row")
    names = [_norm(n) for n in headers[0].fields[1:]]
    for e in headers[1:]:
        if [_norm(n) for n in e.fields[1:]] != names:
            raise ParseError(file.path, "this CH row names other columns than the first CH row", line=e.line)
    missing = [c for c in IDENTIFYING if c not in names]
    if missing:
        raise ParseError(file.path, f"CH row lacks {', '.join(missing)}", line=headers[0].line)
    if len(set(names)) != len(names):
        raise ParseError(file.path, "CH row repeats a column name", line=headers[0].line)

    # The stretches between envelope rows hold the SB rows.
    starts = [m.start() for m in marks] + [len(text)]
    blocks: list[pa.Table] = []
    first_stretch = text[:starts[0]]
    if first_stretch.strip():
        raise ParseError(file.path, "rows before the first header row (RH/FH/SH/CH)", line=1)
    section, seen_ch = 0, False
    for i, e in enumerate(envelope):
        if e.type == "SH":
            section += 1
        seen_ch = seen_ch or e.type == "CH"
        body_start = text.find("\n", starts[i])
        if body_start < 0 or body_start + 1 >= starts[i + 1]:
            continue
        body = text[body_start + 1:starts[i + 1]].rstrip("\r\n")
        if not body.strip():
            continue
        if not seen_ch:
            raise ParseError(file.path, "body rows before the CH (column header) row", line=e.line + 1)
        try:
            table = T.read_rows(file.path, body, e.line + 1, ["_type", *names])
        except ParseError as exc:  # a row of another type than SB explains a wrong field count best
            _unknown_record_type(file, text, exc)
            raise
        blocks.append(table.append_column("_section", pa.array([section] * table.num_rows, pa.int64())))
    if blocks:
        rows = pa.concat_tables(blocks)
    else:
        empty = {n: pa.array([], pa.string()) for n in ["_type", *names]}
        rows = pa.table({**empty, "line": pa.array([], pa.int64()), "_section": pa.array([], pa.int64())})
    return _Report(names, rows, envelope)


def _unknown_record_type(file: InputFile, text: str, exc: ParseError) -> None:
    if exc.line is None:
        return
    line = text.split("\n", exc.line)[exc.line - 1] if exc.line <= text.count("\n") + 1 else ""
    m = re.match(r'^\ufeff?"?([A-Za-z]{2})"?,', line)
    if m and m.group(1) != "SB":
        raise ParseError(file.path, f"unknown record type (expected SB or one of {', '.join(ENVELOPE_TYPES)})",
                         line=exc.line, field="record type", value=m.group(1)) from None


def _minor(col: str, cur: str) -> str:
    """PayPal's hundredths -> the currency's minor units; NULL when not exact (100 JPY = '10000')."""
    v = f"TRY_CAST(clean_text({col}) AS HUGEINT)"
    e = T.exponent_sql(cur)
    return (f"(CASE WHEN NOT regexp_full_match(clean_text({col}), '[0-9]+') THEN NULL "
            f"WHEN {e} >= 2 THEN CAST({v} * CAST(pow(10, {e} - 2) AS BIGINT) AS BIGINT) "
            f"WHEN {v} % CAST(pow(10, 2 - {e}) AS BIGINT) = 0 THEN CAST({v} // CAST(pow(10, 2 - {e}) AS BIGINT) AS BIGINT) END)")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _PayPalReport:
    format = ""
    side = "channel"
    trr = False

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.tz = source.timezone

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        names = _column_header(file)
        return names is not None and all(c in names for c in IDENTIFYING) and (COL_STATUS in names) == self.trr

    def parse(self, file: InputFile) -> Parsed:
        report = _read(file)
        cols = report.header
        con = T.connect()
        con.register("raw", report.rows)
        bad = con.execute("SELECT line, _type FROM raw WHERE clean_text(_type) IS DISTINCT FROM 'SB' "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, f"unknown record type (expected SB or one of {', '.join(ENVELOPE_TYPES)})",
                             line=bad[0], field="record type", value=bad[1])
        done = COL_DONE if COL_DONE in cols else COL_START
        if done not in cols:
            raise ParseError(file.path, f"CH row lacks {COL_DONE}", line=report.of("CH")[0].line)
        T.required(con, file.path, [COL_ID, COL_CODE, COL_DIR, COL_GROSS, COL_CUR])
        # Typed in stages, so that later queries refer to plain columns (DuckDB compiles deeply
        # nested expressions slowly).
        cur_sql = f"upper(clean_text({_q(COL_CUR)}))"
        fee_cur_sql = f"coalesce(upper(clean_text({_q(COL_FEE_CUR)})), {cur_sql})" if COL_FEE_CUR in cols else cur_sql
        con.execute(f"CREATE TEMP TABLE r0 AS SELECT *, {cur_sql} AS _cur, {fee_cur_sql} AS _fee_cur FROM raw")
        cur, fee_cur = "_cur", "_fee_cur"
        has_fee = COL_FEE in cols
        ts = lambda c: f"TRY_STRPTIME(clean_text({_q(c)}), '{_DATE_FORMAT}')"  # noqa: E731
        checks = [
            T.Check(COL_CUR, f"regexp_full_match(clean_text({_q(COL_CUR)}), '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            T.Check(COL_DIR, f"clean_text({_q(COL_DIR)}) IN ('CR', 'DR') OR NULL", "expected CR or DR"),
            T.Check(COL_GROSS, _minor(_q(COL_GROSS), cur),
                    "not an unsigned amount in hundredths that fits the currency's decimals"),
        ]
        for c in (COL_START, COL_DONE):
            if c in cols:
                checks.append(T.Check(c, ts(c), "not a date-time (expected YYYY/MM/DD HH:MM:SS -HHMM)"))
        if has_fee:
            checks.append(T.Check(COL_FEE, _minor(_q(COL_FEE), fee_cur),
                                  "not an unsigned amount in hundredths that fits the currency's decimals"))
        if COL_FEE_DIR in cols:
            checks.append(T.Check(COL_FEE_DIR, f"clean_text({_q(COL_FEE_DIR)}) IN ('CR', 'DR') OR NULL",
                                  "expected CR or DR"))
        T.first_bad_value(con, file.path, checks, table="r0")
        if has_fee:
            self._check_fee_rows(con, file, cols, cur, fee_cur)
        if self.trr:
            bad = con.execute(f"SELECT line, coalesce(clean_text({_q(COL_STATUS)}), '') FROM raw WHERE "
                              f"clean_text({_q(COL_STATUS)}) IS NOT DISTINCT FROM NULL OR clean_text({_q(COL_STATUS)}) "
                              f"NOT IN ({', '.join(repr(k) for k in TRR_STATUS)}) ORDER BY line LIMIT 1").fetchone()
            if bad:
                what = "unknown" if bad[1] else "empty"
                raise ParseError(file.path, f"{what} Transactional Status: the columns are a Transaction Detail Report's, "
                                 f"whose every row carries one of {', '.join(TRR_STATUS)}",
                                 line=bad[0], field=COL_STATUS, value=bad[1])
        dupe = con.execute(f"SELECT clean_text({_q(COL_ID)}), min(line), max(line) FROM raw GROUP BY 1 "
                           "HAVING count(*) > 1 ORDER BY 2 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"transaction appears twice (also on line {dupe[1]})",
                             line=dupe[2], field=COL_ID, value=dupe[0])

        sign = f"(CASE clean_text({_q(COL_DIR)}) WHEN 'DR' THEN -1 ELSE 1 END)"
        fee_sign = (f"(CASE clean_text({_q(COL_FEE_DIR)}) WHEN 'CR' THEN -1 ELSE 1 END)"
                    if COL_FEE_DIR in cols else "1")
        col = lambda c: f"clean_text({_q(c)})" if c in cols else "NULL"  # noqa: E731
        when = f"coalesce({ts(COL_DONE) if COL_DONE in cols else 'NULL'}, {ts(COL_START) if COL_START in cols else 'NULL'})"
        con.execute(f"""CREATE TEMP TABLE s AS SELECT line, _section, _cur,
            {sign} * {_minor(_q(COL_GROSS), cur)} AS _gross,
            {f"coalesce({fee_sign} * {_minor(_q(COL_FEE), fee_cur)}, 0)" if has_fee else "CAST(0 AS BIGINT)"} AS _fee,
            upper(clean_text({_q(COL_CODE)})) AS _code, clean_text({_q(COL_DIR)}) AS _dir,
            clean_text({_q(COL_ID)}) AS _id, {col('PayPal Reference ID')} AS _ref_id,
            upper({col('PayPal Reference ID Type')}) AS _ref_type, {col(COL_STATUS)} AS _status,
            {when} AS _when
            FROM r0""")
        kind = """(CASE
            WHEN _code LIKE 'T00%' AND _dir = 'CR' THEN 'payment'
            WHEN _code LIKE 'T13%' THEN 'payment'
            WHEN _code LIKE 'T01%' OR _code IN ('T1108', 'T1109') THEN 'fee'
            WHEN _code LIKE 'T04%' OR _code LIKE 'T06%' OR _code LIKE 'T17%' THEN 'payout'
            WHEN _code = 'T1107' THEN 'refund'
            ELSE 'adjustment' END)"""
        status = (f"(CASE WHEN _code LIKE 'T13%' THEN (CASE WHEN _code = 'T1302' THEN 'voided' ELSE 'authorized' END) "
                  f"ELSE {'m.v' if self.trr else chr(39) + 'success' + chr(39)} END)")
        txn_id = f"CASE WHEN {kind} <> 'payment' AND _ref_type = 'TXN' AND _ref_id IS NOT NULL THEN _ref_id ELSE _id END"
        memo_parts = ["_code"] + [col(c) for c in ("Transaction Subject", "Transaction Note", "Bank Reference ID")
                                  if c in cols]
        payer = col("Payer's Account ID") if "Payer's Account ID" in cols else col("Consumer ID")
        con.register("status_map", pa.table({"k": list(TRR_STATUS), "v": list(TRR_STATUS.values())}))
        join = "LEFT JOIN status_map m ON m.k = s._status" if self.trr else ""
        records = con.sql(f"""
            SELECT s.line, CAST(NULL AS VARCHAR) AS source, {kind} AS kind,
                   _id AS ref, {txn_id} AS txn_id, {col('Invoice ID')} AS order_id,
                   _gross AS amount, _cur AS currency, _fee AS fee, CAST(0 AS BIGINT) AS discount,
                   {status} AS status,
                   timezone('UTC', _when) AS occurred_at,
                   CAST(timezone('{self.tz}', _when) AS DATE) AS business_day,
                   {payer} AS payer,
                   concat_ws(' | ', {', '.join(memo_parts)}) AS memo
            FROM s JOIN raw USING (line) {join} ORDER BY s.line
        """).to_arrow_table()
        totals = self._check_footers(con, file, report, "_gross", "_fee", "_cur")
        return Parsed(self.format, self.side, records, _period_start(report) or mode_day(records), totals)

    def _check_fee_rows(self, con, file, cols, cur, fee_cur) -> None:
        fee_dir = f"clean_text({_q(COL_FEE_DIR)})" if COL_FEE_DIR in cols else "NULL"
        bad = con.execute(f"SELECT line, {fee_cur} FROM r0 WHERE {_minor(_q(COL_FEE), fee_cur)} > 0 "
                          f"AND {fee_cur} <> {cur} ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "fee is in another currency than the gross amount (not supported: one "
                             "record has one currency)", line=bad[0], field=COL_FEE_CUR, value=bad[1])
        if COL_FEE_DIR in cols:
            bad = con.execute(f"SELECT line, clean_text({_q(COL_FEE)}) FROM r0 WHERE {_minor(_q(COL_FEE), fee_cur)} > 0 "
                              f"AND {fee_dir} IS NULL ORDER BY line LIMIT 1").fetchone()
            if bad:
                raise ParseError(file.path, f"fee without {COL_FEE_DIR}", line=bad[0], field=COL_FEE, value=bad[1])

    def _check_footers(self, con, file, report: _Report, gross: str, fee: str, cur: str) -> dict:
        raise NotImplementedError

    def _count(self, file, e: _Envelope, scope: str, actual: int, index: int = 1) -> int:
        stated = _int_field(file, e, index, f"{e.type} row count")
        if stated != actual:
            raise ControlTotalError(file.path, f"{e.type} says {stated} body rows in {scope}, but {scope} has {actual}",
                                    line=e.line, field=f"{e.type} count", value=e.fields[index])
        return stated

    def _common_counts(self, con, file, report: _Report, checked: list[str]) -> None:
        """SC: SB rows of its section; RC/RF (TRR): of the report; FF: of this file."""
        total = report.rows.num_rows
        for e in report.of("SC"):
            n = _section_rows(con, report, e)
            self._count(file, e, "its section", n)
            checked.append(f"line {e.line} SC")
        for e in report.of("FF"):
            self._count(file, e, "this file", total)
            checked.append(f"line {e.line} FF")
        if _first_file(file, report):
            for e in report.of("RC"):
                self._count(file, e, "the report", total)
                checked.append(f"line {e.line} RC")


def _int_field(file, e: _Envelope, index: int, what: str) -> int:
    value = e.fields[index].strip() if index < len(e.fields) else ""
    if not re.fullmatch(r"[0-9]+", value):
        raise ParseError(file.path, f"{what} is not a whole number", line=e.line, field=what, value=value)
    return int(value)


def _section_rows(con, report: _Report, footer: _Envelope, currency: str | None = None, cur_sql: str = "") -> int:
    section = _section_of(report, footer)
    where = f" AND {cur_sql} = ?" if currency else ""
    args = [section] + ([currency] if currency else [])
    return con.execute(f"SELECT count(*) FROM raw WHERE _section = ?{where}", args).fetchone()[0]


def _section_of(report: _Report, footer: _Envelope) -> int:
    """Sections are numbered by their SH rows (0 when a file has none before the footer)."""
    return sum(1 for e in report.envelope if e.type == "SH" and e.line < footer.line)


def _first_file(file, report: _Report) -> bool:
    """Report-level counts can be checked only when this file holds the report's start.

    A report split over several files carries RF/RC in its last file, counting all files.
    """
    fh = report.of("FH")
    if not fh:
        return True
    seq = fh[0].fields[1].strip() if len(fh[0].fields) > 1 else ""
    return seq in ("", "1", "01", "001")


def _period_start(report: _Report) -> date | None:
    for e in report.of("SH"):
        if len(e.fields) > 1:
            try:
                return datetime.strptime(e.fields[1].strip()[:10], "%Y/%m/%d").date()
            except ValueError:
                return None
    return None


def _header_totals(report: _Report) -> dict:
    out: dict = {}
    rh = report.of("RH")
    if rh and len(rh[0].fields) >= 5:
        out["report"] = {"generated": rh[0].fields[1].strip(), "window": rh[0].fields[2].strip(),
                         "account": rh[0].fields[3].strip(), "version": rh[0].fields[4].strip()}
    sh = report.of("SH")
    if sh and len(sh[0].fields) >= 3:
        out["period"] = {"start": sh[0].fields[1].strip(), "end": sh[0].fields[2].strip()}
    return out


class PayPalSettlementReport(_PayPalReport):
    """STL: what moved the balance, with per-currency footers (SF per section, RF per report).

    An SF/RF row: currency, total gross credits, total gross debits, total fee credits, total
    fee debits, six CR/DR + balance pairs (beginning/ending balances), and a row count. We
    check the four totals and the count against the rows of that currency. The balances are
    kept in control_totals but not checked: how holds and the payable balance enter them is
    not something the rows can show.
    """

    format = "paypal.settlement"
    trr = False

    def _check_footers(self, con, file, report, gross, fee, cur) -> dict:
        totals = _header_totals(report)
        checked: list[str] = []
        con.execute(f"""CREATE TEMP TABLE sums AS SELECT _section, {cur} AS currency,
            count(*) AS n,
            sum(CASE WHEN {gross} > 0 THEN {gross} ELSE 0 END) AS gross_credit,
            sum(CASE WHEN {gross} < 0 THEN -{gross} ELSE 0 END) AS gross_debit,
            sum(CASE WHEN {fee} < 0 THEN -{fee} ELSE 0 END) AS fee_credit,
            sum(CASE WHEN {fee} > 0 THEN {fee} ELSE 0 END) AS fee_debit
            FROM s GROUP BY ALL""")
        totals["currencies"] = {
            c: {"rows": n, "gross_credit": int(gc), "gross_debit": int(gd), "fee_credit": int(fc), "fee_debit": int(fd)}
            for c, n, gc, gd, fc, fd in con.execute(
                "SELECT currency, sum(n), sum(gross_credit), sum(gross_debit), sum(fee_credit), sum(fee_debit) "
                "FROM sums GROUP BY currency ORDER BY currency").fetchall()}
        for e in report.of("SF"):
            self._check_money_footer(con, file, e, "_section = ?", [_section_of(report, e)], "its section")
            checked.append(f"line {e.line} SF {e.fields[1].strip()}")
        if _first_file(file, report):
            for e in report.of("RF"):
                self._check_money_footer(con, file, e, "true", [], "the report")
                checked.append(f"line {e.line} RF {e.fields[1].strip()}")
        self._every_currency_has_a_footer(con, file, report)
        self._common_counts(con, file, report, checked)
        totals["footers_checked"] = checked
        return totals

    def _check_money_footer(self, con, file, e: _Envelope, where: str, args: list, scope: str) -> None:
        if len(e.fields) < 19:
            raise ParseError(file.path, f"{e.type} row has {len(e.fields)} fields, expected 19", line=e.line)
        currency = e.fields[1].strip().upper()
        row = con.execute(f"SELECT coalesce(sum(n), 0), coalesce(sum(gross_credit), 0), coalesce(sum(gross_debit), 0), "
                          f"coalesce(sum(fee_credit), 0), coalesce(sum(fee_debit), 0) FROM sums "
                          f"WHERE currency = ? AND {where}", [currency, *args]).fetchone()
        names = ("Total Gross Amount Credit", "Total Gross Amount Debit", "Total Fee Amount Credit",
                 "Total Fee Amount Debit")
        for i, name in enumerate(names, start=2):
            stated = _hundredths(_int_field(file, e, i, f"{e.type} {name}"), currency)
            actual = int(row[i - 1])
            if stated != actual:
                shown = e.fields[i].strip() if stated is None else to_major(stated, currency)
                raise ControlTotalError(
                    file.path, f"{e.type} {currency} says {name} {shown} but the {currency} rows of {scope} "
                    f"add up to {to_major(actual, currency)}", line=e.line, field=f"{e.type} {name}", value=e.fields[i])
        count = _int_field(file, e, 18, f"{e.type} row count")
        if count != row[0]:
            raise ControlTotalError(file.path, f"{e.type} {currency} says {count} body rows, but {scope} has "
                                    f"{row[0]} {currency} rows", line=e.line, field=f"{e.type} row count", value=e.fields[18])

    def _every_currency_has_a_footer(self, con, file, report: _Report) -> None:
        for ftype, grouping in (("SF", "_section"), ("RF", None)):
            footers = report.of(ftype)
            if not footers or (ftype == "RF" and not _first_file(file, report)):
                continue
            have = {(_section_of(report, e) if grouping else 0, e.fields[1].strip().upper()) for e in footers}
            for section, currency in con.execute("SELECT DISTINCT _section, currency FROM sums ORDER BY 1, 2").fetchall():
                key = (section if grouping else 0, currency)
                if key not in have:
                    line = con.execute("SELECT min(line) FROM raw WHERE _section = ?", [section]).fetchone()[0]
                    raise ControlTotalError(file.path, f"the file has {currency} rows but no {ftype} footer for {currency}",
                                            line=line, field=COL_CUR, value=currency)


class PayPalTransactionDetailReport(_PayPalReport):
    """TRR: every transaction of the account, settled or not, with its Transactional Status.

    Footers are row counts: SF and SC count the SB rows of their section, RF and RC those of
    the report, FF those of this file.
    """

    format = "paypal.transaction_detail"
    trr = True

    def _check_footers(self, con, file, report, gross, fee, cur) -> dict:
        totals = _header_totals(report)
        checked: list[str] = []
        totals["rows"] = report.rows.num_rows
        for e in report.of("SF"):
            self._count(file, e, "its section", _section_rows(con, report, e))
            checked.append(f"line {e.line} SF")
        if _first_file(file, report):
            for e in report.of("RF"):
                self._count(file, e, "the report", report.rows.num_rows)
                checked.append(f"line {e.line} RF")
        self._common_counts(con, file, report, checked)
        totals["footers_checked"] = checked
        return totals


def _hundredths(value: int, currency: str) -> int | None:
    """PayPal's hundredths of a major unit -> minor units; None when not exact."""
    e = exponent(currency)
    if e >= 2:
        return value * 10 ** (e - 2)
    return value // 10 ** (2 - e) if value % 10 ** (2 - e) == 0 else None

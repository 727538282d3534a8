"""PayPal website downloads: the "Activity download" CSV and the "Statement" CSV.

Both come from paypal.com (Activity / Statements -> Download CSV), one row per balance
event, in the account's language, with the same core columns:

    Date, Time, TimeZone | Time Zone, Type | Description, [Status], Currency, Gross, Fee,
    Net, Balance, Transaction ID, Reference Txn ID, Invoice Number | Invoice ID, ...

They are one format here: the columns differ only in which optional ones are present and in
the language of the header (English and Spanish are known; Spanish files write 1.234,56).
Columns are found by name.

- Amounts are major units with the currency's decimals; `Fee` is negative when charged
  (we store charged fees positive). Every row must satisfy Net = Gross + Fee, and in each
  currency the running `Balance` must move by exactly the row's Net (checked in file order,
  newest-first files too).
- Dates are D/M/Y or M/D/Y depending on the account's locale. A day above 12 in either
  place decides; a file where every date fits both is read as the header language's
  custom (English: M/D/Y as PayPal US writes it; Spanish: D/M/Y).
- Each row names its time zone: an IANA name, or an abbreviation (PST, PDT, CET...) read as
  the fixed offset it names. The business day is the date in the source's configured zone.
- A header-only file is a valid statement with no rows.

Kinds come from the Type / Description text: refunds -> refund, withdrawals -> payout,
fees -> fee, payments received -> payment; currency conversions, holds, releases,
chargebacks, reversals and payments the merchant sent -> adjustment (the text is the memo).
"""

from __future__ import annotations

import csv
import io

from core.money import to_major
from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day
from core.sources.zones import zone_sql

# field -> the header names it goes by (English, Spanish)
ALIASES = {
    "date": ("Date", "Fecha"),
    "time": ("Time", "Hora"),
    "tz": ("TimeZone", "Time Zone", "Zona horaria"),
    "type": ("Type", "Description", "Descripción", "Tipo"),
    "status": ("Status", "Estado"),
    "currency": ("Currency", "Divisa", "Moneda"),
    "gross": ("Gross", "Bruto"),
    "fee": ("Fee", "Comisión", "Tarifa"),
    "net": ("Net", "Neto"),
    "balance": ("Balance", "Saldo"),
    "impact": ("Balance Impact", "Impacto en el saldo"),
    "txn_id": ("Transaction ID", "Id. de transacción", "Código de transacción"),
    "ref_txn_id": ("Reference Txn ID", "Id. de referencia de trans.", "Código de referencia de trans."),
    "invoice": ("Invoice Number", "Invoice ID", "Id. de factura", "Número de factura"),
    "name": ("Name", "Nombre"),
    "from": ("From Email Address", "Correo electrónico del remitente"),
    "subject": ("Subject", "Asunto"),
    "note": ("Note", "Nota"),
}
REQUIRED = ("date", "time", "tz", "type", "currency", "gross", "fee", "net", "txn_id")
SPANISH = {"Fecha", "Hora", "Divisa", "Bruto", "Neto"}

# Status words -> ours; others are kept lower-cased.
STATUS = {
    "completed": "success", "completado": "success", "refunded": "success", "partially refunded": "success",
    "reembolsado": "success", "reembolsado parcialmente": "success",
    "pending": "pending", "pendiente": "pending", "held": "pending", "placed": "pending", "unclaimed": "pending",
    "denied": "failed", "denegado": "failed", "failed": "failed",
    "reversed": "reversed", "revertido": "reversed",
    "canceled": "closed", "cancelled": "closed", "cancelado": "closed", "removed": "closed",
}

# Kind from the Type / Description text: first matching rule wins.
KIND_RULES = (
    ("refund", ("refund", "reembolso")),
    ("payout", ("withdrawal", "retirada", "retiro")),
    ("adjustment", ("conversion", "conversión")),
    ("fee", ("fee", "tarifa")),
    ("adjustment", ("chargeback", "contracargo", "reversal", "hold", "release", "retención", "dispute", "disputa",
                    "cancel")),
    ("payment_in", ("payment", "pago", "donation", "donativo")),
)


def _header(line: str) -> list[str]:
    names = next(csv.reader([line.rstrip("\r").lstrip("\ufeff")]), [])
    return [" ".join(n.split()) for n in names]


def _fields(header: list[str]) -> dict[str, str]:
    """Our field -> the file's column name."""
    out = {}
    for f, names in ALIASES.items():
        found = next((n for n in names if n in header), None)
        if found:
            out[f] = found
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PayPalActivityCSV(ChannelSource):
    format = "paypal.activity_csv"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        fields = _fields(_header(file.head().split("\n", 1)[0]))
        return all(f in fields for f in REQUIRED)

    def parse(self, file: InputFile) -> Parsed:
        text = decode_text(file.path, file.raw, ("utf-8-sig",))
        first, _, body = text.partition("\n")
        header = _header(first)
        body = body.rstrip("\r\n")
        # Some exports pad the header with empty names the rows do not have.
        width = len(next(csv.reader(io.StringIO(body.split("\n", 1)[0])), header)) if body else len(header)
        while len(header) > width and header[-1] == "":
            header.pop()
        names = [h or f"_unnamed{i}" for i, h in enumerate(header)]
        if len(set(names)) != len(names):
            raise ParseError(file.path, "header repeats a column name", line=1)
        f = _fields(header)
        missing = [ALIASES[x][0] for x in REQUIRED if x not in f]
        if missing:
            raise ParseError(file.path, f"header lacks {', '.join(missing)}", line=1)
        raw = T.read_rows(file.path, body, 2, names)
        con = T.connect()
        con.register("raw", raw)
        spanish = bool(SPANISH & set(header))
        c = {k: _q(v) for k, v in f.items()}

        T.required(con, file.path, [f[x] for x in ("date", "time", "tz", "currency", "gross", "net", "txn_id")])
        # Typed in stages, so that later queries refer to plain columns (DuckDB compiles deeply
        # nested expressions slowly).
        con.execute(f"CREATE TEMP TABLE r0 AS SELECT *, upper(clean_text({c['currency']})) AS _cur FROM raw")
        num = ((lambda col: f"replace(replace(clean_text({col}), '.', ''), ',', '.')") if spanish  # noqa: E731
               else (lambda col: col))
        money = lambda x: T.minor_sql(num(c[x]), "_cur") if x in c else "CAST(NULL AS BIGINT)"  # noqa: E731
        amount_fields = [x for x in ("gross", "fee", "net", "balance") if x in f]
        T.first_bad_value(con, file.path, [
            T.Check(f["currency"], f"regexp_full_match(clean_text({c['currency']}), '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            *[T.Check(f[x], money(x), "not an amount with the currency's decimals") for x in amount_fields],
        ], table="r0")
        date_format = self._date_format(con, file, f, spanish)
        fmt = date_format or "%m/%d/%Y"  # an empty file has no dates to read
        when = (f"TRY_STRPTIME(clean_text({c['date']}) || ' ' || replace(clean_text({c['time']}), '：', ':'), "
                f"['{fmt} %H:%M:%S', '{fmt} %H:%M'])")
        T.first_bad_value(con, file.path, [T.Check(f["time"], when, f"not a time (expected HH:MM:SS) on {fmt}")])
        zone = zone_sql(con, file.path, f["tz"])
        col = lambda x: f"clean_text({c[x]})" if x in c else "CAST(NULL AS VARCHAR)"  # noqa: E731
        con.execute(f"""CREATE TEMP TABLE s AS SELECT line, _cur,
            {money('gross')} AS _gross, coalesce({money('fee')}, 0) AS _fee, {money('net')} AS _net,
            {money('balance')} AS _bal, {col('balance')} AS _bal_text, {col('net')} AS _net_text,
            lower({col('impact')}) AS _impact, {col('txn_id')} AS _id, {col('ref_txn_id')} AS _ref_id,
            lower({col('type')}) AS _type,
            timezone('UTC', timezone({zone}, {when})) AS _at
            FROM r0""")

        bad = con.execute("SELECT line, _gross, _fee, _net_text, _cur FROM s WHERE _gross + _fee <> _net "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            line, g, fe, shown, cu = bad
            raise ControlTotalError(file.path, f"gross {to_major(g, cu)} plus fee {to_major(fe, cu)} is "
                                    f"{to_major(g + fe, cu)}, not this net", line=line, field=f["net"], value=shown)
        dupe = con.execute("SELECT _id, min(line), max(line) FROM s GROUP BY 1 "
                           "HAVING count(*) > 1 ORDER BY 2 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"transaction appears twice (also on line {dupe[1]})",
                             line=dupe[2], field=f["txn_id"], value=dupe[0])
        if "balance" in f:
            self._check_balances(con, file, f)

        arms = []
        for kind, words in KIND_RULES:
            cond = " OR ".join(f"contains(_type, '{w}')" for w in words)
            result = "CASE WHEN _gross > 0 THEN 'payment' ELSE 'adjustment' END" if kind == "payment_in" else f"'{kind}'"
            arms.append(f"WHEN {cond} THEN {result}")
        kind_sql = f"(CASE {' '.join(arms)} ELSE 'adjustment' END)"
        status = f"lower({col('status')})" if "status" in f else "'completed'"
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, {kind_sql} AS kind,
                   _id AS ref, CASE WHEN {kind_sql} <> 'payment' AND _ref_id IS NOT NULL THEN _ref_id ELSE _id END
                   AS txn_id, {col('invoice')} AS order_id,
                   _gross AS amount, _cur AS currency, -_fee AS fee, CAST(0 AS BIGINT) AS discount,
                   {status} AS status,
                   _at AS occurred_at,
                   CAST(timezone('{self.tz}', timezone('UTC', _at)) AS DATE) AS business_day,
                   coalesce({col('from')}, {col('name')}) AS payer,
                   concat_ws(' | ', {col('type')}, {col('subject')}, {col('note')}) AS memo
            FROM s JOIN raw USING (line) ORDER BY line
        """).to_arrow_table()
        records = T.map_values(records, "status", STATUS)
        totals = {c_: {"rows": n, "gross_minor": int(g), "fee_minor": int(fe), "net_minor": int(t)}
                  for c_, n, g, fe, t in con.execute(
                      "SELECT _cur, count(*), sum(_gross), sum(-_fee), sum(_net) FROM s GROUP BY 1 ORDER BY 1").fetchall()}
        control = {"date_format": date_format, "language": "es" if spanish else "en", "currencies": totals}
        return Parsed(self.format, self.side, records, mode_day(records), control)

    def _date_format(self, con, file, f: dict, spanish: bool) -> str | None:
        """D/M/Y or M/D/Y (or Y/M/D), decided by the file's own dates; see the module doc."""
        d = f"clean_text({_q(f['date'])})"
        bad = con.execute(f"SELECT line, {d} FROM raw WHERE NOT regexp_full_match({d}, "
                          r"'\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}') ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "not a date (expected D/M/Y, M/D/Y or Y-M-D)", line=bad[0], field=f["date"],
                             value=bad[1])
        seps, first_len, a, b = con.execute(
            f"SELECT list(DISTINCT regexp_extract({d}, '[/.-]')), max(length(regexp_extract({d}, '^\\d+'))), "
            f"max(CAST(regexp_extract({d}, '^(\\d+)[/.-](\\d+)', 1) AS INTEGER)), "
            f"max(CAST(regexp_extract({d}, '^(\\d+)[/.-](\\d+)', 2) AS INTEGER)) FROM raw").fetchone()
        if seps is None or len(seps) == 0:
            return None  # no rows
        if len(seps) > 1:
            raise ParseError(file.path, f"dates mix separators {seps}", field=f["date"])
        s = seps[0]
        if first_len == 4:
            return f"%Y{s}%m{s}%d"
        if a > 12 and b > 12:
            raise ParseError(file.path, "dates have values above 12 in both the day and the month place",
                             field=f["date"])
        if a > 12:
            return f"%d{s}%m{s}%Y"
        if b > 12:
            return f"%m{s}%d{s}%Y"
        return f"%d{s}%m{s}%Y" if spanish or s == "." else f"%m{s}%d{s}%Y"

    def _check_balances(self, con, file, f: dict) -> None:
        """Per currency, each row's Balance = the previous row's Balance + this row's Net."""
        first_last = con.execute("SELECT arg_min(_at, line), arg_max(_at, line) FROM s").fetchone()
        newest_first = first_last[0] is not None and first_last[0] > first_last[1]
        order = "line DESC" if newest_first else "line"
        bad = con.execute(f"""
            WITH b AS (
                SELECT line, _cur, _bal, _net, _bal_text, lag(_bal) OVER (PARTITION BY _cur ORDER BY {order}) AS prev
                FROM s WHERE _bal IS NOT NULL AND _impact IS DISTINCT FROM 'memo')
            SELECT line, _cur, prev, _net, _bal_text FROM b WHERE prev IS NOT NULL AND prev + _net <> _bal
            ORDER BY line LIMIT 1""").fetchone()
        if bad:
            line, cu, prev, n, shown = bad
            raise ControlTotalError(file.path, f"the {cu} balance before this row was {to_major(prev, cu)}; plus net "
                                    f"{to_major(n, cu)} makes {to_major(prev + n, cu)}, not this balance",
                                    line=line, field=f["balance"], value=shown)

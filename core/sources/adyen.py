"""Adyen Settlement details report (`settlement_detail_report_batch_<n>.csv`).

One CSV per settlement batch of a merchant account, one row per journal entry:

    Company Account, Merchant Account, Psp Reference, Merchant Reference, Payment Method,
    Creation Date, TimeZone, Type, Modification Reference, Gross Currency, Gross Debit (GC),
    Gross Credit (GC), Exchange Rate, Net Currency, Net Debit (NC), Net Credit (NC),
    Commission (NC), Markup (NC), Scheme Fees (NC), Interchange (NC), ..., Batch Number, ...

Columns are found by name (their order differs between report versions). Amounts are major
units with the currency's decimals, unsigned, split into debit and credit columns; the
gross is in the shopper's currency (GC), the net and the fees in the settlement currency
(NC).

Mapping (documented choices):
- Settled (and SettledBulk, SettledInstallment) -> payment; amount = gross credit in GC
  (what the shopper paid, the figure an order carries); fee = Commission + Markup + Scheme
  Fees + Interchange. When GC and NC differ, the fee is in another currency than the
  amount and is left empty (NULL) rather than mixed; the net is in control_totals.
- Refunded -> refund (negative gross debit), RefundedReversed -> refund (positive);
  fees charged on a refund are a positive fee.
- Chargeback, SecondChargeback, ChargebackReversed and other dispute entries -> adjustment.
- Fee (and other fee-like entries: InvoiceDeduction, PaymentCost, ...) -> fee, the net debit.
- MerchantPayout -> payout (negative).
- Balancetransfer (the balance carried in from the previous batch or out to the next) and
  anything else -> adjustment, with the type in the memo.
`ref` is the Modification Reference of a transaction entry (one capture, one refund; a
payment can have several), else batch:type:modification reference for batch entries;
`txn_id` the payment's Psp Reference (so a refund names its payment); `order_id` the
Merchant Reference.

Checks: every row's net = gross x exchange rate -/+ fees (exact when GC = NC, within one
minor unit after conversion); and a batch that closes (a MerchantPayout or a Balancetransfer
out) nets to zero: what came in, less what went out, is nothing.

Times: `Creation Date` in the row's `TimeZone` (an abbreviation is a fixed offset: CET is
UTC+1); the business day is the date in the source's configured time zone.
"""

from __future__ import annotations

import pyarrow as pa

from core.config import MerchantConfig, SourceConfig
from core.money import to_major
from core.sources import tabular as T
from core.sources.base import ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day
from core.sources.zones import zone_sql

REQUIRED = ("Psp Reference", "Merchant Reference", "Creation Date", "TimeZone", "Type", "Modification Reference",
            "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Net Currency", "Net Debit (NC)",
            "Net Credit (NC)", "Batch Number")
FEES = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")

TYPE_KIND = {
    "Settled": "payment", "SettledBulk": "payment", "SettledInstallment": "payment",
    "Refunded": "refund", "RefundedBulk": "refund", "RefundedInstallment": "refund", "RefundedReversed": "refund",
    "Fee": "fee", "InvoiceDeduction": "fee", "PaymentCost": "fee", "MiscCosts": "fee", "AuthorisationSchemeFee": "fee",
    "MerchantPayout": "payout",
}
# Entries that end a batch: after them its balance is zero.
CLOSING = ("MerchantPayout",)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class AdyenSettlementDetail:
    format = "adyen.settlement_detail"
    side = "channel"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.tz = source.timezone

    @staticmethod
    def _header(line: str) -> list[str]:
        import csv

        return [" ".join(h.split()) for h in next(csv.reader([line.rstrip("\r").lstrip("\ufeff")]), [])]

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        header = self._header(file.head().split("\n", 1)[0])
        return all(c in header for c in REQUIRED)

    def parse(self, file: InputFile) -> Parsed:
        text = decode_text(file.path, file.raw, ("utf-8-sig",))
        first, _, body = text.partition("\n")
        header = self._header(first)
        names = [h or f"_unnamed{i}" for i, h in enumerate(header)]
        if len(set(names)) != len(names):
            raise ParseError(file.path, "header repeats a column name", line=1)
        raw = T.read_rows(file.path, body.rstrip("\r\n"), 2, names)
        con = T.connect()
        con.register("raw", raw)
        col = lambda c: f"clean_text({_q(c)})" if c in header else "NULL"  # noqa: E731
        T.required(con, file.path, ["Creation Date", "TimeZone", "Type", "Net Currency", "Batch Number"])
        gc, nc = f"upper({col('Gross Currency')})", f"upper({col('Net Currency')})"
        fees = [c for c in FEES if c in header]
        checks = [
            T.Check("Gross Currency", f"regexp_full_match({col('Gross Currency')}, '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            T.Check("Net Currency", f"regexp_full_match({col('Net Currency')}, '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            T.time_check("Creation Date"),
            T.money_check("Gross Debit (GC)", gc), T.money_check("Gross Credit (GC)", gc),
            T.money_check("Net Debit (NC)", nc), T.money_check("Net Credit (NC)", nc),
            *[T.money_check(c, nc) for c in fees],
        ]
        if "Exchange Rate" in header:
            checks.append(T.fee_check("Exchange Rate"))
        T.first_bad_value(con, file.path, checks)
        bad = con.execute(f"SELECT line, {col('Gross Currency')} FROM raw WHERE {gc} IS NULL AND "
                          f"(clean_text(\"Gross Debit (GC)\") IS NOT NULL OR clean_text(\"Gross Credit (GC)\") IS NOT NULL) "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "gross amount without its currency", line=bad[0], field="Gross Currency", value="")

        m = lambda c, cur: f"coalesce({T.minor_sql(_q(c), cur)}, 0)"  # noqa: E731
        gross = f"({m('Gross Credit (GC)', gc)} - {m('Gross Debit (GC)', gc)})"
        net = f"({m('Net Credit (NC)', nc)} - {m('Net Debit (NC)', nc)})"
        fee = " + ".join(m(c, nc) for c in fees) if fees else "0"
        rate = 'coalesce(to_dec("Exchange Rate"), 1)' if "Exchange Rate" in header else "1"
        has_gross = "(clean_text(\"Gross Debit (GC)\") IS NOT NULL OR clean_text(\"Gross Credit (GC)\") IS NOT NULL)"
        # net = gross x rate - fees, in NC minor units (gross x rate rescaled from GC's decimals to NC's)
        converted = (f"(CAST({gross} AS DECIMAL(38, 6)) * {rate} * "
                     f"CAST(pow(10, {T.exponent_sql(nc)} - {T.exponent_sql(gc)}) AS DECIMAL(38, 6)))")
        diff = f"abs({converted} - ({fee}) - {net})"
        same = f"({gc} = {nc} AND {rate} = 1)"
        bad = con.execute(f"SELECT line, {gross}, {fee}, {net}, clean_text(\"Net Credit (NC)\"), "
                          f"clean_text(\"Net Debit (NC)\"), {gc}, {nc}, {same} FROM raw "
                          f"WHERE {has_gross} AND ({diff} >= 1 OR ({same} AND {diff} <> 0)) "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            line, g, f, n, ncr, ndr, g_cur, n_cur, plain = bad
            what = (f"gross {to_major(g, g_cur)} less fees {to_major(f, n_cur)} is {to_major(g - f, n_cur)}" if plain
                    else f"gross {to_major(g, g_cur)} {g_cur} converted, less fees {to_major(f, n_cur)} {n_cur}, "
                         "is more than one minor unit off")
            field, value = ("Net Credit (NC)", ncr) if ncr else ("Net Debit (NC)", ndr)
            raise ControlTotalError(file.path, f"{what}, but the row's net is {to_major(n, n_cur)}",
                                    line=line, field=field, value=value)
        psp = col("Psp Reference")
        control = self._check_batches(con, file, net, nc, col)

        zone = zone_sql(con, file.path, "TimeZone")
        when = 'local_ts("Creation Date")'
        occurred = f"timezone('UTC', timezone({zone}, {when}))"
        con.register("kinds", pa.table({"k_type": list(TYPE_KIND), "k_kind": list(TYPE_KIND.values())}))
        type_ = col("Type")
        squeeze = lambda e: f"regexp_replace({e}, '\\s+', ' ', 'g')"  # noqa: E731
        modref = f"nullif(nullif({col('Modification Merchant Reference')}, '<auto>'), {col('Merchant Reference')})"
        ref = (f"CASE WHEN {psp} IS NOT NULL THEN coalesce({col('Modification Reference')}, {psp} || ':' || {type_}) "
               f"ELSE concat_ws(':', {col('Batch Number')}, {type_}, {squeeze(col('Modification Reference'))}, "
               f"{squeeze(modref)}) END")
        memo = (f"concat_ws(' | ', {type_}, {col('Payment Method Variant')}, "
                f"CASE WHEN {psp} IS NULL THEN nullif({squeeze(col('Modification Reference'))}, {type_}) END, {modref})")
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, coalesce(k.k_kind, 'adjustment') AS kind,
                   {ref} AS ref, {psp} AS txn_id, {col('Merchant Reference')} AS order_id,
                   CASE WHEN {has_gross} THEN {gross} ELSE {net} END AS amount,
                   CASE WHEN {has_gross} THEN {gc} ELSE {nc} END AS currency,
                   CASE WHEN NOT {has_gross} THEN 0 WHEN {gc} = {nc} THEN {fee} END AS fee,
                   CAST(0 AS BIGINT) AS discount,
                   'success' AS status,
                   {occurred} AS occurred_at,
                   CAST(timezone('{self.tz}', timezone('UTC', {occurred})) AS DATE) AS business_day,
                   CAST(NULL AS VARCHAR) AS payer,
                   {memo} AS memo
            FROM raw LEFT JOIN kinds k ON k.k_type = {type_}
            ORDER BY line
        """).to_arrow_table()
        con.register("recs", records)
        dupe = con.execute("SELECT ref, min(line), max(line) FROM recs GROUP BY kind, ref HAVING count(*) > 1 "
                           "ORDER BY 2 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"entry appears twice (also on line {dupe[1]})", line=dupe[2],
                             field="Modification Reference", value=dupe[0])
        return Parsed(self.format, self.side, records, mode_day(records), control)

    def _check_batches(self, con, file, net: str, nc: str, col) -> dict:
        """A batch that closes nets to zero; the figures go to control_totals either way."""
        closing = " OR ".join(f"{col('Type')} = '{t}'" for t in CLOSING)
        out_transfer = f"({col('Type')} = 'Balancetransfer' AND {net} < 0)"
        rows = con.execute(f"""
            SELECT {col('Batch Number')} AS batch, {nc} AS cur, count(*),
                   sum(CASE WHEN {net} > 0 THEN {net} ELSE 0 END), sum(CASE WHEN {net} < 0 THEN -{net} ELSE 0 END),
                   sum({net}), max(CASE WHEN {closing} OR {out_transfer} THEN line END)
            FROM raw GROUP BY ALL ORDER BY batch, cur""").fetchall()
        batches: dict = {}
        for batch, cur, n, credit, debit, total, close_line in rows:
            batches.setdefault(batch, {})[cur] = {"rows": n, "net_credit_minor": int(credit),
                                                  "net_debit_minor": int(debit), "closed": close_line is not None}
            if close_line is not None and total != 0:
                raise ControlTotalError(
                    file.path, f"batch {batch} closes here, but its {cur} entries net to {to_major(int(total), cur)} "
                    f"(credits {to_major(int(credit), cur)}, debits {to_major(int(debit), cur)}), not zero",
                    line=close_line, field="Net Debit (NC)", value=con.execute(
                        f"SELECT clean_text(\"Net Debit (NC)\") FROM raw WHERE line = ?", [close_line]).fetchone()[0])
        return {"batches": batches}

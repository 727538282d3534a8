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
  Fees + Interchange. When GC and NC differ, the fees are in another currency than the
  amount: `fee` is then 0 and the memo says "fees 0.30 USD, net 31.15 USD" (never mixed).
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

from core.money import to_major
from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day
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


def _major_sql(minor: str, cur: str) -> str:
    """Minor units -> a decimal string in major units, e.g. 3015 USD -> '30.15'."""
    arms = " ".join(f"WHEN {e} THEN CAST(CAST({minor} AS DECIMAL(38, 0)) / {10 ** e} AS DECIMAL(38, {e}))::VARCHAR"
                    for e in (2, 3, 4))
    return f"(CASE {T.exponent_sql(cur)} {arms} ELSE CAST({minor} AS VARCHAR) END)"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class AdyenSettlementDetail(ChannelSource):
    format = "adyen.settlement_detail"

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
        # Typed in stages, so that each later query refers to plain columns (DuckDB compiles
        # deeply nested expressions slowly).
        con.execute(f"CREATE TEMP TABLE r0 AS SELECT *, upper({col('Gross Currency')}) AS _gc, "
                    f"upper({col('Net Currency')}) AS _nc FROM raw")
        fees = [c for c in FEES if c in header]
        checks = [
            T.Check("Gross Currency", f"regexp_full_match({col('Gross Currency')}, '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            T.Check("Net Currency", f"regexp_full_match({col('Net Currency')}, '[A-Za-z]{{3}}') OR NULL",
                    "not an ISO currency code"),
            T.time_check("Creation Date"),
            T.money_check("Gross Debit (GC)", "_gc"), T.money_check("Gross Credit (GC)", "_gc"),
            T.money_check("Net Debit (NC)", "_nc"), T.money_check("Net Credit (NC)", "_nc"),
            *[T.money_check(c, "_nc") for c in fees],
        ]
        if "Exchange Rate" in header:
            checks.append(T.fee_check("Exchange Rate"))
        T.first_bad_value(con, file.path, checks, table="r0")
        has_gross = "(clean_text(\"Gross Debit (GC)\") IS NOT NULL OR clean_text(\"Gross Credit (GC)\") IS NOT NULL)"
        bad = con.execute(f"SELECT line FROM r0 WHERE _gc IS NULL AND {has_gross} ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "gross amount without its currency", line=bad[0], field="Gross Currency", value="")

        m = lambda c, cur: f"coalesce({T.minor_sql(_q(c), cur)}, 0)"  # noqa: E731
        zone = zone_sql(con, file.path, "TimeZone", table="r0")
        squeeze = lambda e: f"regexp_replace({e}, '\\s+', ' ', 'g')"  # noqa: E731
        con.execute(f"""CREATE TEMP TABLE s AS SELECT line, _gc, _nc,
            {m('Gross Credit (GC)', '_gc')} - {m('Gross Debit (GC)', '_gc')} AS _gross,
            {m('Net Credit (NC)', '_nc')} - {m('Net Debit (NC)', '_nc')} AS _net,
            {' + '.join(m(c, '_nc') for c in fees) if fees else '0'} AS _fee,
            {'coalesce(to_dec("Exchange Rate"), 1)' if 'Exchange Rate' in header else '1'} AS _rate,
            {has_gross} AS _has_gross,
            {T.exponent_sql('_nc')} - {T.exponent_sql('_gc')} AS _shift,
            clean_text("Net Credit (NC)") AS _ncr, clean_text("Net Debit (NC)") AS _ndr,
            {col('Type')} AS _type, {col('Psp Reference')} AS _psp, {col('Merchant Reference')} AS _order,
            {col('Batch Number')} AS _batch, {squeeze(col('Modification Reference'))} AS _modref,
            nullif(nullif({col('Modification Merchant Reference')}, '<auto>'), {col('Merchant Reference')}) AS _modmref,
            {col('Payment Method Variant')} AS _variant,
            timezone('UTC', timezone({zone}, local_ts("Creation Date"))) AS _at
            FROM r0""")
        # net = gross x rate - fees, in NC minor units (gross x rate rescaled from GC's decimals to NC's)
        bad = con.execute("""
            WITH d AS (SELECT *, abs(CAST(_gross AS DECIMAL(38, 6)) * _rate * CAST(pow(10, _shift) AS DECIMAL(38, 6))
                                     - _fee - _net) AS diff, (_gc = _nc AND _rate = 1) AS same FROM s)
            SELECT line, _gross, _fee, _net, _ncr, _ndr, _gc, _nc, same FROM d
            WHERE _has_gross AND (diff >= 1 OR (same AND diff <> 0)) ORDER BY line LIMIT 1""").fetchone()
        if bad:
            line, g, f, n, ncr, ndr, g_cur, n_cur, plain = bad
            what = (f"gross {to_major(g, g_cur)} less fees {to_major(f, n_cur)} is {to_major(g - f, n_cur)}" if plain
                    else f"gross {to_major(g, g_cur)} {g_cur} converted, less fees {to_major(f, n_cur)} {n_cur}, "
                         "is more than one minor unit off")
            field, value = ("Net Credit (NC)", ncr) if ncr else ("Net Debit (NC)", ndr)
            raise ControlTotalError(file.path, f"{what}, but the row's net is {to_major(n, n_cur)}",
                                    line=line, field=field, value=value)
        control = self._check_batches(con, file)

        con.register("kinds", pa.table({"k_type": list(TYPE_KIND), "k_kind": list(TYPE_KIND.values())}))
        # Fees in another currency than the amount cannot go in `fee`: the memo keeps them.
        fx = (f"CASE WHEN _has_gross AND _gc <> _nc THEN 'fees ' || {_major_sql('_fee', '_nc')} || ' ' || _nc "
              f"|| ', net ' || {_major_sql('_net', '_nc')} || ' ' || _nc END")
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, coalesce(k.k_kind, 'adjustment') AS kind,
                   CASE WHEN _psp IS NOT NULL THEN coalesce(_modref, _psp || ':' || _type)
                        ELSE concat_ws(':', _batch, _type, _modref, {squeeze('_modmref')}) END AS ref,
                   _psp AS txn_id, _order AS order_id,
                   CASE WHEN _has_gross THEN _gross ELSE _net END AS amount,
                   CASE WHEN _has_gross THEN _gc ELSE _nc END AS currency,
                   CASE WHEN _has_gross AND _gc = _nc THEN _fee ELSE 0 END AS fee,
                   CAST(0 AS BIGINT) AS discount,
                   'success' AS status,
                   _at AS occurred_at,
                   CAST(timezone('{self.tz}', timezone('UTC', _at)) AS DATE) AS business_day,
                   CAST(NULL AS VARCHAR) AS payer,
                   concat_ws(' | ', _type, _variant, CASE WHEN _psp IS NULL THEN nullif(_modref, _type) END,
                             _modmref, {fx}) AS memo
            FROM s LEFT JOIN kinds k ON k.k_type = _type
            ORDER BY line
        """).to_arrow_table()
        con.register("recs", records)
        dupe = con.execute("SELECT ref, min(line), max(line) FROM recs GROUP BY kind, ref HAVING count(*) > 1 "
                           "ORDER BY 2 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"entry appears twice (also on line {dupe[1]})", line=dupe[2],
                             field="Modification Reference", value=dupe[0])
        return Parsed(self.format, self.side, records, mode_day(records), control)

    def _check_batches(self, con, file) -> dict:
        """A batch that closes nets to zero; the figures go to control_totals either way."""
        closing = " OR ".join(f"_type = '{t}'" for t in CLOSING)
        rows = con.execute(f"""
            SELECT _batch, _nc, count(*), sum(CASE WHEN _net > 0 THEN _net ELSE 0 END),
                   sum(CASE WHEN _net < 0 THEN -_net ELSE 0 END), sum(_net),
                   max(CASE WHEN {closing} OR (_type = 'Balancetransfer' AND _net < 0) THEN line END),
                   arg_max(_ndr, CASE WHEN {closing} OR (_type = 'Balancetransfer' AND _net < 0) THEN line END)
            FROM s GROUP BY ALL ORDER BY 1, 2""").fetchall()
        batches: dict = {}
        for batch, cur, n, credit, debit, total, close_line, shown in rows:
            batches.setdefault(batch, {})[cur] = {"rows": n, "net_credit_minor": int(credit),
                                                  "net_debit_minor": int(debit), "closed": close_line is not None}
            if close_line is not None and total != 0:
                raise ControlTotalError(
                    file.path, f"batch {batch} closes here, but its {cur} entries net to {to_major(int(total), cur)} "
                    f"(credits {to_major(int(credit), cur)}, debits {to_major(int(debit), cur)}), not zero",
                    line=close_line, field="Net Debit (NC)", value=shown)
        return {"batches": batches}

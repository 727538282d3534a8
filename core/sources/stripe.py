"""Stripe itemized balance reports (Reporting API / Dashboard "Reports" CSV downloads).

One format covers the itemized report family: `balance_change_from_activity.itemized`,
`payout_reconciliation.itemized` and `ending_balance_reconciliation.itemized`. They share one
vocabulary of columns (the columns a merchant picks vary, and `payment_metadata[...]` columns
are the merchant's own), so columns are found by name. One row is one balance transaction:

    balance_transaction_id, created | created_utc, currency, gross, fee, net,
    reporting_category, [source_id, charge_id, payment_intent_id, description,
    customer_email, customer_name, payment_metadata[...], ...]

Money is in major units with the currency's own decimals (JPY has none); `gross` is signed
from the balance's point of view (money in positive), `fee` is what Stripe charged
(positive) and `net = gross - fee`, which we check on every row. A `payout` row takes money
out of the balance, so a positive payout gross is refused (returned payouts are
`payout_reversal`); a balance transaction id that appears twice is refused too.

Times: `created_utc` is UTC. `created` is in the time zone the report was requested in
(UTC unless chosen otherwise), so it is read in the source's configured `timezone`: set
`timezone = "UTC"` for reports run with Stripe's default. The business day is the date in
that same zone.

Records: `reporting_category` decides the kind (charge -> payment, refund -> refund, fee ->
fee, payout -> payout, dispute and everything else -> adjustment, the category kept in the
memo). `ref` is the balance transaction id; `txn_id` the PaymentIntent, else the charge,
else the source object, so a refund carries the id of the payment it returns. The order id
comes from a column mapped in config (`columns = {"payment_metadata[order_no]" =
"order_id"}`), else `payment_metadata[order_id]` when the report has it.
"""

from __future__ import annotations

from core.config import MerchantConfig, SourceConfig
from core.money import to_major
from core.sources import tabular as T
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, decode_text, mode_day

REQUIRED = ("balance_transaction_id", "currency", "gross", "fee", "net", "reporting_category")

# reporting_category -> kind; any other category is an adjustment (the memo names it).
CATEGORY_KIND = {
    "charge": "payment",
    "payment": "payment",
    "refund": "refund",
    "refund_failure": "refund",  # a refund that failed: the money comes back (positive)
    "fee": "fee",
    "network_cost": "fee",
    "tax": "fee",  # taxes on Stripe's fees
    "payout": "payout",
    "payout_reversal": "payout",  # a failed payout returned to the balance (positive)
}


class StripeBalanceReport(ChannelSource):
    format = "stripe.balance_itemized"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        super().__init__(source, merchant)
        # header in the file -> our field (only order_id and payer are mappable here)
        self.mapping = {k.strip(): v for k, v in source.columns.items() if v in ("order_id", "payer")}

    @staticmethod
    def _header(line: str) -> list[str]:
        return [h.strip().strip('"') for h in line.rstrip("\r").split(",")]

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        header = set(self._header(file.head().split("\n", 1)[0]))
        return set(REQUIRED) <= header and bool({"created", "created_utc"} & header)

    def parse(self, file: InputFile) -> Parsed:
        text = decode_text(file.path, file.raw, ("utf-8-sig",))
        first, _, body = text.partition("\n")
        header = self._header(first)
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise ParseError(file.path, f"header repeats column(s) {', '.join(dupes)}", line=1)
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ParseError(file.path, f"header lacks {', '.join(missing)}", line=1)
        raw = T.read_rows(file.path, body.rstrip("\r\n"), 2, header)
        con = T.connect()
        con.register("raw", raw)

        utc = "created_utc" in header
        created = "created_utc" if utc else "created"
        T.required(con, file.path, ["balance_transaction_id", "currency", "gross", "net", "reporting_category", created])
        # Typed in stages, so that later queries refer to plain columns (DuckDB compiles deeply
        # nested expressions slowly).
        con.execute('CREATE TEMP TABLE r0 AS SELECT *, upper(clean_text("currency")) AS _cur FROM raw')
        T.first_bad_value(con, file.path, [
            T.Check("currency", "regexp_full_match(clean_text(currency), '[A-Za-z]{3}') OR NULL", "not an ISO currency code"),
            T.time_check(created),
            T.money_check("gross", "_cur"), T.money_check("fee", "_cur"), T.money_check("net", "_cur"),
        ], table="r0")
        when = f'local_ts("{created}")'
        con.execute(f"""CREATE TEMP TABLE s AS SELECT line, _cur,
            {T.minor_sql('"gross"', '_cur')} AS _gross, coalesce({T.minor_sql('"fee"', '_cur')}, 0) AS _fee,
            {T.minor_sql('"net"', '_cur')} AS _net, clean_text(net) AS _net_text, clean_text(gross) AS _gross_text,
            lower(clean_text(reporting_category)) AS _category, clean_text(balance_transaction_id) AS _id,
            {when if utc else T.utc_sql(when, self.tz)} AS _at
            FROM r0""")

        bad = con.execute("SELECT line, _gross, _fee, _net_text, _cur FROM s WHERE _gross - _fee <> _net "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            line, g, f, shown, c = bad
            raise ControlTotalError(file.path, f"gross {to_major(g, c)} minus fee {to_major(f, c)} is "
                                    f"{to_major(g - f, c)}, not this net", line=line, field="net", value=shown)
        bad = con.execute("SELECT line, _gross_text FROM s WHERE _category = 'payout' AND _gross > 0 "
                          "ORDER BY line LIMIT 1").fetchone()
        if bad:
            raise ParseError(file.path, "a payout takes money out of the balance, so its gross must not be positive "
                             "(returned payouts are payout_reversal)", line=bad[0], field="gross", value=bad[1])
        dupe = con.execute("SELECT _id, min(line), max(line) FROM s GROUP BY 1 "
                           "HAVING count(*) > 1 ORDER BY 2 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"balance transaction appears twice (also on line {dupe[1]})",
                             line=dupe[2], field="balance_transaction_id", value=dupe[0])

        col = lambda name: f'clean_text("{name}")' if name in header else "NULL"  # noqa: E731
        mapped = {v: k for k, v in self.mapping.items() if k in header}
        order_id = col(mapped.get("order_id", "payment_metadata[order_id]"))
        payer = col(mapped["payer"]) if "payer" in mapped else f"coalesce({col('customer_email')}, {col('customer_name')})"
        con.register("kinds", _kinds_table())
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source,
                   coalesce(k.k_kind, 'adjustment') AS kind,
                   _id AS ref,
                   coalesce({col('payment_intent_id')}, {col('charge_id')}, {col('source_id')}) AS txn_id,
                   {order_id} AS order_id,
                   _gross AS amount,
                   _cur AS currency,
                   _fee AS fee,
                   CAST(0 AS BIGINT) AS discount,
                   'success' AS status,
                   _at AS occurred_at,
                   CAST(timezone('{self.tz}', timezone('UTC', _at)) AS DATE) AS business_day,
                   {payer} AS payer,
                   concat_ws(' | ', _category, {col('description')}) AS memo
            FROM s JOIN raw USING (line) LEFT JOIN kinds k ON k.k_category = _category
            ORDER BY line
        """).to_arrow_table()
        totals = con.execute("SELECT _cur, count(*), sum(_gross), sum(_fee), sum(_net) FROM s "
                             "GROUP BY 1 ORDER BY 1").fetchall()
        control = {c: {"rows": n, "gross_minor": int(g), "fee_minor": int(f), "net_minor": int(t)}
                   for c, n, g, f, t in totals}
        return Parsed(self.format, self.side, records, mode_day(records), control)


def _kinds_table():
    import pyarrow as pa

    return pa.table({"k_category": list(CATEGORY_KIND), "k_kind": list(CATEGORY_KIND.values())})

"""Any channel's statement as CSV or XLSX, read through a column mapping in config (kind "generic").

    [[merchants.sources]]
    name = "acme-pay"
    kind = "generic"
    timezone = "Europe/Berlin"
    columns = { "Transaction ID" = "txn_id", "Gross" = "amount", "Date" = "occurred_at",
                "Type" = "kind", "Currency" = "currency", "Fee" = "fee", "Order" = "order_id" }

The mapping is the whole truth: only mapped columns are read (a column that happens to be
called `amount` but is not mapped is ignored), and the source recognises a file only when
its header (the first row) maps to at least `txn_id`, `amount` and `occurred_at`. A
generic source without a mapping recognises nothing, so it can never steal another
source's file.

Canonical columns:
- `txn_id` (required): the channel's id of the row; with `kind` it is the row's identity,
  so the same id twice for the same kind rejects the file.
- `amount` (required): in major units (`12.50`), exact to the currency's minor unit.
  Payments are money in and must not be negative; refunds, fees and payouts are money out
  and are stored negative whether the file prints them with a minus or not; adjustments
  keep their sign.
- `occurred_at` (required): ISO-8601; with an offset (`+08:00`, `Z`) it is that instant,
  without one it is local to the source's time zone, which also gives the business day.
- `kind` (default `payment`): payment, refund, fee, payout or adjustment (any case).
- `currency` (default: the merchant's), `fee` (charged fee, positive; exact), `order_id`,
  `payer`, `memo`, `status` (default `success`; completed/succeeded/paid/settled read as
  success, processing as pending, declined as failed; anything else kept, lower-case).
"""

from __future__ import annotations

import csv
import io

import pyarrow as pa

from core.config import ConfigError, MerchantConfig, SourceConfig
from core.sources import tabular as T
from core.sources.base import RECORD_FIELDS, InputFile, ParseError, Parsed, decode_text, mode_day

CANONICAL = ["txn_id", "order_id", "amount", "currency", "occurred_at", "kind", "fee", "payer", "memo", "status"]
REQUIRED = ["txn_id", "amount", "occurred_at"]
KINDS = ("payment", "refund", "fee", "payout", "adjustment")
# Status words of common exports -> ours; others are kept, lower-cased.
STATUS = {"success": "success", "succeeded": "success", "completed": "success", "complete": "success",
          "paid": "success", "settled": "success", "booked": "success", "成功": "success", "已完成": "success",
          "pending": "pending", "processing": "pending", "处理中": "pending",
          "failed": "failed", "declined": "failed", "失败": "failed"}


class GenericStatement:
    format = "generic.table"
    side = "channel"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.name = source.name
        self.mapping = {k.strip(): v.strip() for k, v in source.columns.items()}
        unknown = sorted({v for v in self.mapping.values() if v not in CANONICAL})
        if unknown:
            raise ConfigError(f"source {source.name!r}: columns maps to unknown column(s) {', '.join(unknown)} "
                              f"(known: {', '.join(CANONICAL)})")
        self.tz = source.timezone
        self.currency = merchant.currency

    # -- identify -----------------------------------------------------------------------

    def identify(self, file: InputFile) -> bool:
        if not self.mapping:
            return False
        try:
            header = self._header(file)
        except ParseError:
            return False
        mapped = {self.mapping[h] for h in header if h in self.mapping}
        return set(REQUIRED) <= mapped

    def _header(self, file: InputFile) -> list[str]:
        if file.is_zip:
            if not any(n.startswith("xl/") for n in file.member_names):
                return []
            from core.sources.orders import _xlsx_rows  # the same workbook reader as order exports

            return [str(h or "").strip() for h in next(_xlsx_rows(file), [])]
        first = file.head().split("\n", 1)[0].rstrip("\r")
        return [h.strip() for h in next(csv.reader(io.StringIO(first)), [])]

    # -- parse --------------------------------------------------------------------------

    def _table(self, file: InputFile) -> pa.Table:
        """Text columns named canonically (mapped columns only), plus `line`."""
        if file.is_zip:
            from core.sources.orders import _cell, _xlsx_rows

            rows = list(_xlsx_rows(file))
            if not rows:
                raise ParseError(file.path, "workbook's first sheet is empty")
            header = [str(h or "").strip() for h in rows[0]]
            names = self._names(file, header)
            cols = [[_cell(r[i]) if i < len(r) else "" for r in rows[1:]] for i in range(len(header))]
            table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], names=names)
            table = table.append_column("line", pa.array(range(2, len(rows) + 1), pa.int64()))
        else:
            text = decode_text(file.path, file.raw, ("utf-8-sig", "gb18030"))
            first, _, body = text.partition("\n")
            header = [h.strip() for h in next(csv.reader(io.StringIO(first.rstrip("\r"))), [])]
            table = T.read_rows(file.path, body, 2, self._names(file, header))
        keep = [c for c in CANONICAL if c in table.column_names]
        table = table.select([*keep, "line"])
        for col in CANONICAL:
            if col not in table.column_names:
                table = table.append_column(col, pa.array([""] * table.num_rows, pa.string()))
        return table

    def _names(self, file: InputFile, header: list[str]) -> list[str]:
        names, seen = [], {}
        for i, h in enumerate(header):
            target = self.mapping.get(h)
            if target is None:
                names.append(f"_unmapped_{i}")
                continue
            if target in seen:
                raise ParseError(file.path, f"columns {seen[target]!r} and {h!r} both map to {target}", line=1,
                                 field=h, value=target)
            seen[target] = h
            names.append(target)
        missing = [c for c in REQUIRED if c not in seen]
        if missing:
            raise ParseError(file.path, f"header lacks a column mapped to {', '.join(missing)} "
                                        f"(source {self.name!r}: check its `columns` in config)", line=1)
        return names

    def parse(self, file: InputFile) -> Parsed:
        raw = self._table(file)
        con = T.connect()
        con.register("raw", raw)
        T.required(con, file.path, REQUIRED)
        cur = f"upper(coalesce(clean_text(currency), '{self.currency}'))"
        # An explicit offset (+08:00, Z) wins; a bare local time is in the source's time zone.
        when = ("CASE WHEN regexp_matches(clean_text({c}), '(Z|[+-]\\d\\d:?\\d\\d)$') "
                "THEN TRY_CAST(clean_text({c}) AS TIMESTAMPTZ) ELSE timezone('" + self.tz + "', local_ts({c})) END")
        kind = "coalesce(lower(clean_text(kind)), 'payment')"
        T.first_bad_value(con, file.path, [
            T.Check("currency", "regexp_full_match(clean_text(currency), '[A-Za-z]{3}') OR NULL",
                    "not an ISO currency code"),
            T.money_check("amount", cur), T.money_check("fee", cur),
            T.Check("occurred_at", when.format(c="occurred_at"),
                    "not a date-time (ISO-8601, e.g. 2026-11-20 14:03:00 or with +08:00)"),
            T.Check("kind", f"{kind} IN {KINDS} OR NULL", f"unknown kind (known: {', '.join(KINDS)})"),
        ])
        amount = T.minor_sql("amount", cur)
        negative = con.execute(f"SELECT line, amount FROM raw WHERE {kind} = 'payment' AND {amount} < 0 "
                               "ORDER BY line LIMIT 1").fetchone()
        if negative:
            raise ParseError(file.path, "a payment cannot be negative (money out is kind refund, fee, payout or "
                                        "adjustment)", line=negative[0], field="amount", value=negative[1].strip())
        dupe = con.execute(f"SELECT {kind}, clean_text(txn_id), min(line), max(line) FROM raw GROUP BY 1, 2 "
                           "HAVING count(*) > 1 ORDER BY 4 LIMIT 1").fetchone()
        if dupe:
            raise ParseError(file.path, f"the same {dupe[0]} appears twice (also on line {dupe[2]})", line=dupe[3],
                             field="txn_id", value=dupe[1])
        local = f"timezone('{self.tz}', {when.format(c='occurred_at')})"
        records = con.sql(f"""
            SELECT line, CAST(NULL AS VARCHAR) AS source, {kind} AS kind, clean_text(txn_id) AS ref,
                   clean_text(txn_id) AS txn_id, clean_text(order_id) AS order_id,
                   CASE WHEN {kind} IN ('refund', 'fee', 'payout') THEN -abs({amount}) ELSE {amount} END AS amount,
                   {cur} AS currency,
                   coalesce({T.minor_sql('fee', cur)}, 0) AS fee, CAST(0 AS BIGINT) AS discount,
                   coalesce(lower(clean_text(status)), 'success') AS status,
                   timezone('UTC', {when.format(c='occurred_at')}) AS occurred_at,
                   CAST({local} AS DATE) AS business_day,
                   clean_text(payer) AS payer, clean_text(memo) AS memo
            FROM raw ORDER BY line
        """).to_arrow_table()
        records = T.map_values(records.cast(RECORD_FIELDS), "status", STATUS)
        con.register("records", records)
        totals = con.execute("SELECT currency, sum(amount) FROM records GROUP BY 1 ORDER BY 1").fetchall()
        control = {"rows": records.num_rows, "amount_minor": {c: int(s) for c, s in totals}}
        return Parsed(self.format, self.side, records, mode_day(records), control)

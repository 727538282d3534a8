"""Features of a channel transaction, in one table: name, SQL, unit, meaning, and words.

A *transaction* here is a channel-side record of kind payment or refund: what the channel
says it collected or paid back. (Our own order records mirror the same transactions; they
are reconciled by the engine and reach the model only through the order time below.)

Features are computed in DuckDB over Arrow tables read from the record store, in two
layers:
- a *profile* of the merchant's history (the model's training window): the usual amount
  per channel and kind, the share of transactions per local hour and weekday, per channel,
  each payer's habits, refunds per day. It is built by `PROFILE_SQL` when a model is
  trained and kept with it, so scoring a day never rescans months of records;
- *windows* over the loaded slice (the day plus the day before): how many payments a payer
  made in the last 10 minutes / hour / 24 hours, refunds at the channel around this one
  (`WINDOWS`: counted with numpy over sorted (group, time) integers, see there why).
Hours and weekdays are in the merchant's time zone. Money stays integer minor units; a
feature is a ratio, a count or a logarithm, so a float is fine there.

`FEATURES` is the one place that says what each column means; `docs/anomaly.md` prints it.
`words(row)` turns a feature's deviation into a phrase with the figures a person checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable

from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.money import display, exponent
from core.store import records_of_days
from models.db import adbc_connect, is_sqlite

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x < 0.1 else f"{100 * x:.0f}%"


def _times(n: int, kind: str = "payment") -> str:
    n = int(n)
    return f"1 {kind}" if n == 1 else f"{n} {kind}s"


@dataclass(frozen=True)
class Feature:
    name: str
    sql: str  # a DuckDB expression over the joined relation in `FEATURE_SQL`
    unit: str
    meaning: str
    unusual: str  # "high" | "low" | "both": which side of the usual is worth saying
    words: Callable[[dict], str]  # row (features + context columns + `currency`) -> phrase


def _amount_words(r: dict) -> str:
    cur, amt, med = r["currency"], abs(r["amount"]), r["merchant_median"]
    what = f"{r['kind']} at {r['source']}"
    if med and amt >= med:
        return f"{display(amt, cur)} is {amt / med:.1f}× this merchant's median {what} ({display(int(med), cur)})"
    return f"{display(amt, cur)} is far below this merchant's usual {what} (median {display(int(med or 0), cur)})"


def _payer_words(r: dict) -> str:
    cur, amt, med = r["currency"], abs(r["amount"]), r["payer_median"] or 1
    return (f"{display(amt, cur)} is {amt / med:.1f}× this payer's median ({display(int(med), cur)} over "
            f"{int(r['payer_history'])} payments)")


FEATURES: list[Feature] = [
    Feature("amount_log", "ln(1 + abs_amount / {scale})", "ln(major units)",
            "size of the transaction", "high",
            lambda r: f"{display(abs(r['amount']), r['currency'])} is a large amount for this merchant"),
    Feature("amount_z", "(ln(greatest(abs_amount, 1)) - pa.med) / (1.4826 * pa.mad + 0.05)", "robust z",
            "log amount against the merchant's median and MAD for this channel and kind", "both", _amount_words),
    Feature("payer_ratio",
            "CASE WHEN pp.payments >= 3 THEN ln(greatest(abs_amount, 1) / pp.median_minor) ELSE 0 END",
            "ln(ratio)", "log of the amount over this payer's median payment (0 with under 3 payments of history)",
            "high", _payer_words),
    Feature("hour_rarity", "-ln(coalesce(ph.share, 0) * 24 + 0.002)", "-ln(share × 24)",
            "how rare the local hour of day is for this merchant (0 = an average hour)", "high",
            lambda r: (f"at {r['local_minute'] // 60:02d}:{r['local_minute'] % 60:02d} local time, an hour with "
                       f"{_pct(r['hour_share'])} of this merchant's transactions")),
    Feature("weekday_rarity", "-ln(coalesce(pd.share, 0) * 7 + 0.01)", "-ln(share × 7)",
            "how rare the local weekday is for this merchant (0 = an average day)", "high",
            lambda r: f"on a {WEEKDAYS[r['dow'] - 1]}, a day with {_pct(r['dow_share'])} of this merchant's transactions"),
    Feature("payer_10m", "payer_10m", "transactions", "the same payer's transactions of this kind in the last "
            "10 minutes (this one included)", "high",
            lambda r: f"{_times(r['payer_10m'], r['kind'])} from the same payer in 10 minutes"),
    Feature("payer_1h", "payer_1h", "transactions", "the same payer's transactions of this kind in the last hour",
            "high", lambda r: f"{_times(r['payer_1h'], r['kind'])} from the same payer in an hour"),
    Feature("payer_24h", "payer_24h", "transactions", "the same payer's transactions of this kind in the last 24 "
            "hours", "high", lambda r: f"{_times(r['payer_24h'], r['kind'])} from the same payer in 24 hours"),
    Feature("same_amount_1h", "same_amount_1h", "transactions",
            "the same payer's transactions of this kind and exact amount in the last hour (duplicate charges)", "high",
            lambda r: (f"{_times(r['same_amount_1h'], r['kind'])} of {display(abs(r['amount']), r['currency'])} "
                       f"from the same payer within an hour")),
    Feature("payer_refund_ratio",
            "(coalesce(pp.refunds, 0) + payer_refunds_24h) / (2 + coalesce(pp.payments, 0) + payer_payments_24h)",
            "refunds per payment", "the payer's refunds over their payments, history and last 24 hours (two "
            "payments added below the line so a first refund is not a 100% ratio)", "high",
            lambda r: f"this payer's refunds are {_pct(r['payer_refund_ratio'])} of their payments"),
    Feature("refund_burst",
            "CASE WHEN is_ref = 1 THEN (channel_30m - {expected}) / sqrt({expected} + 1) ELSE 0 END", "Poisson z",
            "refunds at this channel within 15 minutes either side, against the number usual for half an hour "
            "at that hour and weekday (refund spikes; 0 for payments)", "high",
            lambda r: (f"{_times(r['channel_30m'], r['kind'])} at {r['source']} within half an hour (usually "
                       f"{r['channel_expected']:.1f})")),
    Feature("order_payments", "order_payments", "payments",
            "payments at this channel of this amount for the same order id so far (2 or more: charged again; "
            "the parts of a split payment differ in amount)", "high",
            lambda r: (f"payment number {int(r['order_payments'])} of {display(abs(r['amount']), r['currency'])} "
                       f"for order {r['order_id']} at {r['source']}")),
    Feature("fee_rate_dev",
            "CASE WHEN is_pay = 1 AND rc.rate IS NOT NULL AND amount - discount > 0 "
            "AND abs(fee - round((amount - discount) * rc.rate)) > 1 "
            "THEN (fee - round((amount - discount) * rc.rate)) / (amount - discount) * 10000 ELSE 0 END",
            "basis points", "the fee charged beyond the rate card's (fee_rate) fee, as a rate of the amount; "
            "0 within one minor unit of rounding", "both",
            lambda r: (f"fee {display(r['fee'], r['currency'])} is {100 * r['fee_rate']:.2f}% of the amount; the "
                       f"rate card says {100 * r['rate_card']:.2f}%")),
    Feature("channel_rarity", "-ln(coalesce(pc.share, 0) + 0.001)", "-ln(share)",
            "how rarely this merchant is paid through this channel", "high",
            lambda r: f"paid through {r['source']}, which carries {_pct(r['channel_share'])} of this merchant's transactions"),
    Feature("order_delay", "CASE WHEN o_ts IS NULL THEN 0 ELSE ln(1 + abs(epoch(ts) - epoch(o_ts)) / 60) END",
            "ln(1 + minutes)", "time between our order and the channel's payment (0 when no order of ours is loaded)",
            "high", lambda r: f"the channel's payment came {_duration(r['order_delay_s'])} after our order"),
]
FEATURE_NAMES = [f.name for f in FEATURES]
BY_NAME = {f.name: f for f in FEATURES}


def _duration(seconds: float | None) -> str:
    s = abs(seconds or 0)
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s / 60:.0f} minutes"


# -- the relations ----------------------------------------------------------------------
#
# Speed (a million transactions scored, two million loaded): the slice is read narrow (ledger
# ids instead of a join, refund as a flag, source and kind as codes) in large batches, typed
# by Arrow, and everything per row that is not a join is numpy: local hour and weekday from
# one UTC offset per quarter hour (DuckDB's time-zone conversion took about a second per
# million rows), the windows from one sort per group key of the rows not alone in their
# group (DuckDB's RANGE frames: 16.7 s per million rows). DuckDB is left the joins with the
# profile and our orders, on all cores.

# Time windows over the loaded slice, to the minute: (column, group key, counted rows, minutes
# before, minutes after). "same kind" counts payments for a payment and refunds for a refund.
# A count includes the row itself.
WINDOWS = [
    ("payer_10m", "k_payer", "same kind", 10, 0),
    ("payer_1h", "k_payer", "same kind", 60, 0),
    ("payer_24h", "k_payer", "same kind", 1440, 0),
    ("payer_refunds_24h", "k_payer", "is_ref", 1440, 0),  # the payer's refunds, whatever this row is
    ("payer_payments_24h", "k_payer", "is_pay", 1440, 0),
    ("same_amount_1h", "k_amount", None, 60, 0),
    # centred: the day is scored after the fact, so every refund of a spike sees all of it
    ("channel_30m", "k_channel", None, 15, 15),
    ("order_payments", "k_order", None, 10**9, 0),  # the order's payments of this amount so far
]
NO_PAYER = {"payer_10m": 1, "payer_1h": 1, "payer_24h": 1, "payer_refunds_24h": 0, "payer_payments_24h": 0,
            "same_amount_1h": 1}

# The groups of the windows, hashed by DuckDB (in parallel): a window key is the group's hash
# in the high bits and the minute in the low ones (see `_keys`).
GROUP_SQL = """
SELECT hash(nullif(payer, '')) AS k_payer,
       hash(nullif(payer, ''), kind, amount) AS k_amount,
       hash(source, kind) AS k_channel,
       hash(source, kind, nullif(order_id, ''), amount) AS k_order
FROM tx
"""


def time_bits(first, last) -> int:
    """Low bits that hold the minutes of a slice from the day before `first` to `last`, with room."""
    return int((((last - first).days + 4) * 1440).bit_length())


def _micros(col: pa.ChunkedArray) -> np.ndarray:
    """UTC microseconds since the epoch: SQLite hands times back as text, PostgreSQL typed."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.timestamp("us"))
    elif col.type != pa.timestamp("us"):
        col = col.cast(pa.timestamp("us", tz=col.type.tz))
    return col.cast(pa.int64()).to_numpy()


def _days(col: pa.ChunkedArray) -> np.ndarray:
    """Days since the epoch of a date column (text from SQLite)."""
    if not pa.types.is_date32(col.type):
        col = pc.cast(col, pa.date32())
    return col.cast(pa.int32()).to_numpy()


def _flag(col: pa.ChunkedArray, value: str) -> np.ndarray:
    return pc.equal(col, value).to_numpy(zero_copy_only=False)


def local_minutes(utc_minutes: np.ndarray, timezone: str) -> np.ndarray:
    """Local minutes since the epoch: one UTC offset per quarter hour (every time zone in use
    changes its offset on a quarter hour), looked up for every row."""
    if len(utc_minutes) == 0:
        return utc_minutes
    quarter = utc_minutes // 15
    first, last = int(quarter.min()), int(quarter.max())
    if last - first <= 400 * 96:
        quarters, index = np.arange(first, last + 1), quarter - first
    else:  # a stray time far from the rest: only the quarters that occur
        quarters, index = np.unique(quarter, return_inverse=True)
    zone = ZoneInfo(timezone)
    offsets = np.array([datetime.fromtimestamp(int(q) * 900, zone).utcoffset() // timedelta(minutes=1)
                        for q in quarters], np.int64)
    return utc_minutes + offsets[index]


def _maybe_grouped(v: np.ndarray, time_bits: int) -> np.ndarray:
    """Which rows may share their group with another row (the rest are alone in theirs, as
    most are in the payer, same-amount and order keys: a million transactions, a million
    orders). Bucketed twice by slices of the group bits (above `time_bits`), a count per
    bucket each: a row alone in its bucket in either is alone in its group, since rows of one
    group share every group bit. Linear, where sorting every row was not."""
    n = len(v)
    nb = min(max(n.bit_length() + 1, 8), 22, (64 - time_bits) // 2)  # 2^22 counts: 32 MB
    maybe = np.ones(n, bool)
    for shift in (64 - nb, 64 - 2 * nb):
        b = v >> np.uint64(shift)
        b &= np.uint64((1 << nb) - 1)
        b = b.view(np.int64)  # below 2^22: the same numbers, no copy
        maybe &= (np.bincount(b, minlength=1 << nb) > 1)[b]  # a gather from 4 MB of flags, not 32 MB of counts
        if maybe.mean() > 0.8:  # a few large groups (the channel key): nothing to leave out
            break
    return maybe


def _sort_order(v: np.ndarray, time_bits: int) -> np.ndarray:
    """Indices that sort `v` (ties in any order: they are counted by value). A key of a few
    groups (the channel key: source and kind) is sorted a group at a time by its minutes
    alone, 16-bit integers that numpy sorts by radix; other keys by a plain argsort."""
    if time_bits <= 16 and len(v) > 1 << 16:
        groups = np.sort(pc.unique(v >> np.uint64(time_bits)).to_numpy())
        if len(groups) <= 16:
            minutes = (v & np.uint64((1 << time_bits) - 1)).astype(np.uint16)
            parts = []
            for g in groups:
                rows = np.flatnonzero((v >> np.uint64(time_bits)) == g)
                parts.append(rows[np.argsort(minutes[rows], kind="stable")])
            return np.concatenate(parts)
    return np.argsort(v)


def _windows(keys: dict[str, np.ndarray], t_min: np.ndarray, top: int, masks: dict[str, np.ndarray],
             scored: np.ndarray) -> dict[str, np.ndarray]:
    """The WINDOWS counts of the `scored` rows (0 elsewhere). A row alone in its group
    (`_maybe_grouped`) counts itself; the others are sorted per key as (group, minute)
    integers: a window's bounds are two searchsorted calls (shared by the windows with the
    same bound), and a count of some rows only (payments, refunds) is a difference of their
    running count at the bounds. The bounds are clamped to the group's own range of
    integers. Keys run on two threads (numpy sorts without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    n = len(t_min)
    out = {name: np.zeros(n, np.int64) for name, *_ in WINDOWS}
    top_ = np.uint64(top)

    def itself(member: str | None, rows: np.ndarray) -> np.ndarray | int:
        """The count of a window holding only the row itself."""
        if member is None:
            return 1
        if member == "same kind":
            return np.where(masks["is_pay"][rows], masks["is_pay"][rows], masks["is_ref"][rows])
        return masks[member][rows]

    def per_key(key: str) -> None:
        v = keys[key]
        maybe = _maybe_grouped(v, top.bit_length())
        alone = np.flatnonzero(scored & ~maybe)
        sub = None if maybe.all() else np.flatnonzero(maybe)
        part = v if sub is None else v[sub]
        local = _sort_order(part, top.bit_length())
        order = local if sub is None else sub[local]
        vs = part[local]
        pos = np.flatnonzero(scored[order])
        rows, q = order[pos], vs[pos]
        qt = q & top_  # the minute: the low bits
        bounds: dict = {}

        def bound(side: str, minutes: int) -> np.ndarray:
            if (side, minutes) not in bounds:
                m = np.uint64(minutes)
                edge = q - np.minimum(qt, m) if side == "left" else q + np.minimum(top_ - qt, m)
                bounds[(side, minutes)] = np.searchsorted(vs, edge, side)
            return bounds[(side, minutes)]

        running: dict = {}

        def within(member: str | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            if member is None:
                return hi - lo
            if member not in running:
                running[member] = np.concatenate(([0], np.cumsum(masks[member][order], dtype=np.int64)))
            c = running[member]
            return c[hi] - c[lo]

        for name, k, member, before, after in WINDOWS:
            if k != key:
                continue
            lo, hi = bound("left", before), bound("right", after)
            if member == "same kind":
                counts = np.where(masks["is_pay"][rows], within("is_pay", lo, hi), within("is_ref", lo, hi))
            else:
                counts = within(member, lo, hi)
            out[name][rows] = counts
            out[name][alone] = itself(member, alone)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(per_key, sorted({k for _, k, *_ in WINDOWS})))
    for name, value in NO_PAYER.items():
        out[name][masks["no_payer"]] = value
    out["order_payments"][masks["no_order"] | ~masks["is_pay"]] = 1
    return out


# The merchant's history, summarised once per model (from `w` over the training window).
PROFILE_SQL = {
    "amount": """
        WITH x AS (SELECT source, kind, ln(greatest(abs_amount, 1)) AS v, abs_amount FROM w),
             m AS (SELECT source, kind, median(v) AS med, median(abs_amount) AS median_minor FROM x GROUP BY ALL)
        SELECT m.source, m.kind, m.med, median(abs(x.v - m.med)) AS mad, any_value(m.median_minor) AS median_minor
        FROM x JOIN m USING (source, kind) GROUP BY ALL""",
    "hour": "SELECT hr, count(*) / (SELECT count(*) FROM w) AS share FROM w GROUP BY hr",
    "dow": "SELECT dow, count(*) / (SELECT count(*) FROM w) AS share FROM w GROUP BY dow",
    "channel": "SELECT source, count(*) / (SELECT count(*) FROM w) AS share FROM w GROUP BY source",
    "payer": """SELECT payer, sum(is_pay) AS payments, sum(is_ref) AS refunds,
                       median(abs_amount) FILTER (WHERE is_pay = 1) AS median_minor
                FROM w WHERE payer IS NOT NULL GROUP BY payer""",
    "volume": """SELECT source, kind, count(*) / (SELECT greatest(1, count(DISTINCT day)) FROM w) AS per_day
                 FROM w GROUP BY ALL""",
}

# Our orders and the payer profile (a million rows each at the sizes of the bench) are joined
# on 64-bit hashes of their text keys: DuckDB joins integers in a third of the time it takes
# to join strings. Two different keys with the same hash would lend one transaction another
# key's order time or payer history; at a million keys a day that is about one day in ten
# million.
FEATURE_SQL = """
SELECT w.id, w.day, w.source, w.kind, w.amount, w.fee, w.payer,
    {features},
    -- context for the words
    pa.median_minor AS merchant_median, pp.median_minor AS payer_median, coalesce(pp.payments, 0) AS payer_history,
    w.local_minute, coalesce(ph.share, 0) AS hour_share, w.dow,
    coalesce(pd.share, 0) AS dow_share, coalesce(pc.share, 0) AS channel_share, channel_30m, w.order_id,
    {expected} AS channel_expected, rc.rate AS rate_card,
    CASE WHEN amount - discount > 0 THEN fee / (amount - discount) END AS fee_rate,
    epoch(ts) - epoch(o_ts) AS order_delay_s
FROM (SELECT w.*, o.o_ts FROM w LEFT JOIN (
          SELECT hash(source, order_id) AS k, min(occurred_at) AS o_ts FROM orders WHERE order_id <> '' GROUP BY k) o
      ON o.k = hash(w.source, w.order_id) AND w.is_pay = 1 AND w.order_id IS NOT NULL
      WHERE w.scored) w
LEFT JOIN p_amount pa ON pa.source = w.source AND pa.kind = w.kind
LEFT JOIN (SELECT hash(payer) AS k, * FROM p_payer) pp ON pp.k = hash(w.payer) AND w.payer IS NOT NULL
LEFT JOIN p_hour ph ON ph.hr = w.hr
LEFT JOIN p_dow pd ON pd.dow = w.dow
LEFT JOIN p_channel pc ON pc.source = w.source
LEFT JOIN p_volume pv ON pv.source = w.source AND pv.kind = w.kind
LEFT JOIN rate_card rc ON rc.source = w.source
"""

# usual transactions of this kind at this channel in half an hour like this one (hour x weekday)
EXPECTED_30M = "(coalesce(pv.per_day, 0) * coalesce(ph.share, 1 / 24) * 7 * coalesce(pd.share, 1 / 7) / 2)"

# source and kind: a code per row and the few texts once (DuckDB reads them as the same
# VARCHAR, hashes and joins them alike, and hands them back as plain text)
CODED = pa.dictionary(pa.int8(), pa.string())
TX_SCHEMA = pa.schema([
    ("id", pa.int64()), ("source", CODED), ("kind", CODED), ("amount", pa.int64()),
    ("fee", pa.int64()), ("discount", pa.int64()), ("occurred_at", pa.timestamp("us")),
    ("business_day", pa.date32()), ("payer", pa.string()), ("order_id", pa.string()),
])
ORDERS_SCHEMA = pa.schema([("source", CODED), ("order_id", pa.string()), ("occurred_at", pa.timestamp("us"))])
KINDS = pa.array(["payment", "refund"], pa.string())


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ledgers(url: str, merchant_id: str, side: str) -> dict[int, str]:
    """ledger id -> source of the merchant's ledgers on `side` (records are read by ledger id,
    as `core.store` does: no join, no source text per row)."""
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, source FROM ledger WHERE merchant_id = {_lit(merchant_id)} AND side = {_lit(side)}")
        return dict(cur.fetchall())


READ_BATCH = 1 << 16


def _read(url: str, ledger: int, source: str, day: date, columns: str, where: str, schema: pa.Schema) -> pa.Table:
    """Records of one ledger and one business day, typed as `schema`: `source` and
    `business_day` are the same on every row and not read (reading them cost a tenth of a
    second per million rows each), `is_ref` becomes `kind`, times are typed by Arrow, a
    column of `schema` the query does not read is NULL. From SQLite in batches of READ_BATCH
    rows, not the driver's 1024: every later step (Arrow kernels, numpy conversions, DuckDB's
    scans) pays per chunk, 1.2 CPU s of a 1M-day scoring for 4,000 chunks."""
    sql = f"SELECT {columns} {records_of_days(ledger, day, day, is_sqlite(url))} AND {where}"
    with adbc_connect(url) as conn, conn.cursor() as cur:
        if is_sqlite(url):
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(READ_BATCH)})
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    n = table.num_rows
    if n == 0:
        return schema.empty_table()
    cols = {}
    for name in schema.names:
        if name == "source":
            cols[name] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([source]))
        elif name == "business_day":
            cols[name] = pa.repeat(pa.scalar(day, pa.date32()), n)
        elif name == "kind":  # is_ref is the code
            cols[name] = pa.chunked_array([pa.DictionaryArray.from_arrays(c, KINDS)
                                           for c in pc.cast(table["is_ref"], pa.int8()).chunks], CODED)
        elif name not in table.column_names:
            cols[name] = pa.nulls(n, schema.field(name).type)
        elif name == "occurred_at":
            cols[name] = pa.array(_micros(table[name]), pa.int64()).cast(pa.timestamp("us"))
        else:
            cols[name] = table[name].cast(schema.field(name).type)
    return pa.table(cols, schema=schema)


# '' for NULL text: ADBC's SQLite driver guesses a column's type from its first rows.
TX_COLUMNS = ("CAST(r.kind = 'refund' AS INTEGER) AS is_ref, r.amount, r.occurred_at, "
              "coalesce(r.payer, '') AS payer, coalesce(r.order_id, '') AS order_id")
TX_WHERE = "r.kind IN ('payment', 'refund')"


def _days_of(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def load_slice(url: str, merchant_id: str, first: date, last: date) -> tuple[pa.Table, pa.Table]:
    """-> (transactions, orders) of the slice that features for [first, last] read:
    - the merchant's channel payments and refunds of [first, last], then those of the day
      before (context for the 24-hour windows and the profile: only the columns those read;
      id, fee and discount are NULL there);
    - our own payment records (source = the channel the order was paid through) of the day
      before to `last`: order id and time.
    Read a ledger and a day at a time, on threads (SQLite and Arrow release the GIL while they
    read). A ledger's rows of a day come in id order and a day's file is stored in one piece,
    so the scored parts put in the order of their first ids are in id order, and no sort is
    needed (`by_id` checks)."""
    from concurrent.futures import ThreadPoolExecutor

    channel, internal = _ledgers(url, merchant_id, "channel"), _ledgers(url, merchant_id, "internal")
    before = first - timedelta(days=1)
    with ThreadPoolExecutor(4) as pool:
        scored = [pool.submit(_read, url, i, source, day, "r.id, r.fee, r.discount, " + TX_COLUMNS, TX_WHERE,
                              TX_SCHEMA) for i, source in channel.items() for day in _days_of(first, last)]
        context = [pool.submit(_read, url, i, source, before, TX_COLUMNS, TX_WHERE, TX_SCHEMA)
                   for i, source in channel.items()]
        orders = [pool.submit(_read, url, i, source, day, "coalesce(r.order_id, '') AS order_id, r.occurred_at",
                              "r.kind = 'payment'", ORDERS_SCHEMA)
                  for i, source in internal.items() for day in _days_of(before, last)]
        parts = sorted((t for t in (f.result() for f in scored) if t.num_rows), key=lambda t: t["id"][0].as_py())
        tx = pa.concat_tables([by_id(pa.concat_tables(parts or [TX_SCHEMA.empty_table()])),
                               *(f.result() for f in context)])
        return tx, pa.concat_tables([ORDERS_SCHEMA.empty_table(), *(f.result() for f in orders)])


def by_id(table: pa.Table) -> pa.Table:
    """`table` in id order: as it is when it already is (one pass over the ids); else its
    chunks put in the order of their first ids, when that is enough (DuckDB hands back each
    thread's part in id order, in the order the threads finished: sorting a million wide
    rows took a second); else sorted."""
    if _ascending(table["id"]):
        return table
    chunks = sorted((b for b in table.to_batches() if b.num_rows), key=lambda b: b["id"][0].as_py())
    regrouped = pa.Table.from_batches(chunks, table.schema)
    if _ascending(regrouped["id"]):
        return regrouped
    return table.take(pc.sort_indices(table["id"]))


def _ascending(ids: pa.ChunkedArray) -> bool:
    v = ids.to_numpy()
    return len(v) < 2 or bool((v[1:] > v[:-1]).all())


def in_days(tx: pa.Table, first: date, last: date) -> np.ndarray:
    """Which rows of `tx` have their business day in [first, last]."""
    day, epoch = _days(tx["business_day"]), date(1970, 1, 1)
    return (day >= (first - epoch).days) & (day <= (last - epoch).days)


def connect(tx: pa.Table, orders: pa.Table, timezone: str, rate_card: dict[str, float],
            first: date, last: date, rows: np.ndarray | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `w`: every row of the loaded slice (`tx`: days `first` - 1 to
    `last`, see `load_slice`), with local hour and weekday for all, and the windows for the
    rows `features` will describe (`scored`): those of [first, last], or the `rows` given (a
    mask over `tx`: training describes a sample of its window)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("tx", tx)
    con.register("orders", orders)
    con.register("rate_card", pa.table({"source": pa.array(list(rate_card), pa.string()),
                                        "rate": pa.array(list(rate_card.values()), pa.float64())}))
    lo, hi = slice_for(first, last)
    bits = time_bits(lo, hi)
    t0 = (datetime.combine(lo, datetime.min.time()) - timedelta(days=2) - datetime(1970, 1, 1)) // timedelta(minutes=1)
    utc = _micros(tx["occurred_at"]) // 60_000_000
    local = local_minutes(utc, timezone)
    t_min = np.clip(utc - t0, 0, (1 << bits) - 1).astype(np.uint64)
    scored = in_days(tx, first, last) if rows is None else rows
    is_ref = _flag(tx["kind"], "refund")
    masks = {"is_ref": is_ref, "is_pay": _flag(tx["kind"], "payment"), "no_payer": _flag(tx["payer"], ""),
             "no_order": _flag(tx["order_id"], "")}
    high = ~np.uint64((1 << bits) - 1)
    keys = con.sql(GROUP_SQL).fetchnumpy() if len(tx) else {}
    for h in keys.values():  # in place: four fewer arrays of a row each to allocate
        h &= high
        h |= t_min
    counts = _windows(keys, t_min, (1 << bits) - 1, masks, scored) if len(tx) else \
        {name: np.zeros(0, np.int64) for name, *_ in WINDOWS}
    extra = {"scored": scored, "is_pay": masks["is_pay"].astype(np.int32), "is_ref": is_ref.astype(np.int32),
             "hr": (local // 60) % 24, "dow": (local // 1440 + 3) % 7 + 1,  # 1970-01-01 was a Thursday (4)
             "local_minute": local % 1440, **counts}
    wt = tx
    for name, values in extra.items():
        wt = wt.append_column(name, pa.array(values))
    con.register("wt", wt)
    con.execute("CREATE TEMP VIEW w AS SELECT * EXCLUDE (business_day) REPLACE (nullif(payer, '') AS payer, "
                "nullif(order_id, '') AS order_id), business_day AS day, occurred_at AS ts, abs(amount) AS abs_amount "
                "FROM wt")
    return con


def profile(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """The merchant's usual, from every row of `w` (the training window)."""
    return {name: con.sql(sql).to_arrow_table() for name, sql in PROFILE_SQL.items()}


def features(con: duckdb.DuckDBPyConnection, prof: dict[str, pa.Table], currency: str,
             in_id_order: bool = True) -> pa.Table:
    """One row per transaction `connect` marked `scored`: id, day, the FEATURES columns and
    context; in id order, or as DuckDB's threads hand their parts back (`in_id_order=False`,
    for a caller that orders only the few columns it needs: putting a million wide rows in
    order costs up to a second)."""
    for name, table in prof.items():
        con.register(f"p_{name}", table)
    cols = ",\n    ".join(f"CAST({f.sql} AS DOUBLE) AS {f.name}" for f in FEATURES)
    sql = FEATURE_SQL.format(features=cols, expected="{expected}")
    sql = sql.replace("{scale}", str(10 ** exponent(currency))).replace("{expected}", EXPECTED_30M)
    # no ORDER BY (sorting a million wide rows took a second): the scored rows of `w` are in id
    # order (`load_slice`), and each part a DuckDB thread hands back keeps that order
    table = con.sql(sql).to_arrow_table()
    return by_id(table) if in_id_order else table


def slice_for(first: date, last: date) -> tuple[date, date]:
    """Days to load so the 24-hour windows of `first` see the day before."""
    return first - timedelta(days=1), last

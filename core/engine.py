"""Matching engine: exact, exclusive and explainable, vectorised in DuckDB.

Input: one source's records from both sides (our books, the channel's statements) for a
window of days around the business day D, plus the rules (`core.rules.Rules`, data from
config). Output: every match (with the rule that made it and its status) and every typed
difference anchored on D.

The passes run in order; each consumes what it confirmed, so a record is matched at most
once (exclusive on both sides):

    exact_txn_id     the channel transaction id, 1:1
    exact_order_id   the merchant order id, 1:1; with several candidates, the one whose
                     amount agrees (the others are then duplicate charges)
    split_payment    one order paid by several channel payments that add up
    merged_payment   one channel payment whose memo names several orders that add up
    fuzzy            what is left (bank lines): same amount within tolerance, within the
                     time window, scored on memo and payer; confirmed only for a mutual,
                     untied best above the threshold, else `suggested` for a person

A confirmed match still has its amount, currency and status compared: a key never skips
the checks. Then come the findings (see FINDINGS at the bottom), each one named rule.

Where the million rows go: the inputs stay Arrow tables behind DuckDB views; the first pass
is one full outer join that also marks the pairs the findings must look at again; every
later step reads small tables (what is free, the suspect pairs' facts, what is not a
payment), picked out of the Arrow inputs by id. The wide text (payer, memo, time, ref) is
read from the database only for what the exact passes leave (`with_details`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.rules import Rules

PAID = ("paid", "refunded", "partially_refunded")
NOT_PAID = ("unpaid", "closed")

# What every pass reads, for every record of the window. The wide text (ref, payer, memo,
# occurred_at) is needed only for what the exact passes leave, so the loader may leave it
# out and hand the engine a `details` callable instead (core.runs does; a million rows a
# side loads in about half the time).
_COLUMNS = ("id, kind, txn_id, order_id, amount, currency, {fee} AS fee, {discount} AS discount, status, "
            "CAST(business_day AS DATE) AS day, line, file_id")
# fee and discount are the channel's: our books' side may leave them out (0)
_OPTIONAL = ("fee", "discount")
_DETAIL_COLUMNS = "id, ref, payer, memo, CAST(occurred_at AS TIMESTAMP) AS ts"

INPUT_SCHEMA = pa.schema([
    ("id", pa.int64()), ("kind", pa.string()), ("ref", pa.string()), ("txn_id", pa.string()),
    ("order_id", pa.string()), ("amount", pa.int64()), ("currency", pa.string()), ("fee", pa.int64()),
    ("discount", pa.int64()), ("status", pa.string()), ("occurred_at", pa.timestamp("us")),
    ("business_day", pa.date32()), ("payer", pa.string()), ("memo", pa.string()), ("line", pa.int64()),
    ("file", pa.string()),
])
# the narrow form (core.store.load_match_records): files by id, no wide text
MATCH_SCHEMA = pa.schema([f for f in INPUT_SCHEMA if f.name not in ("ref", "occurred_at", "payer", "memo", "file")]
                         + [("file_id", pa.int64())])
DETAIL_SCHEMA = pa.schema([("id", pa.int64()), ("ref", pa.string()), ("payer", pa.string()), ("memo", pa.string()),
                           ("occurred_at", pa.timestamp("us"))])

# details(side, ids) -> the DETAIL_SCHEMA columns of those records; side: internal | channel
Details = Callable[[str, pa.Array], pa.Table]


@dataclass(frozen=True)
class Window:
    day: date
    lag_days: int
    internal_through: date | None  # latest business day our books have been delivered for
    channel_through: date | None  # latest business day the channel's statements cover

    @property
    def first(self) -> date:
        return self.day - timedelta(days=self.lag_days)

    @property
    def last(self) -> date:
        return self.day + timedelta(days=self.lag_days)

    # Records are loaded a further lag on each side, so that every item within
    # [first, last] also has its true counterpart loaded and is never mistaken for free.
    @property
    def load_first(self) -> date:
        return self.day - timedelta(days=2 * self.lag_days)

    @property
    def load_last(self) -> date:
        return self.day + timedelta(days=2 * self.lag_days)


@dataclass
class Result:
    findings: list[dict]
    stats: dict
    matches: dict[str, int] = field(default_factory=dict)  # rule -> confirmed matches anchored on D


def _lit_date(d: date | None) -> str:
    return f"DATE '{d.isoformat()}'" if d else "DATE '0001-01-01'"


def _conform(table: pa.Table | None, file_ids: dict[str, int], with_details: bool) -> pa.Table:
    """Accept tables missing optional columns (tests build small ones by hand), and tables
    that name their files by path (`file`) instead of by id (`file_id`, paths in `file_ids`)."""
    if table is None or table.num_rows == 0:
        table = INPUT_SCHEMA.empty_table()
    if "file_id" not in table.column_names:
        files = table["file"] if "file" in table.column_names else pa.nulls(table.num_rows, pa.string())
        files = files.cast(pa.string())
        for path in pc.unique(files).to_pylist():
            if path is not None and path not in file_ids:
                file_ids[path] = max(file_ids.values(), default=0) + 1
        positions = pc.index_in(files, value_set=pa.array(list(file_ids), pa.string()))
        table = table.append_column("file_id", pc.take(pa.array(list(file_ids.values()), pa.int64()), positions))
    fields = [f for f in MATCH_SCHEMA if f.name not in _OPTIONAL or f.name in table.column_names]
    fields += [f for f in DETAIL_SCHEMA if f.name != "id"] if with_details else []
    cols = [table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in fields]
    return pa.Table.from_arrays(cols, names=[f.name for f in fields])


def _columns(table: pa.Table) -> str:
    """The engine's view of one side's input table."""
    return _COLUMNS.format(**{c: f"coalesce({c}, 0)" if c in table.column_names else "CAST(0 AS BIGINT)"
                              for c in _OPTIONAL})


def reconcile(internal: pa.Table, channel: pa.Table, window: Window, rules: Rules,
              duplicates: pa.Table | None = None, details: Details | None = None,
              files: dict[int, str] | None = None) -> Result:
    """Match one source's two sides and report the differences anchored on window.day.

    `internal`/`channel` carry the MATCH_SCHEMA columns (or the whole INPUT_SCHEMA, paths in
    `file`); without the wide text, `details` fetches it for the records that need it.
    `files` maps file ids to paths for the evidence."""
    file_ids = {path: i for i, path in (files or {}).items()}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    internal = _conform(internal, file_ids, details is None)
    channel = _conform(channel, file_ids, details is None)
    con.register("i_in", internal)
    con.register("c_in", channel)
    con.register("rates", rules.fx_table())
    con.register("id_patterns", pa.table({"pattern": pa.array(rules.id_patterns, pa.string())}))
    ctx = _Context(window, rules, details, {"i": internal, "c": channel})
    con.execute(f"""
        -- views over the Arrow tables: copying two million rows into DuckDB costs more than
        -- the few scans the passes make
        CREATE TEMP VIEW i AS SELECT {_columns(internal)} FROM i_in;
        CREATE TEMP VIEW c AS SELECT {_columns(channel)} FROM c_in;
        CREATE TEMP VIEW ip AS SELECT * FROM i WHERE kind = 'payment';
        CREATE TEMP VIEW cp AS SELECT * FROM c WHERE kind = 'payment' AND status = 'success';
        -- m: every match. grp: the internal record id, or minus the channel record id for a
        -- merged payment; iday: the internal record's day (the day's figures count by it).
        -- The first pass's (nearly all) are kept as id pairs (m1): ten million rows of
        -- rule and status text cost more to write than the join that found them.
        CREATE TEMP TABLE m1 (iid BIGINT, cid BIGINT, iday DATE);
        CREATE TEMP TABLE m_rest (iid BIGINT, cid BIGINT, grp BIGINT, rule VARCHAR, status VARCHAR, score DOUBLE,
                                  iday DATE);
        CREATE TEMP VIEW m AS
        SELECT iid, cid, iid AS grp, 'exact_txn_id' AS rule, 'confirmed' AS status, CAST(1 AS DOUBLE) AS score, iday
        FROM m1 UNION ALL SELECT * FROM m_rest;
    """)
    # what is not a payment (refunds; reversed, failed channel rows) is a sliver: kept apart
    # once, so the findings about it never scan a million rows again
    kind, status = (pc.equal(channel[n], v) for n, v in (("kind", "payment"), ("status", "success")))
    _subset(con, ctx, "i_other", "i", pc.fill_null(pc.not_equal(internal["kind"], "payment"), True))
    _subset(con, ctx, "c_other", "c", pc.invert(pc.fill_null(pc.and_kleene(kind, status), False)))
    con.execute("""
        -- our payments the channel reversed (revoked): explained, never fuzzy-matched
        CREATE TEMP TABLE c_reversed AS SELECT txn_id, order_id FROM c_other
            WHERE kind = 'payment' AND status IN ('revoked', 'closed', 'reversed');
        CREATE TEMP TABLE i_reversed (id BIGINT);
    """)
    if con.execute("SELECT count(*) FROM c_reversed").fetchone()[0]:
        con.execute("""
            INSERT INTO i_reversed
            SELECT ip.id FROM ip JOIN c_reversed x ON x.txn_id = ip.txn_id
            UNION SELECT ip.id FROM ip JOIN c_reversed x ON x.order_id = ip.order_id""")
    for match_pass in PASSES:
        match_pass(con, ctx)
    _pairs(con, ctx)
    paths = {i: path for path, i in file_ids.items()}
    findings = []
    for finding in FINDINGS:
        findings += sorted(_rows(con.sql(finding(ctx)), paths), key=_identity)
    if duplicates is not None and duplicates.num_rows:
        con.register("dup_in", duplicates)
        findings += sorted(_rows(con.sql(_duplicate_records(ctx))), key=_identity)
    stats, matches = _stats(con, ctx)
    con.close()
    return Result(findings, stats, matches)


@dataclass
class _Context:
    window: Window
    rules: Rules
    details: Details | None = None
    inputs: dict[str, pa.Table] = field(default_factory=dict)  # i, c: the Arrow tables behind the views

    @property
    def d(self) -> str:
        return _lit_date(self.window.day)

    def tol(self, amount: str) -> str:
        return self.rules.tolerance_sql(amount)

    def in_transit(self, side_delivered: str, day: str) -> str:
        """An item of `day` waits while the other side has delivered less than day + lag."""
        through = self.window.internal_through if side_delivered == "internal" else self.window.channel_through
        return f"({_lit_date(through)} < {day} + {int(self.window.lag_days)})"


def _subset(con, ctx: "_Context", name: str, side: str, mask, where: str = "true", replace: bool = False) -> None:
    """CREATE TEMP TABLE `name`: the rows of side `i` or `c` (the engine's columns) that `mask`
    (Arrow booleans over the input) selects, and `where`. Filtering the Arrow table picks a
    few rows in milliseconds; a DuckDB scan of the view converts every row first (~60 ms a
    million rows a scan)."""
    table = ctx.inputs[side].filter(mask).combine_chunks()
    con.register(f"{name}_in", table)
    con.execute(f"CREATE {'OR REPLACE ' if replace else ''}TEMP TABLE {name} AS "
                f"SELECT * FROM (SELECT {_columns(table)} FROM {name}_in) WHERE {where}")
    con.unregister(f"{name}_in")


def _isin(column, con, sql: str, skip_nulls: bool = False):
    """Arrow booleans: which values of `column` the (small) SQL result holds."""
    values = con.sql(sql).to_arrow_table().column(0).combine_chunks()
    return pc.is_in(column, value_set=values.cast(column.type), skip_nulls=skip_nulls)


def _identity(f: dict) -> tuple:
    """A finding's identity (its break's key, core.runs.break_key): DuckDB hands rows back in
    no set order, and the order is the order breaks get their ids and alert cards theirs."""
    return f["type"], f["kind"], f["anchor_side"], str(f["anchor_ref"])


def _rows(rel, paths: dict[int, str] | None = None) -> list[dict]:
    """Findings as dicts; evidence names files by id inside DuckDB, by path here."""
    names = rel.columns
    rows = [dict(zip(names, r)) for r in rel.fetchall()]
    if paths is not None:
        for r in rows:
            r["evidence"] = [{**e, "file": paths.get(e["file"])} for e in r["evidence"]]
    return rows


# -- passes ----------------------------------------------------------------------------

def _claim(con, sql: str) -> None:
    """Record a pass's matches; what it confirmed leaves the free sets the next passes read."""
    con.execute("CREATE OR REPLACE TEMP TABLE m_new AS SELECT * FROM m_rest LIMIT 0")  # m's column names
    con.execute(f"INSERT INTO m_new {sql}")
    con.execute("INSERT INTO m_rest SELECT * FROM m_new")
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ip_free'").fetchall()[0][0]:
        con.execute("DELETE FROM ip_free WHERE id IN (SELECT iid FROM m_new WHERE status = 'confirmed')")
        con.execute("DELETE FROM cp_free WHERE id IN (SELECT cid FROM m_new WHERE status = 'confirmed')")


def _suspect(ctx: "_Context", i: str, c: str) -> str:
    """SQL: a 1:1 pair the findings must look at again (other currency, unpaid in our books,
    amounts that do not agree): `_pairs` flags exactly these (and the day's)."""
    explained = (f"(abs({c}.amount - {i}.amount) <= {ctx.tol(i + '.amount')} "
                 f"OR abs({c}.amount - {c}.discount - {i}.amount) <= {ctx.tol(i + '.amount')})")
    return f"({i}.currency <> {c}.currency OR {i}.status IN {NOT_PAID} OR NOT {explained})"


def exact_txn_id(con, ctx: _Context) -> None:
    """1:1 by transaction id; where an id repeats on a side, the earliest record (day, line)
    on each side pairs up. Only the few contested pairs are ranked: ranking a million
    uncontested ones (window functions) cost more than the rest of the pass.

    One full outer join does the pass's million-row work: what it leaves unmatched on either
    side is free, and the facts the findings need of a pair are looked at while both sides
    are joined, so a million clean pairs are never joined again."""
    con.execute(f"""
        CREATE TEMP TABLE jx AS SELECT ip.id AS iid, cp.id AS cid, ip.day AS iday, {_suspect(ctx, 'ip', 'cp')} AS suspect
        FROM ip FULL OUTER JOIN cp ON ip.txn_id = cp.txn_id;
        CREATE TEMP VIEW j AS SELECT * FROM jx WHERE iid IS NOT NULL AND cid IS NOT NULL;
        CREATE TEMP TABLE j_suspect AS SELECT iid, cid FROM j WHERE suspect;
    """)
    _repeated(con, "j", "iid", "j_many_i")
    _repeated(con, "j", "cid", "j_many_c")
    con.execute("""
        CREATE TEMP TABLE contested (iid BIGINT, cid BIGINT, iday DATE, iline BIGINT, cday DATE, cline BIGINT);
        CREATE TEMP TABLE j_won (iid BIGINT, cid BIGINT, iday DATE);
    """)
    if con.execute("SELECT (SELECT count(*) FROM j_many_i) + (SELECT count(*) FROM j_many_c)").fetchone()[0]:
        con.execute("""
            INSERT INTO contested
            SELECT j.iid, j.cid, j.iday, ip.line, cp.day, cp.line FROM j JOIN ip ON ip.id = j.iid JOIN cp ON cp.id = j.cid
            WHERE j.iid IN (SELECT iid FROM j_many_i) OR j.cid IN (SELECT cid FROM j_many_c);
            INSERT INTO j_won SELECT iid, cid, iday FROM (
                SELECT iid, cid, iday, row_number() OVER (PARTITION BY iid ORDER BY cday, cline, cid) AS ri,
                       row_number() OVER (PARTITION BY cid ORDER BY iday, iline, iid) AS rc
                FROM contested)
            WHERE ri = 1 AND rc = 1;
        """)
    # the first pass's matches (m1, read through m); no free sets to update yet
    con.execute("DROP TABLE m1")
    if con.execute("SELECT count(*) FROM contested").fetchone()[0]:
        con.execute("""
            CREATE TEMP TABLE m1 AS
            SELECT iid, cid, iday FROM j
            WHERE iid NOT IN (SELECT iid FROM j_many_i) AND cid NOT IN (SELECT cid FROM j_many_c)
            UNION ALL SELECT iid, cid, iday FROM j_won""")
    else:  # every pair of the join is a match: no copy
        con.execute("CREATE TEMP VIEW m1 AS SELECT iid, cid, iday FROM jx WHERE iid IS NOT NULL AND cid IS NOT NULL")
    _subset(con, ctx, "ip_free", "i", _isin(ctx.inputs["i"]["id"], con, "SELECT iid FROM jx WHERE cid IS NULL "
                                            "UNION ALL (SELECT iid FROM contested EXCEPT SELECT iid FROM j_won)"),
            "kind = 'payment'")
    _subset(con, ctx, "cp_free", "c", _isin(ctx.inputs["c"]["id"], con, "SELECT cid FROM jx WHERE iid IS NULL "
                                            "UNION ALL (SELECT cid FROM contested EXCEPT SELECT cid FROM j_won)"),
            "kind = 'payment' AND status = 'success'")
    con.execute("DROP VIEW j; DROP TABLE j_many_i; DROP TABLE j_many_c; DROP TABLE contested; DROP TABLE j_won")


def _repeated(con, table: str, col: str, into: str) -> None:
    """CREATE `into`: the values of `col` that occur more than once in `table`. Usually none:
    counting a million ids with numpy says so in milliseconds; SQL groups only otherwise."""
    ids = con.sql(f"SELECT {col} FROM {table}").fetchnumpy()[col]
    if len(ids):
        low = int(ids.min())
        if int(ids.max()) - low < 4 * len(ids) + 1024 and np.bincount(ids - low).max() <= 1:
            con.execute(f"CREATE TEMP TABLE {into} AS SELECT {col} FROM {table} LIMIT 0")
            return
    con.execute(f"CREATE TEMP TABLE {into} AS SELECT {col} FROM {table} GROUP BY {col} HAVING count(*) > 1")


def exact_order_id(con, ctx: _Context) -> None:
    """1:1 by order id; among several candidates only the one whose amount agrees."""
    agrees = _amount_agrees(ctx, "ip", "cp")
    _claim(con, f"""
        WITH cand AS (
            SELECT ip.id AS iid, cp.id AS cid, ip.day AS iday, {agrees} AS agrees,
                   count(*) OVER (PARTITION BY ip.id) AS n,
                   row_number() OVER (PARTITION BY ip.id ORDER BY ({agrees}) DESC, cp.day, cp.line, cp.id) AS ri
            FROM ip_free ip JOIN cp_free cp ON ip.order_id = cp.order_id)
        SELECT iid, cid, iid, 'exact_order_id', 'confirmed', 1.0, iday FROM cand
        WHERE ri = 1 AND (n = 1 OR agrees)""")


def split_payment(con, ctx: _Context) -> None:
    """One order, several channel payments (all with its order id) that add up to it."""
    _claim(con, f"""
        WITH cand AS (
            SELECT ip.id AS iid, ip.amount AS ia, ip.day AS iday, cp.id AS cid, cp.amount AS ca,
                   count(*) OVER (PARTITION BY ip.id) AS n, sum(cp.amount) OVER (PARTITION BY ip.id) AS total,
                   ip.currency = cp.currency AS same_cur
            FROM ip_free ip JOIN cp_free cp ON ip.order_id = cp.order_id)
        SELECT iid, cid, iid, 'split_payment', 'confirmed', 1.0, iday FROM cand
        WHERE n > 1 AND same_cur AND abs(total - ia) <= {ctx.tol('ia')}""")


def closest_order_candidate(con, ctx: _Context) -> None:
    """An order whose candidates neither agree nor add up: pair it with the closest amount
    (the difference is then an amount mismatch and the rest duplicate charges)."""
    _claim(con, f"""
        SELECT iid, cid, iid, 'exact_order_id', 'confirmed', 1.0, iday FROM (
            SELECT ip.id AS iid, cp.id AS cid, ip.day AS iday,
                   row_number() OVER (PARTITION BY ip.id ORDER BY abs(cp.amount - ip.amount), cp.day, cp.line, cp.id) AS ri
            FROM ip_free ip JOIN cp_free cp ON ip.order_id = cp.order_id) WHERE ri = 1""")


def _fee_off(ctx: _Context) -> str:
    """SQL condition over `cp`: the channel's fee is off the source's rate card (day D)."""
    rate = ctx.rules.fee_rate
    if rate is None:
        return "false"
    expected = f"CAST(round((amount - discount) * {rate}) AS BIGINT)"
    return f"day = {ctx.d} AND abs(fee - {expected}) > {int(ctx.rules.fee_tolerance_minor)}"


def with_details(con, ctx: _Context) -> None:
    """Not a match: the passes below (and the findings about what stays unmatched) read the
    wide text, payer, memo, time and ref. Fetched here only for what the exact passes left
    free (and the day's fee deviations): a sliver of a million rows."""
    if ctx.details is None:  # the input tables carry it
        con.execute(f"""
            CREATE TEMP VIEW iw AS SELECT {_DETAIL_COLUMNS} FROM i_in;
            CREATE TEMP VIEW cw AS SELECT {_DETAIL_COLUMNS} FROM c_in;""")
    else:
        for side, name, ids_sql in (
                ("internal", "iw", "SELECT id FROM ip_free ORDER BY id"),
                ("channel", "cw", f"SELECT id FROM cp_free UNION SELECT id FROM cp WHERE {_fee_off(ctx)} ORDER BY id")):
            ids = con.sql(ids_sql).to_arrow_table()["id"]
            table = ctx.details(side, ids) if len(ids) else DETAIL_SCHEMA.empty_table()
            con.register(f"{name}_in", table)
            con.execute(f"CREATE TEMP TABLE {name} AS SELECT {_DETAIL_COLUMNS} FROM {name}_in")
            con.unregister(f"{name}_in")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE ip_free AS
            SELECT f.*, w.ref, w.payer, w.memo, w.ts FROM ip_free f LEFT JOIN iw w ON w.id = f.id;
        CREATE OR REPLACE TEMP TABLE cp_free AS
            SELECT f.*, w.ref, w.payer, w.memo, w.ts FROM cp_free f LEFT JOIN cw w ON w.id = f.id;
    """)


def merged_payment(con, ctx: _Context) -> None:
    """One channel payment whose memo/order field names several of our orders that add up."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE c_free AS SELECT id, memo, order_id FROM cp_free;
        CREATE OR REPLACE TEMP TABLE c_tokens AS  -- only what the exact passes left is tokenised
        SELECT DISTINCT c_free.id AS cid, upper(tok) AS tok
        FROM c_free, id_patterns,
             unnest(regexp_extract_all(coalesce(c_free.memo, '') || ' ' || coalesce(c_free.order_id, ''),
                                       id_patterns.pattern)) AS t(tok);
    """)
    _claim(con, f"""
        WITH cand AS (
            SELECT t.cid, ip.id AS iid, ip.amount AS ia, ip.currency AS icur, ip.day AS iday
            FROM c_tokens t JOIN ip_free ip ON upper(ip.order_id) = t.tok),
        exclusive AS (  -- an order named by two channel payments is not claimed by either
            SELECT * FROM cand WHERE iid IN (SELECT iid FROM cand GROUP BY iid HAVING count(*) = 1)),
        groups AS (
            SELECT e.cid, count(*) AS n, sum(e.ia) AS total, bool_and(e.icur = cp.currency) AS same_cur,
                   any_value(cp.amount) AS ca
            FROM exclusive e JOIN cp_free cp ON cp.id = e.cid GROUP BY e.cid)
        SELECT e.iid, e.cid, -e.cid, 'merged_payment', 'confirmed', 1.0, e.iday
        FROM exclusive e JOIN groups g ON g.cid = e.cid
        WHERE g.n > 1 AND g.same_cur AND abs(g.total - g.ca) <= {ctx.tol('g.ca')}""")


def _names_id(text: str, order_id: str) -> str:
    """SQL: `text` names `order_id` as a whole id, not as the start or middle of a longer one
    (a memo naming K-90115 does not name K-9011). Id characters are those of the default id
    pattern: letters, digits, `_` and `-`."""
    return (f"(strpos(upper(coalesce({text}, '')), upper({order_id})) > 0 AND regexp_matches(upper({text}), "
            f"'(^|[^A-Z0-9_-])' || regexp_escape(upper({order_id})) || '($|[^A-Z0-9_-])'))")


def fuzzy(con, ctx: _Context) -> None:
    """Leftovers: amount within tolerance and time within the window, scored; a mutual
    untied best at or above the threshold is confirmed, any other best is suggested."""
    r = ctx.rules
    window_s = int(r.fuzzy_window_days * 86400)
    # our payments whose order id a leftover channel row names (only those are looked up
    # among the matched: the matched are millions)
    _subset(con, ctx, "ip_named", "i", _isin(ctx.inputs["i"]["order_id"], con,
                                             "SELECT DISTINCT coalesce(order_id, '') FROM cp_free", skip_nulls=True),
            "kind = 'payment'", replace=True)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE fz AS
        WITH li AS (SELECT * FROM ip_free WHERE status IN {PAID} AND id NOT IN (SELECT id FROM i_reversed)
                        AND day BETWEEN {_lit_date(ctx.window.first)} AND {_lit_date(ctx.window.last)}),
             -- a payment naming an order we already matched is that order's duplicate charge,
             -- not an anonymous payment to be guessed at
             matched_named AS (SELECT ip2.order_id FROM ip_named ip2 JOIN m ON m.iid = ip2.id
                               WHERE m.status = 'confirmed'),
             lc AS (SELECT * FROM cp_free WHERE true
                        AND day BETWEEN {_lit_date(ctx.window.first)} AND {_lit_date(ctx.window.last)}
                        AND coalesce(order_id, '') NOT IN (SELECT order_id FROM matched_named)),
             cand AS (
                SELECT li.id AS iid, lc.id AS cid, li.day AS iday,
                       -- the order id written in the channel's memo is the strongest signal
                       CASE WHEN li.order_id IS NOT NULL AND {_names_id('lc.memo', 'li.order_id')}
                            THEN {r.fuzzy_weight_order_id} ELSE 0 END
                     + CASE WHEN li.payer IS NOT NULL AND length(li.payer) >= 2 AND
                                 strpos(upper(coalesce(lc.payer, '') || ' ' || coalesce(lc.memo, '')), upper(li.payer)) > 0
                            THEN {r.fuzzy_weight_payer} ELSE 0 END
                     + CASE WHEN li.amount = lc.amount THEN {r.fuzzy_weight_amount} ELSE {r.fuzzy_weight_amount} / 2 END
                     + {r.fuzzy_weight_time} * (1 - least(abs(epoch(lc.ts) - epoch(li.ts)), {window_s}) / {max(window_s, 1)})
                       AS score
                FROM li JOIN lc ON li.currency = lc.currency
                 AND abs(lc.amount - li.amount) <= {ctx.tol('li.amount')}
                 AND abs(epoch(lc.ts) - epoch(li.ts)) <= {window_s})
        SELECT *,
               row_number() OVER (PARTITION BY iid ORDER BY score DESC, cid) AS ri,
               row_number() OVER (PARTITION BY cid ORDER BY score DESC, iid) AS rc,
               lead(score) OVER (PARTITION BY iid ORDER BY score DESC, cid) AS i_next,
               lead(score) OVER (PARTITION BY cid ORDER BY score DESC, iid) AS c_next
        FROM cand;
    """)
    _claim(con, f"""
        SELECT iid, cid, iid, 'fuzzy', 'confirmed', score, iday FROM fz
        WHERE ri = 1 AND rc = 1 AND score >= {r.fuzzy_min_score}
          AND coalesce(i_next, -1) < score AND coalesce(c_next, -1) < score""")
    # Suggest only for items that would otherwise be breaks now: one still in transit waits.
    # The best candidate among those still free: a line confirmed for another order (its memo
    # names that one) is not offered again.
    _claim(con, f"""
        SELECT iid, cid, iid, 'fuzzy', 'suggested', score, iday FROM (
            SELECT fz.iid, fz.cid, fz.score, fz.iday AS day, fz.iday,
                   row_number() OVER (PARTITION BY fz.iid ORDER BY fz.score DESC, fz.cid) AS best
            FROM fz  -- still free: not confirmed by any pass, this one included
            WHERE fz.iid IN (SELECT id FROM ip_free) AND fz.cid IN (SELECT id FROM cp_free))
        WHERE best = 1 AND NOT {ctx.in_transit('channel', 'day')}""")


PASSES = [exact_txn_id, exact_order_id, split_payment, closest_order_candidate, with_details, merged_payment, fuzzy]


# -- pairs and findings ----------------------------------------------------------------

def _amount_agrees(ctx: _Context, i: str, c: str) -> str:
    """Equal within tolerance, also when the channel's own coupon column explains the gap,
    or (other currency) when the configured FX rate explains it."""
    return (f"({i}.currency = {c}.currency AND (abs({c}.amount - {i}.amount) <= {ctx.tol(i + '.amount')} "
            f"OR abs({c}.amount - {c}.discount - {i}.amount) <= {ctx.tol(i + '.amount')}))")


_ONE_TO_ONE = "('exact_txn_id', 'exact_order_id', 'fuzzy')"


def _pairs(con, ctx: _Context) -> None:
    """Confirmed matches with both sides' facts, one row per group (amounts summed per side,
    so a merged payment counts its channel amount once and a split order once).

    Only the pairs a finding can come from are built: the first pass's suspect pairs, the
    other passes' (few) pairs, and the pairs of the orders a leftover channel row names
    (a duplicate charge, or a long that is not one). Their records' facts are read in one
    scan per side (ipx, cpx); a million clean matches are not joined again."""
    explained = f"(abs(ca - ia) <= {ctx.tol('ia')} OR abs(ca - cdisc - ia) <= {ctx.tol('ia')})"
    con.execute(f"""
        CREATE TEMP VIEW mc AS SELECT * FROM m WHERE status = 'confirmed';
        CREATE TEMP TABLE c_left AS SELECT * FROM cp_free;
        CREATE TEMP TABLE named AS SELECT DISTINCT order_id FROM c_left;
    """)
    i = ctx.inputs["i"]
    _subset(con, ctx, "ipx", "i", pc.or_(
        _isin(i["id"], con, "SELECT iid FROM j_suspect UNION ALL SELECT iid FROM mc WHERE rule <> 'exact_txn_id'"),
        _isin(i["order_id"], con, "SELECT order_id FROM named", skip_nulls=True)), "kind = 'payment'")
    con.execute(f"""
        CREATE TEMP TABLE pair_ids AS
        SELECT mc.grp, mc.iid, mc.cid, mc.rule FROM mc JOIN j_suspect s ON s.iid = mc.iid AND s.cid = mc.cid
        WHERE mc.rule = 'exact_txn_id'
        UNION SELECT grp, iid, cid, rule FROM mc WHERE rule IN {_ONE_TO_ONE} AND rule <> 'exact_txn_id'
        UNION SELECT mc.grp, mc.iid, mc.cid, mc.rule
              FROM (SELECT id FROM ipx WHERE order_id IN (SELECT order_id FROM named)) x JOIN mc ON mc.iid = x.id
              WHERE mc.rule IN {_ONE_TO_ONE};
    """)
    _subset(con, ctx, "cpx", "c", _isin(ctx.inputs["c"]["id"], con, "SELECT cid FROM pair_ids UNION ALL "
                                        f"SELECT cid FROM mc WHERE rule NOT IN {_ONE_TO_ONE}"),
            "kind = 'payment' AND status = 'success'")
    con.execute(f"""
        -- 1:1 matches (nearly all of them) need no aggregation
        CREATE TEMP TABLE pairs_all AS
        SELECT g.grp, ip.amount AS ia, ip.currency AS icur, ip.order_id, ip.status IN {NOT_PAID} AS unpaid,
               ip.day AS iday, cp.amount AS ca, cp.discount AS cdisc, cp.currency AS ccur, cp.txn_id, cp.day AS cday,
               g.rule
        FROM pair_ids g JOIN ipx ip ON ip.id = g.iid JOIN cpx cp ON cp.id = g.cid;
        -- groups (split and merged payments) add up per side
        INSERT INTO pairs_all
        SELECT gi.grp, gi.ia, gi.icur, gi.order_id, gi.unpaid, gi.iday, gc.ca, gc.cdisc, gc.ccur, gc.txn_id, gc.cday,
               gi.rule
        FROM (SELECT g.grp, sum(ip.amount) AS ia, any_value(ip.currency) AS icur, min(ip.order_id) AS order_id,
                     bool_or(ip.status IN {NOT_PAID}) AS unpaid, min(ip.day) AS iday, any_value(g.rule) AS rule
              FROM (SELECT DISTINCT grp, iid, rule FROM mc WHERE rule NOT IN {_ONE_TO_ONE}) g
              JOIN ipx ip ON ip.id = g.iid GROUP BY g.grp) gi
        JOIN (SELECT g.grp, sum(cp.amount) AS ca, sum(cp.discount) AS cdisc, any_value(cp.currency) AS ccur,
                     min(cp.txn_id) AS txn_id, min(cp.day) AS cday
              FROM (SELECT DISTINCT grp, cid FROM mc WHERE rule NOT IN {_ONE_TO_ONE}) g
              JOIN cpx cp ON cp.id = g.cid GROUP BY g.grp) gc USING (grp);
    """)
    # Evidence lists (file, line of every record of a group) are built only for the groups
    # that can produce a finding today.
    con.execute(f"""
        CREATE TEMP TABLE flagged AS
        SELECT grp FROM pairs_all WHERE iday = {ctx.d} AND (icur <> ccur OR unpaid OR NOT {explained})
        UNION SELECT p.grp FROM pairs_all p JOIN c_left cl ON cl.order_id = p.order_id WHERE cl.day = {ctx.d};
        CREATE TEMP TABLE members AS
        SELECT DISTINCT mc.grp, mc.iid, mc.cid FROM flagged f JOIN mc ON mc.grp = f.grp;
        CREATE TEMP TABLE pairs AS
        SELECT p.*, iev.ev AS iev, cev.ev AS cev
        FROM pairs_all p
        JOIN (SELECT x.grp, list(struct_pack(side := 'internal', file := ip.file_id, line := ip.line) ORDER BY ip.line) AS ev
              FROM (SELECT DISTINCT grp, iid FROM members) x JOIN ipx ip ON ip.id = x.iid GROUP BY x.grp) iev
          ON iev.grp = p.grp
        JOIN (SELECT y.grp, list(struct_pack(side := 'channel', file := cp.file_id, line := cp.line) ORDER BY cp.line) AS ev
              FROM (SELECT DISTINCT grp, cid FROM members) y JOIN cpx cp ON cp.id = y.cid GROUP BY y.grp) cev
          ON cev.grp = p.grp;
        CREATE TEMP TABLE i_left AS SELECT * FROM ip_free;
    """)


_FINDING_COLUMNS = ["type", "kind", "rule", "order_id", "txn_id", "internal_amount", "channel_amount", "difference",
                    "currency", "status", "tolerance", "evidence", "anchor_side", "anchor_ref", "score", "note"]


def _finding(**sql: str) -> str:
    """SELECT list of one finding rule: every column is a SQL expression."""
    sql.setdefault("score", "NULL")
    sql.setdefault("note", "NULL")
    casts = {"score": "DOUBLE", "note": "VARCHAR", "internal_amount": "BIGINT", "channel_amount": "BIGINT",
             "difference": "BIGINT", "tolerance": "BIGINT"}
    return "SELECT " + ", ".join(
        f"CAST({sql[c]} AS {casts[c]}) AS {c}" if c in casts else f"{sql[c]} AS {c}" for c in _FINDING_COLUMNS)


_ONE = "[struct_pack(side := '{side}', file := {p}file_id, line := {p}line)]"


def amount_mismatch(ctx: _Context) -> str:
    explained = f"(abs(ca - ia) <= {ctx.tol('ia')} OR abs(ca - cdisc - ia) <= {ctx.tol('ia')})"
    return _finding(type="'amount_mismatch'", kind="'payment'", rule="rule", order_id="order_id", txn_id="txn_id",
                    internal_amount="ia", channel_amount="ca", difference="ca - ia", currency="icur", status="'open'",
                    tolerance=ctx.tol("ia"), evidence="list_concat(iev, cev)", anchor_side="'internal'",
                    anchor_ref="rule || ':' || CAST(grp AS VARCHAR)") + f" FROM pairs WHERE iday = {ctx.d} AND icur = ccur AND NOT {explained}"


def fx_difference(ctx: _Context) -> str:
    """Pairs in two currencies: the configured rate must explain the channel amount."""
    expected = "CAST(round(ia * r.rate * r.scale) AS BIGINT)"
    tol = f"floor(abs(ca) * {ctx.rules.fx_tolerance_percent} / 100)"
    return _finding(type="'fx_difference'", kind="'payment'", rule="rule", order_id="order_id", txn_id="txn_id",
                    internal_amount="ia", channel_amount="ca", difference=f"ca - coalesce({expected}, 0)",
                    currency="ccur", status="'open'", tolerance=tol, evidence="list_concat(iev, cev)",
                    anchor_side="'internal'", anchor_ref="rule || ':' || CAST(grp AS VARCHAR)",
                    note="icur || '/' || ccur || ' ' || coalesce(CAST(r.rate AS VARCHAR), 'none')") + f"""
        FROM pairs LEFT JOIN rates r ON r.pair = icur || '/' || ccur
        WHERE iday = {ctx.d} AND icur <> ccur AND (r.rate IS NULL OR abs(ca - {expected}) > {tol})"""


def status_unpaid(ctx: _Context) -> str:
    return _finding(type="'status_mismatch'", kind="'payment'", rule="rule", order_id="order_id", txn_id="txn_id",
                    internal_amount="ia", channel_amount="ca", difference="ca", currency="icur", status="'open'",
                    tolerance=ctx.tol("ia"), evidence="list_concat(iev, cev)", anchor_side="'internal'",
                    anchor_ref="rule || ':' || CAST(grp AS VARCHAR)", note="'our books say unpaid'") + f" FROM pairs WHERE iday = {ctx.d} AND unpaid"


def duplicate_charge(ctx: _Context) -> str:
    return _finding(type="'duplicate_charge'", kind="'payment'", rule="'duplicate_order'", order_id="cl.order_id",
                    txn_id="cl.txn_id", internal_amount="NULL", channel_amount="cl.amount", difference="cl.amount",
                    currency="cl.currency", status="'open'", tolerance=ctx.tol("cl.amount"),
                    evidence="list_concat(p.iev, p.cev, " + _ONE.format(side="channel", p="cl.") + ")",
                    anchor_side="'channel'", anchor_ref="cl.ref") + f"""
        FROM c_left cl JOIN pairs p ON p.order_id = cl.order_id WHERE cl.day = {ctx.d}"""


def long_payment(ctx: _Context) -> str:
    return _finding(type="'long'", kind="'payment'", rule="'unmatched'", order_id="order_id", txn_id="txn_id",
                    internal_amount="NULL", channel_amount="amount", difference="amount", currency="currency",
                    status=f"CASE WHEN {ctx.in_transit('internal', 'day')} THEN 'in_transit' ELSE 'open' END",
                    tolerance=ctx.tol("amount"), evidence=_ONE.format(side="channel", p=""), anchor_side="'channel'",
                    anchor_ref="ref") + f"""
        FROM c_left WHERE day = {ctx.d}
          AND NOT EXISTS (SELECT 1 FROM pairs_all p WHERE p.order_id = c_left.order_id)
          -- a channel item suggested for an order is shown on that order's card, also when the
          -- order is a day earlier (a transfer books the next day) and its card came from that run
          AND id NOT IN (SELECT cid FROM m WHERE status = 'suggested')"""


def short_payment(ctx: _Context) -> str:
    """Paid in our books, nothing at the channel; a reversal there makes it a status mismatch."""
    reversed_ = "(id IN (SELECT id FROM i_reversed))"
    return _finding(type=f"CASE WHEN {reversed_} THEN 'status_mismatch' ELSE 'short' END", kind="'payment'",
                    rule=f"CASE WHEN {reversed_} THEN 'reversed_at_channel' ELSE 'unmatched' END",
                    order_id="order_id", txn_id="txn_id", internal_amount="amount", channel_amount="NULL",
                    difference="-amount", currency="currency",
                    status=f"CASE WHEN {ctx.in_transit('channel', 'day')} AND NOT {reversed_} THEN 'in_transit' ELSE 'open' END",
                    tolerance=ctx.tol("amount"), evidence=_ONE.format(side="internal", p=""),
                    anchor_side="'internal'", anchor_ref="ref",
                    note=f"CASE WHEN {reversed_} THEN 'reversed at the channel' END") + f"""
        FROM i_left WHERE day = {ctx.d} AND status IN {PAID}
          AND id NOT IN (SELECT iid FROM m WHERE status = 'suggested')"""


def suggested_match(ctx: _Context) -> str:
    return _finding(type="'suggested_match'", kind="'payment'", rule="'fuzzy'", order_id="ip.order_id",
                    txn_id="cp.txn_id", internal_amount="ip.amount", channel_amount="cp.amount",
                    difference="cp.amount - ip.amount", currency="ip.currency", status="'open'",
                    tolerance=ctx.tol("ip.amount"),
                    evidence=f"list_concat({_ONE.format(side='internal', p='ip.')}, {_ONE.format(side='channel', p='cp.')})",
                    anchor_side="'internal'", anchor_ref="ip.ref", score="m.score",
                    note="concat_ws(', ', 'order ' || cp.order_id, 'memo ' || cp.memo, 'payer ' || cp.payer)") + f"""
        FROM m JOIN i_left ip ON ip.id = m.iid JOIN c_left cp ON cp.id = m.cid  -- a suggestion claims neither side
        WHERE m.status = 'suggested' AND ip.day = {ctx.d}"""


def refunds(ctx: _Context) -> str:
    """Per order: partial refunds add up on either side; a refund on one side only is a
    status mismatch. Evidence lists are built only for the orders that make a finding (at
    10M orders, listing every refunded order's records cost 0.5 s)."""
    def totals(table: str, only_success: bool) -> str:
        return f"""(SELECT order_id, sum(amount) AS amount, any_value(currency) AS currency, min(day) AS day,
            any_value(txn_id) AS txn_id, true AS here FROM {table}
            WHERE kind = 'refund' {"AND status = 'success'" if only_success else ""} GROUP BY order_id)"""

    def evidence(table: str, name: str, only_success: bool, key: str, here: str) -> str:
        # the NULL order id is a group of its own: matched NULL-safe, and only when present
        return f"""(SELECT order_id, list(struct_pack(side := '{name}', file := file_id, line := line)
                                         ORDER BY day, line) AS ev FROM {table}
            WHERE kind = 'refund' {"AND status = 'success'" if only_success else ""}
              AND (order_id IN (SELECT {key} FROM x WHERE {here})
                   OR (order_id IS NULL AND EXISTS (SELECT 1 FROM x WHERE {here} AND {key} IS NULL)))
            GROUP BY order_id)"""
    tol = ctx.tol("coalesce(ia, ca)")
    one_side = "io IS NULL OR co IS NULL"
    return _finding(type=f"CASE WHEN {one_side} THEN 'status_mismatch' ELSE 'amount_mismatch' END", kind="'refund'",
                    rule="'refund_by_order'", order_id="coalesce(io, co)",
                    txn_id="coalesce(ctxn, itxn)", internal_amount="ia", channel_amount="ca",
                    difference="coalesce(ca, 0) - coalesce(ia, 0)",
                    currency="coalesce(icur, ccur)",
                    status=f"""CASE WHEN co IS NULL AND {ctx.in_transit('channel', 'iday')} THEN 'in_transit'
                                    WHEN io IS NULL AND {ctx.in_transit('internal', 'cday')} THEN 'in_transit'
                                    ELSE 'open' END""",
                    tolerance=tol, evidence="list_concat(coalesce(iev, []), coalesce(cev, []))",
                    anchor_side="CASE WHEN io IS NULL THEN 'channel' ELSE 'internal' END",
                    anchor_ref="coalesce(io, co)") + f"""
        FROM (WITH x AS (
                  SELECT ir.order_id AS io, ir.amount AS ia, ir.currency AS icur, ir.day AS iday, ir.txn_id AS itxn,
                         ir.here AS ih, cr.order_id AS co, cr.amount AS ca, cr.currency AS ccur, cr.day AS cday,
                         cr.txn_id AS ctxn, cr.here AS ch
                  FROM {totals('i_other', False)} ir FULL OUTER JOIN {totals('c_other', True)} cr
                    ON ir.order_id = cr.order_id
                  WHERE coalesce(ir.day, cr.day) = {ctx.d}
                    AND (ir.order_id IS NULL OR cr.order_id IS NULL
                         OR abs(coalesce(cr.amount, 0) - coalesce(ir.amount, 0)) > {ctx.tol('coalesce(ir.amount, cr.amount)')}))
              SELECT x.*, ie.ev AS iev, ce.ev AS cev FROM x
              LEFT JOIN {evidence('i_other', 'internal', False, 'io', 'ih')} ie
                ON x.ih AND ie.order_id IS NOT DISTINCT FROM x.io
              LEFT JOIN {evidence('c_other', 'channel', True, 'co', 'ch')} ce
                ON x.ch AND ce.order_id IS NOT DISTINCT FROM x.co) r"""


def fee_mismatch(ctx: _Context) -> str:
    """The channel's fee against the source's rate card, beyond rounding (`_fee_off`)."""
    rate = ctx.rules.fee_rate
    expected = f"CAST(round((amount - discount) * {rate}) AS BIGINT)" if rate is not None else "NULL"
    tol = int(ctx.rules.fee_tolerance_minor)
    return _finding(type="'fee_mismatch'", kind="'fee'", rule="'rate_card'", order_id="order_id", txn_id="txn_id",
                    internal_amount=expected, channel_amount="fee", difference=f"fee - {expected}",
                    currency="currency", status="'open'", tolerance=str(tol),
                    evidence=_ONE.format(side="channel", p=""), anchor_side="'channel'", anchor_ref="ref",
                    note=f"'rate card {rate}'") + f"""
        FROM cp LEFT JOIN cw ON cw.id = cp.id WHERE {_fee_off(ctx)}"""


def _duplicate_records(ctx: _Context) -> str:
    """Rows a statement delivered again (already stored from an earlier row): a data-quality
    note, never a money break."""
    return _finding(type="'duplicate_record'", kind="kind", rule="'same_row_twice'", order_id="order_id",
                    txn_id="txn_id", internal_amount="NULL", channel_amount="amount", difference="0",
                    currency="currency", status="'note'", tolerance="0",
                    evidence="[struct_pack(side := 'channel', file := file, line := line), "
                             "struct_pack(side := 'channel', file := kept_file, line := kept_line)]",
                    anchor_side="'channel'", anchor_ref="ref || '@' || file || ':' || line") + f"""
        FROM dup_in WHERE CAST(business_day AS DATE) = {ctx.d}"""


FINDINGS = [amount_mismatch, fx_difference, status_unpaid, duplicate_charge, long_payment, short_payment,
            suggested_match, refunds, fee_mismatch]


def _stats(con, ctx: _Context) -> tuple[dict, dict[str, int]]:
    """The day's figures, and the confirmed matches per rule.

    A 1:1 pass claims an internal record at most once, and only while it is free, so for
    those rules the rows of m are the distinct groups and records: counting them spares two
    distinct-counts over a million ids. Split and merged payments are counted distinctly."""
    # one scan per table (FILTER clauses), not one per figure
    ours = con.execute(f"""
        SELECT count(*), coalesce(sum(amount), 0) FROM ip WHERE day = {ctx.d} AND status IN {PAID}""").fetchall()[0]
    theirs = con.execute(f"""
        SELECT count(*) FILTER (WHERE kind = 'payment' AND status = 'success'),
               coalesce(sum(amount) FILTER (WHERE kind = 'payment' AND status = 'success'), 0),
               coalesce(sum(fee), 0)
        FROM c WHERE day = {ctx.d}""").fetchall()[0]
    per_rule = con.execute(f"""
        SELECT rule, count(*), count(*) FROM m
        WHERE status = 'confirmed' AND iday = {ctx.d} AND rule IN {_ONE_TO_ONE} GROUP BY rule
        UNION ALL
        SELECT rule, count(DISTINCT grp), count(DISTINCT iid) FROM m
        WHERE status = 'confirmed' AND iday = {ctx.d} AND rule NOT IN {_ONE_TO_ONE} GROUP BY rule
        ORDER BY rule""").fetchall()
    matched = sum(records for _rule, _groups, records in per_rule)
    row = (*ours, theirs[0], theirs[1], matched, theirs[2])
    names = ["internal_payments", "internal_amount", "channel_payments", "channel_amount", "matched", "fees"]
    return {k: int(v) for k, v in zip(names, row)}, {rule: groups for rule, groups, _records in per_rule}

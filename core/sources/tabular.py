"""Delimited statement bodies -> typed Arrow columns, vectorised, with exact error lines.

Reading: Arrow's multi-threaded CSV reader takes the body (all columns as text). A body
with quoted line breaks or ragged rows falls back to Python's csv module, which knows
each row's line number, so an error can still name it.

Typing: DuckDB SQL over the text columns (`TRY_CAST`, `TRY_STRPTIME`). One query then
looks for the first row whose non-empty value did not convert, and names file, line,
field and value. No Python loop runs per row on the happy path.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.money import _EXPONENT_EXCEPTIONS
from core.sources.base import ParseError

Kind = Literal["money", "fee", "timestamp", "text"]

_EXPONENT_CASE = (
    "CASE upper({cur}) "
    + " ".join(f"WHEN '{c}' THEN {e}" for c, e in sorted(_EXPONENT_EXCEPTIONS.items()))
    + " ELSE 2 END"
)

# Cleaning shared by every numeric field: backtick prefixes (WeChat), tab suffixes (Alipay),
# currency signs, thousands separators, full-width minus, spaces.
_MACROS = r"""
CREATE OR REPLACE MACRO clean_text(s) AS nullif(trim(replace(replace(s, '`', ''), chr(9), '')), '');
CREATE OR REPLACE MACRO clean_num(s) AS
    nullif(regexp_replace(replace(clean_text(s), '－', '-'), '[,¥￥$\s]', '', 'g'), '');
CREATE OR REPLACE MACRO to_dec(s) AS TRY_CAST(clean_num(s) AS DECIMAL(38, 18));
CREATE OR REPLACE MACRO local_ts(s) AS TRY_STRPTIME(
    replace(clean_text(s), '：', ':'),
    ['%Y-%m-%d %H:%M:%S', '%Y/%m/%d %H:%M:%S', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d %H:%M', '%Y/%m/%d %H:%M']);
"""


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(_MACROS)
    return con


def exponent_sql(currency_sql: str) -> str:
    return _EXPONENT_CASE.format(cur=currency_sql)


def minor_sql(col: str, currency_sql: str) -> str:
    """Exact minor units (NULL when not exact: the error query reports it)."""
    scaled = f"(to_dec({col}) * CAST(pow(10, {exponent_sql(currency_sql)}) AS INTEGER))"
    return f"(CASE WHEN {scaled} = round({scaled}) THEN CAST({scaled} AS BIGINT) END)"


def fee_minor_sql(col: str, currency_sql: str) -> str:
    """Fees are shown with up to 5 decimals and settled rounded half-up to the minor unit."""
    return f"CAST(round(to_dec({col}) * CAST(pow(10, {exponent_sql(currency_sql)}) AS INTEGER)) AS BIGINT)"


def utc_sql(local_ts: str, tz: str) -> str:
    """A naive local timestamp in zone `tz` -> naive UTC."""
    return f"timezone('UTC', timezone('{tz}', {local_ts}))"


@dataclass(frozen=True)
class Check:
    """One typed field: a raw column whose non-empty values must convert with `sql`."""

    column: str
    sql: str  # expression over the raw table that is NULL when the value is bad
    reason: str


def first_bad_value(con, path, checks: list[Check], table: str = "raw") -> None:
    """Raise ParseError for the earliest row where a check fails (one vectorised scan)."""
    if not checks:
        return
    arms = [
        f"SELECT line, {i} AS chk, CAST(\"{c.column}\" AS VARCHAR) AS value FROM {table} "
        f"WHERE clean_text(\"{c.column}\") IS NOT NULL AND ({c.sql}) IS NULL"
        for i, c in enumerate(checks)
    ]
    row = con.execute(" UNION ALL ".join(arms) + " ORDER BY line, chk LIMIT 1").fetchone()
    if row:
        line, idx, value = row
        check = checks[idx]
        raise ParseError(path, check.reason, line=line, field=check.column, value=value.strip("`\t "))


def required(con, path, columns: list[str], table: str = "raw") -> None:
    """Raise ParseError for the earliest row that leaves a required field empty."""
    if not columns:
        return
    arms = [
        f"SELECT line, {i} AS idx FROM {table} WHERE clean_text(\"{c}\") IS NULL" for i, c in enumerate(columns)
    ]
    row = con.execute(" UNION ALL ".join(arms) + " ORDER BY line, idx LIMIT 1").fetchone()
    if row:
        raise ParseError(path, "required value is empty", line=row[0], field=columns[row[1]], value="")


def money_check(column: str, currency_sql: str) -> Check:
    return Check(column, minor_sql(f'"{column}"', currency_sql), "not an amount with the currency's decimals")


def fee_check(column: str) -> Check:
    return Check(column, f'to_dec("{column}")', "not a number")


def time_check(column: str) -> Check:
    return Check(column, f'local_ts("{column}")', "not a date-time (expected YYYY-MM-DD HH:MM:SS)")


def read_rows(path, body: str, first_line: int, names: list[str], delimiter: str = ",") -> pa.Table:
    """Parse a header-less delimited body into text columns plus its file `line` numbers.

    `first_line` is the 1-based line number of the body's first row in the original file.
    """
    data = body.encode("utf-8")
    physical = body.count("\n") + (0 if body.endswith("\n") or not body else 1)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == physical:
        lines = pa.array(range(first_line, first_line + physical), pa.int64())
        return table.append_column("line", lines)
    return _read_rows_slowly(path, body, first_line, names, delimiter)


def _read_rows_slowly(path, body: str, first_line: int, names: list[str], delimiter: str) -> pa.Table:
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    columns: list[list[str]] = [[] for _ in names]
    lines: list[int] = []
    start = first_line
    for row in reader:
        if not row:  # blank line
            start = first_line + reader.line_num
            continue
        if len(row) != len(names):
            raise ParseError(path, f"has {len(row)} fields, the header has {len(names)}", line=start)
        for col, value in zip(columns, row):
            col.append(value)
        lines.append(start)
        start = first_line + reader.line_num
    arrays = [pa.array(c, pa.string()) for c in columns] + [pa.array(lines, pa.int64())]
    return pa.Table.from_arrays(arrays, names=[*names, "line"])


def map_values(table: pa.Table, column: str, mapping: dict[str, str]) -> pa.Table:
    """Replace a column's values through `mapping`; unmapped values are lower-cased."""
    idx = pc.index_in(table[column], value_set=pa.array(list(mapping)))
    mapped = pc.take(pa.array(list(mapping.values())), idx)
    values = pc.if_else(pc.is_null(mapped), pc.utf8_lower(table[column]), mapped)
    return table.set_column(table.schema.get_field_index(column), column, values)

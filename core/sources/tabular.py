"""Delimited statement bodies -> typed Arrow columns, vectorised, with exact error lines.

Reading: Arrow's multi-threaded CSV reader takes the body (all columns as text). A body
with quoted line breaks or ragged rows falls back to Python's csv module, which knows
each row's line number, so an error can still name it.

Typing: DuckDB SQL over the text columns (`TRY_CAST`, `TRY_STRPTIME`). One query then
looks for the first row whose non-empty value did not convert, and names file, line,
field and value. No Python loop runs per row on the happy path. (The two million-row
formats, WeChat Pay trade bills and orders exports, are typed with Arrow instead:
core/sources/convert.py.)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.money import _EXPONENT_EXCEPTIONS
from core.sources.base import ParseError
from core.sources.convert import time_formats_sql

if TYPE_CHECKING:
    import duckdb


def _exponent_case() -> str:
    by_exp: dict[int, list[str]] = {}
    for cur, exp in sorted(_EXPONENT_EXCEPTIONS.items()):
        by_exp.setdefault(exp, []).append(f"'{cur}'")
    arms = " ".join(f"WHEN upper({{cur}}) IN ({', '.join(curs)}) THEN {exp}" for exp, curs in sorted(by_exp.items()))
    return f"CASE {arms} ELSE 2 END"


_EXPONENT_CASE = _exponent_case()  # a hash lookup per row, not 25 comparisons


# Cleaning shared by every numeric field: backtick prefixes (WeChat), tab suffixes (Alipay),
# currency signs, thousands separators, full-width minus, spaces.
_MACROS = r"""
CREATE OR REPLACE MACRO clean_text(s) AS nullif(trim(replace(replace(s, '`', ''), chr(9), '')), '');
CREATE OR REPLACE MACRO clean_num(s) AS
    nullif(regexp_replace(replace(clean_text(s), '－', '-'), '[,¥￥$\s]', '', 'g'), '');
CREATE OR REPLACE MACRO to_dec(s) AS TRY_CAST(clean_num(s) AS DECIMAL(38, 18));
CREATE OR REPLACE MACRO local_ts(s) AS TRY_STRPTIME(replace(clean_text(s), '：', ':'), {formats});
""".replace("{formats}", time_formats_sql())


def connect() -> duckdb.DuckDBPyConnection:
    import duckdb  # here: the million-row formats are typed with Arrow, and `recon ingest` starts sooner

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
    """Raise ParseError for the earliest row where a check fails.

    One projection computes a single "bad" flag per row (DuckDB shares repeated
    subexpressions inside a projection, not inside a WHERE clause: 20x on a million
    rows); only the first bad line is then examined check by check to name the field.
    """
    if not checks:
        return
    flags = " OR ".join(f"(clean_text(\"{c.column}\") IS NOT NULL AND ({c.sql}) IS NULL)" for c in checks)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _flags AS SELECT line, ({flags}) AS bad FROM {table}")
    line = con.execute("SELECT min(line) FROM _flags WHERE bad").fetchall()[0][0]
    con.execute("DROP TABLE _flags")
    if line is None:
        return
    for check in checks:
        value = con.execute(f"SELECT CAST(\"{check.column}\" AS VARCHAR) FROM {table} WHERE line = ? "
                            f"AND clean_text(\"{check.column}\") IS NOT NULL AND ({check.sql}) IS NULL", [line]).fetchall()
        if value:
            value = value[0]
            raise ParseError(path, check.reason, line=line, field=check.column, value=value[0].strip("`\t "))


def required(con, path, columns: list[str], table: str = "raw") -> None:
    """Raise ParseError for the earliest row that leaves a required field empty."""
    if not columns:
        return
    empty = " OR ".join(f"clean_text(\"{c}\") IS NULL" for c in columns)
    line = con.execute(f"SELECT min(line) FROM {table} WHERE {empty}").fetchall()[0][0]
    if line is None:
        return
    for c in columns:
        if con.execute(f"SELECT 1 FROM {table} WHERE line = ? AND clean_text(\"{c}\") IS NULL", [line]).fetchall():
            raise ParseError(path, "required value is empty", line=line, field=c, value="")


def money_check(column: str, currency_sql: str) -> Check:
    return Check(column, minor_sql(f'"{column}"', currency_sql), "not an amount with the currency's decimals")


def fee_check(column: str) -> Check:
    return Check(column, f'to_dec("{column}")', "not a number")


def time_check(column: str) -> Check:
    return Check(column, f'local_ts("{column}")', "not a date-time (expected YYYY-MM-DD HH:MM:SS)")


def read_rows(path, body: str | bytes | memoryview, first_line: int, names: list[str], delimiter: str = ",",
              physical_lines: int | None = None, only: list[str] | None = None) -> pa.Table:
    """Parse a header-less delimited body into text columns plus its file `line` numbers.

    `first_line` is the 1-based line number of the body's first row in the original file;
    `physical_lines`, the body's line count where the caller has counted it already;
    `only`, the columns the caller reads (Arrow then builds no others: a third of a
    WeChat bill's columns are never used), where the header names are unique.
    Bytes are read by Arrow as they are (it validates UTF-8); a body it cannot read line
    for line is decoded strictly (an encoding error names its line) and read slowly.
    """
    # Arrow's own CSV threads stay off: ingest calls this in reader threads that already
    # share the two cores with the writer at a priority of their own (core.ingest._Reader),
    # and a pool thread would parse a read-ahead piece at the writer's priority.
    data = body.encode("utf-8") if isinstance(body, str) else body
    size = len(data)
    buf = pa.py_buffer(data)
    physical = _count_lines(data) if physical_lines is None else physical_lines
    try:
        table = pacsv.read_csv(
            pa.BufferReader(buf),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                include_columns=list(dict.fromkeys(only)) if only and len(set(names)) == len(names) else None,
            ),
        ) if size else None
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == physical:
        lines = pa.array(np.arange(first_line, first_line + physical, dtype=np.int64))  # 5x pa.array(range())
        return table.append_column("line", lines)
    if not size:
        return pa.Table.from_arrays([pa.array([], pa.string()) for _ in names] + [pa.array([], pa.int64())],
                                    names=[*names, "line"])
    if not isinstance(body, str):
        raw = bytes(data)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = first_line + raw.count(b"\n", 0, exc.start)
            raise ParseError(path, f"not valid utf-8-sig text (byte {exc.start} = "
                                   f"{raw[exc.start:exc.start + 1].hex()})", line=line) from None
    return _read_rows_slowly(path, body, first_line, names, delimiter)


class BodyPiece(NamedTuple):
    """A run of whole rows of a delimited body: its bytes, the file line it starts on, and
    how many physical lines it spans (what `read_rows` checks its row count against)."""

    data: memoryview
    first_line: int
    lines: int


def line_pieces(raw: bytes, start: int, end: int, first_line: int, piece_bytes: int | None, ramp: bool = True):
    """Split the delimited body raw[start:end] at line breaks into pieces of about
    `piece_bytes` -> `BodyPiece`s, in order.

    A break inside a quoted field is not a row's end (a quoted memo may hold one), so a
    piece ends only where the quotes before it are balanced ("" inside a field counts
    twice, which keeps the balance). Every piece then reads like a body of its own, and
    its errors name the file's own lines. `None`: one piece.

    With `ramp`, the first pieces are smaller (1/8, 1/4, 1/2 of `piece_bytes`): the writer
    waits for the first one, so it should come quickly. (A file read ahead while the writer
    is busy with another does better without: it fills its queue with more rows.)

    Each byte is counted once here (line breaks; quotes only where a memchr finds one): a
    bill of a million rows is 250 MB, and every pass over it costs about 0.15 s.
    """
    view = memoryview(raw)
    if start >= end:
        yield BodyPiece(view[start:end], first_line, 0)
        return
    whole = piece_bytes is None or end - start <= piece_bytes
    size = end - start if whole else piece_bytes if not ramp else max(piece_bytes // 8, 1)
    while start < end:
        cut = raw.find(b"\n", min(start + size, end), end)
        if not whole:
            size = min(size * 2, piece_bytes)
        has_quotes = raw.find(b'"', start, end if cut < 0 else cut) >= 0
        quotes = raw.count(b'"', start, cut) if has_quotes and cut >= 0 else 0
        while cut >= 0 and quotes % 2:  # inside a quoted field: the next break, then
            nxt = raw.find(b"\n", cut + 1, end)
            quotes += raw.count(b'"', cut, nxt if nxt >= 0 else end)
            cut = nxt
        stop = end if cut < 0 else cut + 1
        breaks = raw.count(b"\n", start, stop)
        yield BodyPiece(view[start:stop], first_line, breaks + (raw[stop - 1] != 0x0A))
        first_line += breaks
        start = stop


def _count_lines(data) -> int:
    """Physical lines, the last one counted even without its line break."""
    b = data if isinstance(data, bytes) else bytes(data)
    return b.count(b"\n") + (0 if not b or b.endswith(b"\n") else 1)


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

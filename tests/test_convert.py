"""Typing text cells with Arrow (core/sources/convert.py): the rules every million-row
format relies on, value by value, including the ones that must be refused."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pyarrow as pa
import pytest

from core.sources import ParseError
from core.sources import convert as C


def _typed(values, kind, currency="CNY", cleaner="generic", required=False):
    raw = pa.table({"v": pa.array(values, pa.string()), "line": pa.array(range(2, len(values) + 2), pa.int64())})
    cols = [C.Col("x", "v", kind, required=required)]
    return C.typed_table(raw, cols, currency=currency, cleaner=cleaner), raw, cols


@pytest.mark.parametrize("text, minor", [
    ("144.50", 14450), ("144.5", 14450), ("-5.00", -500), ("+5", 500), (" 5 ", 500), ("5.", 500), (".5", 50),
    ("0012.00", 1200), ("1e3", 100000), ("12345678901.00", 1234567890100),
    ("1,000.00", 100000), ("¥12.00", 1200), ("－3.00", -300), ("`5.00", 500), ("5.00\t", 500),
])
def test_money_in_minor_units(text, minor):
    t, _raw, _cols = _typed([text], "money")
    assert t["x"].to_pylist() == [minor] and t["_bad"].to_pylist() == [False]


def test_noise_is_found_in_any_chunk_and_slice_of_a_column():
    # the noise checks scan the columns' bytes, not value by value: a value in a later chunk,
    # or a column sliced out of a larger buffer, must be cleaned all the same
    values = pa.chunked_array([pa.array(["1.00", "2.00"]), pa.array(["3.00", "¥4,000.00", "`5.00\t", "1 000.00"])])
    assert C.clean_number(C.clean_text(values), "generic").to_pylist() == ["1.00", "2.00", "3.00", "4000.00", "5.00",
                                                                          "1000.00"]
    sliced = pa.chunked_array([pa.array(["¥9.00", "6.00", "7.00"]).slice(1)])
    assert C.clean_number(C.clean_text(sliced), "generic").to_pylist() == ["6.00", "7.00"]
    assert C.clean_text(pa.chunked_array([], pa.string())).to_pylist() == []


@pytest.mark.parametrize("text", [
    "144.505",  # more decimals than CNY has
    "5.100",  # the same, however equal to 5.10: a statement says what it means
    "1234567890123.00",  # beyond 12 integer digits
    "abc", "1.2.3", "NaN", "inf", "0x10",
])
def test_money_refused(text):
    t, raw, cols = _typed([text], "money")
    assert t["x"].to_pylist() == [None] and t["_bad"].to_pylist() == [True]
    with pytest.raises(ParseError, match=r"line 2: v=.*not an amount with the currency's decimals"):
        C.check_bad("f.csv", t, raw, cols)


def test_money_follows_each_rows_currency():
    currency = pa.chunked_array([pa.array(["JPY", "CNY", "KWD"])])
    t, _raw, _cols = _typed(["1500", "15.00", "1.500"], "money", currency=currency)
    assert t["x"].to_pylist() == [1500, 1500, 1500]
    t, _raw, _cols = _typed(["1500.5", "15.001", "1.5000"], "money", currency=currency)
    assert t["_bad"].to_pylist() == [True, True, True]


def test_empty_values_are_null_and_only_required_ones_are_bad():
    t, raw, cols = _typed(["", "  ", "`"], "money")
    assert t["x"].to_pylist() == [None, None, None] and t["_bad"].to_pylist() == [False, False, False]
    t, raw, cols = _typed(["7.00", " "], "money", required=True)
    assert t["_bad"].to_pylist() == [False, True]
    with pytest.raises(ParseError, match="line 3: v='': required value is empty"):
        C.check_bad("f.csv", t, raw, cols)


@pytest.mark.parametrize("text, minor", [("0.86700", 87), ("0.86500", 87), ("0.86499", 86), ("-0.86500", -87),
                                         ("0", 0), ("12.3", 1230)])
def test_fee_rounds_half_away_from_zero(text, minor):
    t, _raw, _cols = _typed([text], "fee")
    assert t["x"].to_pylist() == [minor]


def test_dec_is_exact():
    from decimal import Decimal

    t, _raw, _cols = _typed(["0.86700", "-1.5", ""], "dec")
    assert t["x"].to_pylist() == [Decimal("0.867000"), Decimal("-1.500000"), None]


@pytest.mark.parametrize("text, expected", [
    ("2026-11-20 12:00:00", datetime(2026, 11, 20, 12)),
    ("2026-11-20T12:00:00", datetime(2026, 11, 20, 12)),
    ("2026-11-20 12:00", datetime(2026, 11, 20, 12)),
    ("2026/11/20 12:00:00", datetime(2026, 11, 20, 12)),  # Excel's layout: DuckDB strptime
    ("2026-1-5 1:02:03", datetime(2026, 1, 5, 1, 2, 3)),
    ("2026-11-20 12：00：00", datetime(2026, 11, 20, 12)),  # full-width colons
    ("`2026-11-20 12:00:00", datetime(2026, 11, 20, 12)),
])
def test_local_times(text, expected):
    t, _raw, _cols = _typed([text], "time")
    assert t["x"].to_pylist() == [expected] and t["_bad"].to_pylist() == [False]


@pytest.mark.parametrize("text", ["2026-02-30 12:00:00", "2026-11-20", "2026-11-20 24:00:00", "2026-11-20T12:00",
                                  "2026-11-20 12:00:00.5", "yesterday"])
def test_times_refused(text):
    # an impossible date beside good ones must not take the good ones down with it
    t, raw, cols = _typed(["2026-11-20 08:00:00", text], "time")
    assert t["x"].to_pylist() == [datetime(2026, 11, 20, 8), None] and t["_bad"].to_pylist() == [False, True]
    with pytest.raises(ParseError, match=r"line 3: v=.*not a date-time"):
        C.check_bad("f.csv", t, raw, cols)


def test_instants_with_and_without_offsets():
    text = pa.chunked_array([pa.array(["2026-11-20T07:00:00+08:00", "2026-11-20 07:00:00", "2026-11-19T23:30:00Z",
                                       "2026-11-20T07:00:00.123-05:30", None])])
    utc, day = C.instants(text, "Asia/Shanghai")
    assert utc.to_pylist() == [datetime(2026, 11, 19, 23), datetime(2026, 11, 19, 23), datetime(2026, 11, 19, 23, 30),
                               datetime(2026, 11, 20, 12, 30, 0, 123000), None]
    assert day.to_pylist() == [date(2026, 11, 20), date(2026, 11, 20), date(2026, 11, 20), date(2026, 11, 20), None]
    # an offset Arrow refuses (an impossible date) leaves the decision to DuckDB, row by row
    utc, _day = C.instants(pa.chunked_array([pa.array(["2026-02-30T07:00:00+08:00", "2026-11-20T07:00:00+08:00"])]),
                           "Asia/Shanghai")
    assert utc.to_pylist() == [None, datetime(2026, 11, 19, 23)]


@pytest.mark.parametrize("local", ["2026-03-29 02:30:00", "2026-10-25 02:30:00", "2026-10-25 01:30:00",
                                   "2026-07-01 12:00:00"])
def test_daylight_saving_edges_resolve_as_duckdb_does(local):
    """A skipped or repeated local time is read as DuckDB's ICU reads it (the rule every
    other source follows), not refused and not guessed differently."""
    expected = duckdb.execute("SET TimeZone='UTC'").execute(
        f"SELECT timezone('UTC', timezone('Europe/Berlin', TIMESTAMP '{local}'))").fetchall()[0][0]
    got = C.to_utc(pa.chunked_array([pa.array([datetime.fromisoformat(local)], pa.timestamp("us"))]), "Europe/Berlin")
    assert got.to_pylist() == [expected]


def test_text_cleaning():
    values = pa.array(["`abc", "``abc", " abc\u3000", "", "  ", "a`b\tc", None])
    assert C.clean_text(values, "generic").to_pylist() == ["abc", "abc", "abc", None, None, "abc", None]
    assert C.clean_text(values, "backtick").to_pylist() == ["abc", "abc", "abc", None, None, "a`b\tc", None]


def test_join_text_is_concat_ws():
    a = pa.chunked_array([pa.array([None, "x", None, "p"])])
    b = pa.chunked_array([pa.array([None, None, "y", "r"])])
    assert C.join_text(a, b, " | ").to_pylist() == ["", "x", "y", "p | r"]

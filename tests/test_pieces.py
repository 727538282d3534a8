"""Large statements are read and written in pieces: the same records, errors and totals as
one read, one transaction per file whatever the number of pieces."""

from __future__ import annotations

import json
import os
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import EXAMPLES, demo_config, fresh_database, table_counts
from core.ingest import READ_AHEAD_NICE, _nice, _yield_to_earlier_files, ingest_file, ingest_files
from core.sources import ControlTotalError, InputFile, ParseError
from core.sources import base
from core.sources.base import Statement
from core.sources.orders import OrdersExport
from core.sources.tabular import line_pieces
from core.sources.wechatpay import SUMMARY_TOTALS, WeChatPayTradeBill
from core.store import find_ledgers
from models.db import adbc_connect

WX_DAY1 = EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv"
ORDERS_DAY1 = EXAMPLES / "orders_2026-11-20.csv"


def _source(cls, cfg, kind: str):
    merchant = cfg.merchants[0]
    return cls(next(s for s in merchant.sources if s.kind == kind), merchant)


def _read(source, path: Path, piece_bytes: int | None) -> tuple[list[pa.Table], Statement]:
    out = list(source.parse_pieces(InputFile.read(path), piece_bytes))
    return out[:-1], out[-1]


# -- splitting a body ---------------------------------------------------------------------

def test_pieces_end_at_line_ends_outside_quotes_and_know_their_first_line():
    body = (b'a,1\n"memo with\na line break",2\n"say ""hi""\n, twice",3\nb,4\nc,5\n')
    for size in range(1, len(body) + 1):
        got = list(line_pieces(body, 0, len(body), 7, size))
        assert b"".join(bytes(p) for p, _, _ in got) == body
        for piece, line, lines in got:
            assert bytes(piece).count(b'"') % 2 == 0  # never cut inside a quoted field
            assert bytes(piece).endswith(b"\n")
            assert lines == bytes(piece).count(b"\n")
        # each piece's first line is 7 + the line breaks before it
        seen = 0
        for piece, line, _ in got:
            assert line == 7 + seen
            seen += bytes(piece).count(b"\n")
    # a piece runs to the first line end outside quotes after its size (1, 2, then 4 bytes
    # for a size of 4: the first pieces are smaller); rows 2 and 3 span two lines each
    assert [p.first_line for p in line_pieces(body, 0, len(body), 1, 4)] == [1, 2, 4, 6]
    assert len(list(line_pieces(body, 0, len(body), 1, None))) == 1


def test_a_body_without_a_final_line_break_keeps_its_last_row():
    body = b"a,1\nb,2\nc,3"
    got = list(line_pieces(body, 0, len(body), 2, 3))
    assert [bytes(p.data) for p in got] == [b"a,1\n", b"b,2\n", b"c,3"]
    assert [(p.first_line, p.lines) for p in got] == [(2, 1), (3, 1), (4, 1)]
    assert list(line_pieces(body, 0, len(body), 2, None))[0][1:] == (2, 3)
    assert list(line_pieces(body, 4, 4, 3, 2))[0][1:] == (3, 0)  # an empty body: one empty piece


# -- the same records as one read ---------------------------------------------------------

@pytest.mark.parametrize("cls, kind, path", [(WeChatPayTradeBill, "wechatpay", WX_DAY1),
                                             (OrdersExport, "orders", ORDERS_DAY1)])
def test_a_statement_read_in_pieces_gives_the_records_of_one_read(tmp_path, cls, kind, path):
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    source = _source(cls, cfg, kind)
    whole = source.parse(InputFile.read(path))
    tables, end = _read(source, path, 300)
    assert len(tables) > 3
    pieces = pa.concat_tables(tables)
    key = [("line", "ascending"), ("kind", "ascending")]
    assert pieces.sort_by(key).equals(whole.records.sort_by(key))
    assert (end.business_day, end.control_totals, end.row_count) == \
        (whole.business_day, whole.control_totals, whole.records.num_rows)


def test_a_real_bill_read_in_pieces_gives_the_records_of_one_read(samples, tmp_path):
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    source = _source(WeChatPayTradeBill, cfg, "wechatpay")
    path = samples / "wechatpay" / "gunsluo_tradebill_ALL.csv"
    whole = source.parse(InputFile.read(path))
    tables, end = _read(source, path, 500)
    assert len(tables) > 1
    assert pa.concat_tables(tables).equals(whole.records)
    assert end.control_totals == whole.control_totals and end.row_count == whole.row_count


# -- errors: the same line, found in its piece, or after the last piece ----------------------

def _wx_with(tmp_path, line_no: int, column: int, value: str) -> Path:
    lines = WX_DAY1.read_bytes().decode("utf-8").split("\r\n")
    fields = lines[line_no - 1].split(",")
    fields[column] = value
    lines[line_no - 1] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_bytes("\r\n".join(lines).encode("utf-8"))
    return bad


def test_a_bad_value_in_a_late_piece_names_its_own_line(tmp_path):
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    source = _source(WeChatPayTradeBill, cfg, "wechatpay")
    bad = _wx_with(tmp_path, 30, 24, "`9.9x9")
    with pytest.raises(ParseError) as whole:
        source.parse(InputFile.read(bad))
    got = []
    with pytest.raises(ParseError) as in_pieces:
        for piece in source.parse_pieces(InputFile.read(bad), 300):
            got.append(piece)
    assert str(in_pieces.value) == str(whole.value)
    assert "line 30" in str(in_pieces.value) and len(got) > 3  # earlier pieces were handed over first


def test_the_summary_is_checked_against_every_piece(tmp_path):
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    source = _source(WeChatPayTradeBill, cfg, "wechatpay")
    bad = tmp_path / "totals.csv"
    bad.write_bytes(WX_DAY1.read_bytes().replace(b"`1267.00,", b"`1267.10,"))
    with pytest.raises(ControlTotalError, match="add up to 1267.00"):
        list(source.parse_pieces(InputFile.read(bad), 300))


def test_an_order_repeated_in_another_piece_is_refused_as_in_one_read(tmp_path):
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    source = _source(OrdersExport, cfg, "orders")
    lines = ORDERS_DAY1.read_text(encoding="utf-8").splitlines()
    lines[45] = lines[45].replace(lines[45].split(",")[0], lines[2].split(",")[0], 1)  # line 46 repeats line 3's order
    bad = tmp_path / "orders.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ParseError) as whole:
        source.parse(InputFile.read(bad))
    with pytest.raises(ParseError) as in_pieces:
        list(source.parse_pieces(InputFile.read(bad), 300))
    assert str(in_pieces.value) == str(whole.value)
    assert "line 46" in str(whole.value) and "also on line 3" in str(whole.value)


# -- ingest: one transaction per file, however many pieces ------------------------------------

@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(base, "PIECE_BYTES", 300)


def _stored(url: str) -> list[tuple]:
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT l.source, l.side, r.kind, r.ref, r.amount, r.line, r.business_day FROM record r "
                    "JOIN ledger l ON l.id = r.ledger_id ORDER BY l.source, l.side, r.kind, r.ref")
        return [tuple(str(v) for v in row) for row in cur.fetchall()]


def test_files_ingested_in_pieces_store_what_one_piece_stores(db_url, tmp_path, small_pieces, monkeypatch):
    cfg = demo_config(db_url)
    results = [ingest_file(cfg, cfg.merchants[0], p) for p in sorted(EXAMPLES.iterdir())]
    in_pieces = (_stored(db_url), [(r.rows, r.new_rows, r.business_day) for r in results])

    monkeypatch.setattr(base, "PIECE_BYTES", None)
    kind = "sqlite" if db_url.startswith("sqlite") else "postgres"
    (tmp_path / "whole").mkdir()
    with fresh_database(kind, tmp_path / "whole") as url:
        cfg2 = demo_config(url)
        results = [ingest_file(cfg2, cfg2.merchants[0], p) for p in sorted(EXAMPLES.iterdir())]
        assert in_pieces == (_stored(url), [(r.rows, r.new_rows, r.business_day) for r in results])
    assert len(in_pieces[0]) == 124


def test_a_bad_row_in_a_late_piece_leaves_nothing_behind(cfg, tmp_path, small_pieces):
    before = table_counts(cfg.database.url)
    bad = _wx_with(tmp_path, 30, 24, "`9.9x9")
    with pytest.raises(ParseError, match="line 30"):
        ingest_file(cfg, cfg.merchants[0], bad)
    assert table_counts(cfg.database.url) == before  # no merchant, ledger, statement or record row
    assert find_ledgers(cfg.database.url, cfg.merchants[0].id) == {}


def _bill_with_summary(header: str, rows: list[str], summary_names: str) -> str:
    """A trade bill of these rows, its summary row recomputed from them."""
    cols = header.split(",")
    values = []
    for name in summary_names.split(","):
        if name == "总交易单数":
            values.append(f"`{len(rows)}")
            continue
        at = cols.index(SUMMARY_TOTALS[name])
        values.append(f"`{sum(Decimal(r.split(',')[at].lstrip('`') or 0) for r in rows):.2f}")
    return "\r\n".join([header, *rows, summary_names, ",".join(values)]) + "\r\n"


def test_a_row_delivered_twice_in_one_file_is_stored_once_and_noted(cfg, tmp_path, small_pieces):
    lines = WX_DAY1.read_bytes().decode("utf-8").split("\r\n")
    summary = next(i for i, line in enumerate(lines) if line.startswith("总交易单数"))
    rows = lines[1:summary]
    path = tmp_path / "twice.csv"  # the first row again at the end, in a later piece
    path.write_bytes(_bill_with_summary(lines[0], rows + [rows[0]], lines[summary]).encode("utf-8"))
    result = ingest_file(cfg, cfg.merchants[0], path)
    assert (result.rows, result.new_rows) == (len(rows) + 1, len(rows))
    with adbc_connect(cfg.database.url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT duplicates FROM statement_file WHERE id = {result.file_id}")
        noted = json.loads(cur.fetchone()[0])
    assert [(d["line"], d["kept_line"]) for d in noted] == [(len(rows) + 2, 2)]
    assert table_counts(cfg.database.url)["record"] == len(rows)


def test_one_batch_skips_stored_files_reports_missing_ones_and_stores_the_rest(cfg, tmp_path, small_pieces):
    # the reader starts on the first file while the files are hashed: a file found stored
    # already, or one that cannot be read, must neither stall nor shift the files after it
    merchant = cfg.merchants[0]
    ingest_file(cfg, merchant, WX_DAY1)
    before = table_counts(cfg.database.url)
    missing = tmp_path / "gone.csv"
    out = ingest_files(cfg, merchant, [WX_DAY1, missing, ORDERS_DAY1, WX_DAY1])
    assert (out[0].already_ingested, out[0].source, out[0].format) == (True, "wechatpay", "wechatpay.trade_bill")
    assert isinstance(out[1], ParseError) and "gone.csv" in str(out[1]) and "file not found" in str(out[1])
    assert (out[2].already_ingested, out[2].rows, out[2].new_rows) == (False, 52, 52)
    assert out[3].already_ingested and out[3].file_id == out[0].file_id
    after = table_counts(cfg.database.url)
    assert after["record"] == before["record"] + 52 and after["statement_file"] == before["statement_file"] + 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have a niceness of their own on Linux only")
def test_a_reader_reading_ahead_runs_below_the_writer_and_the_readers_before_it():
    # the writer's thread keeps its priority; the reader of the file after the one being
    # stored yields to both, the one after that yields more
    def tid_nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    writer, seen = tid_nice(), {}

    def read(rank: int) -> None:
        _yield_to_earlier_files(_nice(), rank)
        seen[rank] = tid_nice()

    for rank in (0, 1, 2):
        thread = threading.Thread(target=read, args=(rank,))
        thread.start()
        thread.join()
    assert seen == {0: writer, 1: min(writer + READ_AHEAD_NICE, 19), 2: min(writer + 2 * READ_AHEAD_NICE, 19)}
    assert tid_nice() == writer


def test_prepare_puts_records_in_key_order_and_leaves_ordered_ones_as_they_are(tmp_path):
    # rows in (kind, ref) order are appended to the identity index; an export already in
    # that order is not sorted again, and one that is not comes out the same as sorted
    cfg = demo_config(f"sqlite:///{tmp_path / 'x.db'}")
    records = _source(OrdersExport, cfg, "orders").parse(InputFile.read(ORDERS_DAY1)).records
    from core.store import prepare

    key = [("source", "ascending"), ("kind", "ascending"), ("ref", "ascending")]
    ordered = prepare(cfg.database.url, records.sort_by(key))
    shuffled = prepare(cfg.database.url, records.take(pa.array(list(range(records.num_rows))[::-1])))
    assert shuffled.equals(ordered)
    keys = [(r["source"], r["kind"], r["ref"]) for r in ordered.to_pylist()]
    assert keys == sorted(keys) and len(keys) == records.num_rows

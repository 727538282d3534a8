"""The run's two reads (core.store): the narrow columns for every record, the wide text by
id or by range, hold exactly what the whole-record read holds, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from conftest import EXAMPLES, demo_config
from core.ingest import ingest_file
from core.store import file_paths, find_ledgers, load_match_records, load_record_details, load_records

FIRST, LAST = date(2026, 11, 19), date(2026, 11, 22)


def _rows(table: pa.Table, names) -> dict[int, tuple]:
    return {r["id"]: tuple(r[n] for n in names) for r in table.to_pylist()}


def test_narrow_read_and_details_hold_what_the_whole_read_holds(db_url):
    cfg = demo_config(db_url)
    for path in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, cfg.merchants[0], path)
    paths = file_paths(db_url)
    ledgers = find_ledgers(db_url, "demo-shop")
    assert len(ledgers) >= 4
    for (_source, side), ledger in sorted(ledgers.items()):
        full = load_records(db_url, ledger, FIRST, LAST)
        assert full.num_rows
        fees = side == "channel"
        narrow = load_match_records(db_url, ledger, FIRST, LAST, fees=fees)
        names = ["kind", "txn_id", "order_id", "amount", "currency", "status", "business_day", "line"]
        names += ["fee", "discount"] if fees else []
        assert "fee" in narrow.column_names if fees else "fee" not in narrow.column_names
        assert _rows(narrow, names) == _rows(full, names)
        assert ({r["id"]: paths[r["file_id"]] for r in narrow.to_pylist()} ==
                {r["id"]: r["file"] for r in full.to_pylist()})
        wide = ["ref", "payer", "memo", "occurred_at"]
        some = full["id"].combine_chunks()[::2]
        expected = {i: v for i, v in _rows(full, wide).items() if i in set(some.to_pylist())}
        by_id = load_record_details(db_url, some)
        by_range = load_record_details(db_url, some, ledger, FIRST, LAST, rows=len(some) + 1)
        for got in (by_id, by_range):
            assert {i: (ref, payer, memo, str(at)[:19]) for i, (ref, payer, memo, at) in _rows(got, wide).items()} == \
                   {i: (ref, payer, memo, str(at)[:19]) for i, (ref, payer, memo, at) in expected.items()}


def test_nothing_in_the_window_is_an_empty_typed_table(db_url):
    table = load_match_records(db_url, 12345, FIRST, LAST)
    assert table.num_rows == 0 and "file_id" in table.column_names
    assert load_record_details(db_url, pa.array([], pa.int64())).num_rows == 0

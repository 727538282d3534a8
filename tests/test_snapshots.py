"""Column snapshots beside a SQLite database (core.snapshots): a run reads from them exactly
what it reads from SQLite, and only a snapshot of the very file the database holds."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import EXAMPLES, demo_config, fresh_database
from core import snapshots
from core.ingest import ingest_file, ingest_files
from core.sources import ParseError, base
from core.store import find_ledgers, load_match_records
from models.db import adbc_connect

DAY = date(2026, 11, 20)


@pytest.fixture
def ingested(tmp_path):
    """The demo's two days, ingested into a new SQLite database -> (config, snapshot folder)."""
    with fresh_database("sqlite", tmp_path) as url:
        cfg = demo_config(url)
        ingest_files(cfg, cfg.merchants[0], sorted(EXAMPLES.iterdir()))
        yield cfg, tmp_path / "recon.db-snapshots"


def _loads(cfg) -> dict:
    """Every ledger's match records for windows around both days, rows in id order."""
    out = {}
    for key, ledger in sorted(find_ledgers(cfg.database.url, cfg.merchants[0].id).items()):
        for first, last in ((DAY, DAY), (DAY + timedelta(1), DAY + timedelta(1)), (DAY - timedelta(1), DAY + timedelta(2))):
            for fees in (True, False):
                table = load_match_records(cfg.database.url, ledger, first, last, fees)
                out[key, first, last, fees] = (table.schema, table.sort_by("id").to_pylist())
    return out


def _file_ids(cfg) -> dict[str, int]:
    with adbc_connect(cfg.database.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT path, id FROM statement_file")
        return {Path(p.split("!")[0]).name: i for p, i in cur.fetchall()}  # a zip: "archive!member"


def test_a_run_reads_from_snapshots_what_it_reads_from_sqlite(ingested):
    cfg, folder = ingested
    ids = _file_ids(cfg)
    # every file stored as it came has one; the 21st's WeChat bill repeats a row of the 20th
    # (stored once, through the staging table), so its ids do not follow its rows: none
    assert sorted(snapshots.held(folder)) == sorted(i for name, i in ids.items() if not name.endswith(".csv.gz"))
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]
    with_snapshots = _loads(cfg)
    assert sum(len(rows) for _schema, rows in with_snapshots.values()) > 0
    shutil.rmtree(folder)
    assert _loads(cfg) == with_snapshots


def _rewrite(folder: Path, file_id: int, names: dict | None = None, rows: slice | None = None) -> None:
    """Replace a snapshot: its amounts changed (so a run that used it would show), its
    metadata or its rows."""
    path = snapshots.path_of(folder, file_id)
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        metadata, table = dict(reader.schema.metadata), reader.read_all()
    table = table.set_column(table.schema.get_field_index("amount"), "amount", pc.add(table["amount"], 1))
    if rows is not None:
        table = table.slice(rows.start, rows.stop - rows.start)
    metadata.update(names or {})
    path.unlink()
    with pa.ipc.new_file(str(path), snapshots.SCHEMA.with_metadata(metadata)) as writer:
        writer.write_table(table)


def test_only_a_snapshot_of_the_very_file_held_is_used(ingested):
    cfg, folder = ingested
    orders = _file_ids(cfg)["orders_2026-11-20.csv"]
    ledger = find_ledgers(cfg.database.url, cfg.merchants[0].id)[("wechatpay", "internal")]

    def amounts():
        return sorted(load_match_records(cfg.database.url, ledger, DAY, DAY)["amount"].to_pylist())

    stored = amounts()
    _rewrite(folder, orders)  # the same file, as the metadata says: used (this is what makes runs fast)
    assert amounts() == [a + 1 for a in stored]
    for names in ({b"sha256": b"0" * 64}, {b"ingested_at": b"2026-01-01 00:00:00.000000"}, {b"file_id": b"99"}):
        _rewrite(folder, orders, names=names)  # another database's file, or another file
        assert amounts() == stored
    _rewrite(folder, orders, rows=slice(1, 52))  # not the file's whole id range
    assert amounts() == stored
    snapshots.path_of(folder, orders).write_bytes(b"ARROW1\x00\x00 cut short")
    assert amounts() == stored


def test_a_rejected_file_leaves_no_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "PIECE_BYTES", 300)  # the bad amount comes in a late piece
    lines = (EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv").read_bytes().decode("utf-8").split("\r\n")
    fields = lines[29].split(",")
    fields[24] = "`9.9x9"  # line 30's 订单金额
    lines[29] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_bytes("\r\n".join(lines).encode("utf-8"))
    with fresh_database("sqlite", tmp_path) as url:
        cfg = demo_config(url)
        with pytest.raises(ParseError, match="line 30"):
            ingest_file(cfg, cfg.merchants[0], bad)
    folder = tmp_path / "recon.db-snapshots"
    assert not folder.exists() or not list(folder.iterdir())


def _bill_of(tmp_path: Path, day: str) -> Path:
    """A one-payment WeChat trade bill of `day` (the demo's first row, new ids), summary agreeing."""
    lines = (EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv").read_bytes().decode("utf-8").split("\r\n")
    row = lines[1].replace("2026-11-20", day).replace("4200001202611200000000001001", f"4200001{day.replace('-', '')}0000000000001")
    summary = "`1,`58.00,`0.00,`0.00,`0.35000,`58.00,`0.00"
    path = tmp_path / f"wechatpay_tradebill_ALL_{day}.csv"
    row = row.replace("W-1001", f"W-{day}")  # each bill its own order, so it goes straight in
    path.write_bytes("\r\n".join([lines[0], row, lines[-3], summary, ""]).encode("utf-8"))
    return path


def _with_snapshot_days(cfg, days: int):
    return cfg.model_copy(update={"database": cfg.database.model_copy(update={"snapshot_days": days})})


def test_snapshots_of_days_long_past_are_removed(tmp_path):
    with fresh_database("sqlite", tmp_path) as url:
        cfg = demo_config(url)
        assert cfg.database.snapshot_days == 35
        ingest_files(cfg, cfg.merchants[0], sorted(EXAMPLES.iterdir()))
        ids, folder = _file_ids(cfg), tmp_path / "recon.db-snapshots"
        of_the_21st = {ids["20881234567890120156_20261121.csv.zip"], ids["orders_2026-11-21.csv"]}
        assert len(snapshots.held(folder)) == 5
        # a bill of the 26th of December: what ended on the 20th of November is 36 days back
        later = ingest_file(cfg, cfg.merchants[0], _bill_of(tmp_path, "2026-12-26"))
        assert later.new_rows == 1 and sorted(snapshots.held(folder)) == sorted(of_the_21st | {later.file_id})
        # and one of the 27th: the 21st's go too
        latest = ingest_file(cfg, cfg.merchants[0], _bill_of(tmp_path, "2026-12-27"))
        assert sorted(snapshots.held(folder)) == sorted([later.file_id, latest.file_id])


def test_no_snapshots_where_the_config_says_none(tmp_path):
    with fresh_database("sqlite", tmp_path) as url:
        cfg = _with_snapshot_days(demo_config(url), 0)
        ingest_files(cfg, cfg.merchants[0], sorted(EXAMPLES.iterdir()))
        assert not (tmp_path / "recon.db-snapshots").exists()


def test_a_snapshot_that_cannot_be_written_leaves_the_ingest_as_it_is(tmp_path):
    (tmp_path / "recon.db-snapshots").write_text("a file where the folder would go")
    with fresh_database("sqlite", tmp_path) as url:
        cfg = demo_config(url)
        results = ingest_files(cfg, cfg.merchants[0], sorted(EXAMPLES.iterdir()))
        assert [r.new_rows for r in results] == [20, 4, 52, 10, 32, 6]
        loaded = _loads(cfg)
    (tmp_path / "with").mkdir()
    with fresh_database("sqlite", tmp_path / "with") as url:
        cfg = demo_config(url)
        ingest_files(cfg, cfg.merchants[0], sorted(EXAMPLES.iterdir()))
        assert snapshots.held(tmp_path / "with" / "recon.db-snapshots")
        assert _loads(cfg) == loaded

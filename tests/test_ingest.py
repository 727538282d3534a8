"""Ingest on SQLite and PostgreSQL: idempotent, atomic per file, clear errors."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from conftest import EXAMPLES, table_counts
from core.ingest import ingest_file
from core.sources import ControlTotalError, ParseError

WX_DAY1 = EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv"
WX_DAY2_GZ = EXAMPLES / "wechatpay_tradebill_ALL_2026-11-21.csv.gz"
ALIPAY_DAY1 = EXAMPLES / "20881234567890120156_20261120.csv.zip"
ORDERS_DAY1 = EXAMPLES / "orders_2026-11-20.csv"


def _merchant(cfg):
    return cfg.merchants[0]


def test_demo_files_ingest_with_counts_and_days(cfg):
    m = _merchant(cfg)
    results = {p.name: ingest_file(cfg, m, p) for p in sorted(EXAMPLES.iterdir())}
    got = {name: (r.format, r.rows, r.new_rows, str(r.business_day)) for name, r in results.items()}
    assert got == {
        "20881234567890120156_20261120.csv.zip": ("alipay.trade_bill", 20, 20, "2026-11-20"),
        "20881234567890120156_20261121.csv.zip": ("alipay.trade_bill", 4, 4, "2026-11-21"),
        "orders_2026-11-20.csv": ("orders.export", 52, 52, "2026-11-20"),
        "orders_2026-11-21.csv": ("orders.export", 10, 10, "2026-11-21"),
        "wechatpay_tradebill_ALL_2026-11-20.csv": ("wechatpay.trade_bill", 32, 32, "2026-11-20"),
        # the 21st's bill re-delivers one row of the 20th: stored once, noted as a duplicate
        "wechatpay_tradebill_ALL_2026-11-21.csv.gz": ("wechatpay.trade_bill", 7, 6, "2026-11-21"),
    }
    assert table_counts(cfg.database.url)["record"] == 124


def test_reingesting_the_same_files_changes_nothing(cfg):
    m = _merchant(cfg)
    for p in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, m, p)
    before = table_counts(cfg.database.url)
    again = [ingest_file(cfg, m, p) for p in sorted(EXAMPLES.iterdir())]
    assert all(r.already_ingested and r.new_rows == 0 for r in again)
    assert table_counts(cfg.database.url) == before


def test_same_transactions_in_an_overlapping_file_are_stored_once(cfg, tmp_path):
    """A re-issued bill (different bytes: LF instead of CRLF) holds the same rows."""
    m = _merchant(cfg)
    ingest_file(cfg, m, WX_DAY1)
    before = table_counts(cfg.database.url)["record"]
    reissued = tmp_path / "reissued.csv"
    reissued.write_bytes(WX_DAY1.read_bytes().replace(b"\r\n", b"\n"))
    r = ingest_file(cfg, m, reissued)
    assert not r.already_ingested and r.rows == 32 and r.new_rows == 0
    assert table_counts(cfg.database.url)["record"] == before


def _assert_rejected_without_trace(cfg, path: Path, *fragments: str, error=ParseError):
    before = table_counts(cfg.database.url)
    with pytest.raises(error) as exc:
        ingest_file(cfg, _merchant(cfg), path)
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message, message
    assert table_counts(cfg.database.url) == before
    return message


def test_bad_amount_is_rejected_naming_file_line_field_and_value(cfg, tmp_path):
    lines = WX_DAY1.read_bytes().decode("utf-8").split("\r\n")
    fields = lines[5].split(",")
    fields[24] = "`12.3x4"  # 订单金额 of the row on line 6
    lines[5] = ",".join(fields)
    bad = tmp_path / "bad_amount.csv"
    bad.write_bytes("\r\n".join(lines).encode("utf-8"))
    _assert_rejected_without_trace(cfg, bad, str(bad), "line 6", "订单金额='12.3x4'")


def test_amount_with_more_decimals_than_the_currency_is_rejected(cfg, tmp_path):
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id\n"
                   "X1,wechatpay,10.00,CNY,paid,2026-11-20T10:00:00+08:00,0,\n"
                   "X2,wechatpay,10.005,CNY,paid,2026-11-20T10:00:00+08:00,0,\n", encoding="utf-8")
    _assert_rejected_without_trace(cfg, bad, "line 3", "amount='10.005'", "currency's decimals")


def test_totals_that_disagree_reject_the_file_naming_the_totals(cfg, tmp_path):
    bad = tmp_path / "totals.csv"
    bad.write_bytes(WX_DAY1.read_bytes().replace(b"`1267.00,", b"`1267.10,"))
    _assert_rejected_without_trace(cfg, bad, str(bad), "line 35", "应结订单总金额='1267.10'",
                                   "add up to 1267.00", error=ControlTotalError)


def test_truncated_zip_is_rejected(cfg, tmp_path):
    bad = tmp_path / "20881234567890120156_20261120.csv.zip"
    bad.write_bytes(ALIPAY_DAY1.read_bytes()[:-200])
    _assert_rejected_without_trace(cfg, bad, str(bad), "zip")


def test_truncated_gzip_is_rejected(cfg, tmp_path):
    bad = tmp_path / "bill.csv.gz"
    bad.write_bytes(WX_DAY2_GZ.read_bytes()[:-40])
    _assert_rejected_without_trace(cfg, bad, str(bad), "truncated")


def test_bill_cut_before_its_summary_is_rejected(cfg, tmp_path):
    bad = tmp_path / "cut.csv"
    bad.write_bytes(b"\r\n".join(WX_DAY1.read_bytes().split(b"\r\n")[:10]))
    _assert_rejected_without_trace(cfg, bad, "no summary row", "truncated")


def test_wrong_encoding_is_rejected_naming_the_line(cfg, tmp_path):
    """A WeChat bill is UTF-8; a row saved as GBK by a spreadsheet is refused, with its line."""
    raw = WX_DAY1.read_bytes().split(b"\r\n")
    raw[3] = raw[3].decode("utf-8").encode("gbk")
    bad = tmp_path / "gbk_row.csv"
    bad.write_bytes(b"\r\n".join(raw))
    _assert_rejected_without_trace(cfg, bad, str(bad), "line 4", "not valid utf-8-sig")


def test_alipay_detail_in_gbk_zip_with_gbk_member_names(cfg):
    z = zipfile.ZipFile(ALIPAY_DAY1)
    assert all(not i.flag_bits & 0x800 for i in z.infolist())  # names really are GBK bytes
    r = ingest_file(cfg, _merchant(cfg), ALIPAY_DAY1)
    assert (r.rows, r.business_day.isoformat()) == (20, "2026-11-20")


def test_unknown_file_is_rejected_clearly(cfg, tmp_path):
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\n")
    _assert_rejected_without_trace(cfg, odd, "no configured source of merchant demo-shop recognises this file")


def test_orders_with_unknown_channel_name_the_line(cfg, tmp_path):
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id\n"
                   "X1,wechatpay,10.00,CNY,paid,2026-11-20T10:00:00+08:00,0,\n"
                   "X2,unionpay,10.00,CNY,paid,2026-11-20T10:00:00+08:00,0,\n", encoding="utf-8")
    _assert_rejected_without_trace(cfg, bad, "line 3", "channel='unionpay'", "known: alipay, orders, wechatpay")


def test_orders_header_mapping_and_channel_names_from_config(db_url, tmp_path):
    from conftest import demo_config

    cfg = demo_config(db_url, orders={
        "columns": {"订单号": "order_id", "支付渠道": "channel", "金额": "amount", "状态": "status", "支付时间": "paid_at"},
        "channel_names": {"微信支付": "wechatpay"},
    })
    f = tmp_path / "订单导出.csv"
    f.write_bytes("订单号,支付渠道,金额,状态,支付时间\nX1,微信支付,\"1,234.50\",已支付,2026-11-20 10:00:00\n".encode("gbk"))
    r = ingest_file(cfg, cfg.merchants[0], f)
    assert (r.rows, r.business_day.isoformat()) == (1, "2026-11-20")
    from core.store import ledger_ids, load_records
    from datetime import date

    lid = ledger_ids(db_url, "demo-shop", {("wechatpay", "internal")})[("wechatpay", "internal")]
    rec = load_records(db_url, lid, date(2026, 11, 20), date(2026, 11, 20)).to_pylist()
    assert [(x["order_id"], x["amount"], x["currency"], x["status"]) for x in rec] == [("X1", 123450, "CNY", "paid")]
    assert str(rec[0]["occurred_at"]).startswith("2026-11-20 02:00:00")  # 10:00 Beijing = 02:00 UTC


def test_xlsx_orders_export(db_url, tmp_path):
    import openpyxl

    from conftest import demo_config

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["order_id", "channel", "amount", "currency", "status", "paid_at", "refund_amount", "channel_txn_id"])
    import datetime as dt

    ws.append(["X1", "alipay", 12.5, "CNY", "paid", dt.datetime(2026, 11, 20, 23, 30), 0, None])
    ws.append(["X2", "alipay", "8.00", "CNY", "refunded", "2026-11-20T09:00:00+08:00", 8, "2026112022001"])
    path = tmp_path / "orders.xlsx"
    wb.save(path)
    cfg = demo_config(db_url)
    r = ingest_file(cfg, cfg.merchants[0], path)
    assert (r.format, r.rows) == ("orders.export", 3)  # two payments and one refund


def test_gzip_bomb_is_refused_within_bounded_memory(cfg, tmp_path, monkeypatch):
    import core.sources.base as base

    monkeypatch.setattr(base, "MAX_UNCOMPRESSED_BYTES", 5 * 1024 * 1024)
    bomb = tmp_path / "bomb.csv.gz"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        for _ in range(20):
            gz.write(b"\0" * (1 << 20))
    bomb.write_bytes(buf.getvalue())
    _assert_rejected_without_trace(cfg, bomb, "zip bomb")


def test_a_collision_the_quick_look_misses_falls_back_to_the_staged_path(cfg):
    """Rows whose identities are stored under another business day: the straight append is
    refused by the unique index and the file goes in staged, duplicates noted, atomically."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.compute as pc

    from core import store
    from core.sources import InputFile, REGISTRY

    m = _merchant(cfg)
    first = ingest_file(cfg, m, WX_DAY1)
    src = REGISTRY["wechatpay"](m.source("wechatpay"), m)
    records = src.parse(InputFile.read(WX_DAY1)).records
    later = pc.add(records["business_day"], pa.scalar(timedelta(days=10)))  # nothing stored near these days
    records = records.set_column(records.schema.get_field_index("business_day"), "business_day", later)
    records = records.set_column(records.schema.get_field_index("source"), "source",
                                 pa.array(["wechatpay"] * records.num_rows))
    ledger = store.ledger_ids(cfg.database.url, m.id, {("wechatpay", "channel")})[("wechatpay", "channel")]
    records = records.append_column("ledger_id", pa.array([ledger] * records.num_rows, pa.int64()))
    stored = store.write_statement(cfg.database.url, merchant_id=m.id, source="wechatpay", side="channel",
                                   fmt="wechatpay.trade_bill", path="shifted.csv", sha256="0" * 64, business_day=None,
                                   control_totals={}, records=records)
    assert (stored.new_rows, stored.already_ingested) == (0, False)
    counts = table_counts(cfg.database.url)
    assert (counts["record"], counts["statement_file"]) == (first.rows, 2)


def test_a_statement_meeting_another_writer_on_sqlite_waits_for_it(tmp_path):
    """SQLite, several processes (the pulls due at the same minute each ingest in a process of
    their own): a statement written while another connection holds the write lock waits for
    it and then goes in, instead of failing "database is locked" at once (a transaction that
    read first cannot wait: its snapshot is stale by the time it may write)."""
    import threading
    import time

    import pyarrow as pa

    from conftest import demo_config, fresh_database
    from core import store
    from core.sources import REGISTRY, InputFile
    from models.db import adbc_connect

    with fresh_database("sqlite", tmp_path) as url:
        cfg = demo_config(url)
        m = _merchant(cfg)
        store.ensure_merchant(url, m)
        records = REGISTRY["wechatpay"](m.source("wechatpay"), m).parse(InputFile.read(WX_DAY1)).records
        records = records.set_column(records.schema.get_field_index("source"), "source",
                                     pa.array(["wechatpay"] * records.num_rows))
        ledger = store.ledger_ids(url, m.id, {("wechatpay", "channel")})[("wechatpay", "channel")]
        records = records.append_column("ledger_id", pa.array([ledger] * records.num_rows, pa.int64()))
        # ORM work is done: from here only ADBC connections hold the file (models/db.py)
        outcome: dict = {}

        def write():
            try:
                outcome["stored"] = store.write_statement(
                    url, merchant_id=m.id, source="wechatpay", side="channel", fmt="wechatpay.trade_bill",
                    path=str(WX_DAY1), sha256="1" * 64, business_day=None, control_totals={}, records=records)
            except Exception as exc:
                outcome["error"] = exc

        with adbc_connect(url) as other, other.cursor() as cur:
            cur.execute(f"UPDATE merchant SET name = 'Renamed' WHERE id = '{m.id}'")  # another writer, not committed
            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.5)
            assert writer.is_alive() and not outcome, outcome  # waiting for the lock, not failed
            other.commit()
        writer.join(30)
        assert "error" not in outcome, outcome
        assert outcome["stored"].new_rows == records.num_rows
        counts = table_counts(url)
        assert (counts["statement_file"], counts["record"]) == (1, records.num_rows)

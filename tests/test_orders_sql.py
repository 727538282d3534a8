"""Orders read straight from the shop's database (kind orders_sql), on SQLite and PostgreSQL.

The shop's table holds the demo day's orders with real column types (NUMERIC money,
TIMESTAMPTZ and naive local timestamps on PostgreSQL; SQLite's loose types); read in small
chunks, the records must be exactly those of the same orders exported as CSV.
"""

from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import EXAMPLES
from core.config import from_dict
from core.ingest import IngestError, ingest_sql
from core.sources import InputFile, ParseError
from core.sources.orders import OrdersExport
from core.sources.orders_sql import OrdersSql

D1 = date(2026, 11, 20)
CSV = EXAMPLES / "orders_2026-11-20.csv"
SHANGHAI = ZoneInfo("Asia/Shanghai")

# The shop's own names; `columns` maps them, as it would for an export.
COLUMNS = {"id": "order_id", "pay_channel": "channel", "total": "amount", "cur": "currency", "state": "status",
           "paid_time": "paid_at", "refunded": "refund_amount", "txn": "channel_txn_id",
           "refund_time": "refunded_at", "buyer": "payer"}
QUERY = {
    "postgresql": "SELECT id, pay_channel, total, cur, state, paid_time, refunded, txn, refund_time, buyer "
                  "FROM shop_orders WHERE CAST(paid_time AT TIME ZONE 'Asia/Shanghai' AS DATE) = :day ORDER BY seq",
    "sqlite": "SELECT id, pay_channel, total, cur, state, paid_time, refunded, txn, refund_time, buyer "
              "FROM shop_orders WHERE substr(paid_time, 1, 10) = :day ORDER BY seq",
}


@pytest.fixture
def shop_url(db_url, tmp_path):
    """The shop's database: its own SQLite file, or a table in the test's PostgreSQL schema."""
    url = f"sqlite:///{tmp_path / 'shop.db'}" if db_url.startswith("sqlite") else db_url
    pg = not url.startswith("sqlite")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    with open(CSV, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with engine.begin() as conn:
        conn.execute(text(f"""CREATE TABLE shop_orders (seq INTEGER, id TEXT, pay_channel TEXT, total NUMERIC(12, 2),
            cur TEXT, state TEXT, paid_time {'TIMESTAMPTZ' if pg else 'TEXT'}, refunded NUMERIC(12, 2), txn TEXT,
            refund_time {'TIMESTAMP' if pg else 'TEXT'}, buyer TEXT)"""))
        conn.execute(text("INSERT INTO shop_orders VALUES (:seq, :id, :pay_channel, :total, :cur, :state, :paid_time, "
                          ":refunded, :txn, :refund_time, :buyer)"), [_row(i, r, pg) for i, r in enumerate(rows)])
    engine.dispose()
    return url


def _row(seq: int, r: dict, pg: bool) -> dict:
    paid = datetime.fromisoformat(r["paid_at"])
    refunded = datetime.fromisoformat(r["refunded_at"]).astimezone(SHANGHAI).replace(tzinfo=None) if r["refunded_at"] else None
    return {"seq": seq, "id": r["order_id"], "pay_channel": r["channel"], "total": Decimal(r["amount"]) if pg else r["amount"],
            "cur": r["currency"], "state": r["status"], "paid_time": paid if pg else r["paid_at"],
            "refunded": Decimal(r["refund_amount"]) if pg else r["refund_amount"], "txn": r["channel_txn_id"] or None,
            # PostgreSQL: a naive local timestamp; SQLite: the same local time as text
            "refund_time": refunded if pg or refunded is None else refunded.isoformat(sep=" "),
            "buyer": r["payer"] or None}


def _cfg(shop_url, db_url, **sql):
    backend = "sqlite" if shop_url.startswith("sqlite") else "postgresql"
    return from_dict({"database": {"url": db_url}, "merchants": [{
        "id": "demo-shop", "name": "Demo", "timezone": "Asia/Shanghai", "currency": "CNY", "sources": [
            {"name": "orders", "kind": "orders_sql", "columns": COLUMNS,
             "sql": {"url": shop_url, "query": QUERY[backend], "chunk_rows": 7, **sql}},
            {"name": "wechatpay", "kind": "wechatpay"}, {"name": "alipay", "kind": "alipay"}]}]})


def test_orders_from_the_database_equal_the_same_orders_exported(shop_url, db_url):
    cfg = _cfg(shop_url, db_url)
    m = cfg.merchants[0]
    from_db, _digest = OrdersSql(m.sources[0], m).read(D1)
    export_cfg = from_dict({"merchants": [{"id": "demo-shop", "name": "Demo", "sources": [
        {"name": "orders", "kind": "orders"}, {"name": "wechatpay", "kind": "wechatpay"},
        {"name": "alipay", "kind": "alipay"}]}]})
    em = export_cfg.merchants[0]
    from_csv = OrdersExport(em.sources[0], em).parse(InputFile.read(CSV))
    assert from_db.records.num_rows == from_csv.records.num_rows == 52
    # parse does not promise an order (payments and refunds come from one UNION ALL)
    db_rows = from_db.records.sort_by([("line", "ascending"), ("kind", "ascending")])
    csv_rows = from_csv.records.sort_by([("line", "ascending"), ("kind", "ascending")])
    assert db_rows.drop_columns(["line"]).to_pylist() == csv_rows.drop_columns(["line"]).to_pylist()
    assert db_rows["line"].to_pylist() == [n - 1 for n in csv_rows["line"].to_pylist()]  # no header row
    assert from_db.control_totals == from_csv.control_totals


def test_a_day_is_one_statement_per_content(shop_url, db_url):
    cfg = _cfg(shop_url, db_url)
    m = cfg.merchants[0]
    first = ingest_sql(cfg, m, m.sources[0], D1)
    assert (first.path, first.business_day, first.rows, first.new_rows) == ("sql:orders/2026-11-20", D1, 52, 52)
    again = ingest_sql(cfg, m, m.sources[0], D1)
    assert again.already_ingested and again.file_id == first.file_id
    engine = create_engine(shop_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    with engine.begin() as conn:  # the shop refunds an order after the first read
        conn.execute(text("UPDATE shop_orders SET refunded = 10, state = 'partially_refunded' WHERE id = 'W-1001'"))
    engine.dispose()
    changed = ingest_sql(cfg, m, m.sources[0], D1)
    assert not changed.already_ingested and changed.file_id != first.file_id
    assert changed.new_rows == 1  # the new refund; the 52 known records keep their identity
    assert ingest_sql(cfg, m, m.sources[0], date(2026, 11, 19)).rows == 0  # a closed day is an empty statement


def test_a_bad_value_names_the_row_of_the_query_result(tmp_path):
    from models.db import upgrade

    db = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(db)
    shop = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(shop, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE o (order_id TEXT, channel TEXT, amount TEXT, status TEXT, paid_at TEXT)"))
        conn.execute(text("INSERT INTO o VALUES ('A', 'wechatpay', '1.00', 'paid', '2026-11-20 10:00:00'), "
                          "('B', 'wechatpay', '1.005', 'paid', '2026-11-20 11:00:00')"))
    engine.dispose()
    cfg = from_dict({"database": {"url": db}, "merchants": [{"id": "m", "name": "m", "sources": [
        {"name": "shop", "kind": "orders_sql", "expected_by": "10:00",
         "sql": {"url": shop, "query": "SELECT * FROM o WHERE :day = :day"}},
        {"name": "wechatpay", "kind": "wechatpay"}]}]})
    m = cfg.merchants[0]
    with pytest.raises(ParseError, match=r"^sql:shop/2026-11-20 line 2: amount='1.005': not an amount"):
        ingest_sql(cfg, m, m.sources[0], D1)
    from core.completeness import late_findings

    [(_src, late)] = late_findings(cfg, m, D1, datetime(2026, 11, 22, tzinfo=ZoneInfo("UTC")))
    assert late["rejected"] == ["sql:shop/2026-11-20 line 2: amount='1.005': not an amount with the currency's decimals"]


def test_an_unreachable_database_is_reported_without_its_password(tmp_path):
    cfg = from_dict({"database": {"url": f"sqlite:///{tmp_path / 'r.db'}"}, "merchants": [{"id": "m", "name": "m",
        "sources": [{"name": "shop", "kind": "orders_sql", "sql": {
            "url": "postgresql+psycopg://reader:Sup3rS3cretPw@127.0.0.1:1/shop?connect_timeout=2",
            "query": "SELECT * FROM orders WHERE day = :day"}}]}]})
    m = cfg.merchants[0]
    with pytest.raises(IngestError) as exc:
        ingest_sql(cfg, m, m.sources[0], D1)
    assert "source shop: reading orders from postgresql+psycopg://reader:***@127.0.0.1:1/shop" in str(exc.value)
    assert "Sup3rS3cretPw" not in str(exc.value)


def test_the_query_must_take_the_day():
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="the query must use the :day parameter"):
        from_dict({"merchants": [{"id": "m", "name": "m", "sources": [
            {"name": "shop", "kind": "orders_sql", "sql": {"url": "sqlite://", "query": "SELECT * FROM o"}}]}]})
    cfg = from_dict({"merchants": [{"id": "m", "name": "m", "sources": [{"name": "shop", "kind": "orders_sql"}]}]})
    m = cfg.merchants[0]
    with pytest.raises(IngestError, match="source shop: kind orders_sql needs a \\[sql\\] table"):
        ingest_sql(cfg, m, m.sources[0], D1)

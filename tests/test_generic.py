"""Generic CSV / XLSX statements read through a column mapping (kind "generic")."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from core.config import ConfigError, from_dict
from core.sources import REGISTRY, InputFile, ParseError

DATA = Path(__file__).resolve().parent / "data" / "generic"
ACME = DATA / "acme_2026-11-20.csv"
MAP = {"Transaction ID": "txn_id", "Created": "occurred_at", "Type": "kind", "Gross": "amount", "Currency": "currency",
       "Fee": "fee", "Order": "order_id", "Customer": "payer", "Description": "memo", "State": "status"}


def _source(columns=MAP, kind="generic", **extra):
    merchant = from_dict({"merchants": [{"id": "m", "name": "M", "currency": "EUR", "timezone": "Europe/Berlin",
                                         "sources": [{"name": "acme", "kind": kind, "timezone": "Europe/Berlin",
                                                      "columns": columns, **extra}]}]}).merchants[0]
    return REGISTRY[kind](merchant.sources[0], merchant)


def _csv(tmp_path, text: str, name="s.csv") -> InputFile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return InputFile.read(path)


HEADER = "Transaction ID,Created,Type,Gross,Currency,Fee,Order,Customer,Description,State\n"


def test_parses_the_mapped_columns_with_signs_times_and_days():
    parsed = _source().parse(InputFile.read(ACME))
    rows = parsed.records.to_pylist()
    got = [(r["line"], r["kind"], r["ref"], r["amount"], r["currency"], r["fee"], r["status"], r["occurred_at"],
            r["business_day"]) for r in rows]
    assert got == [
        (2, "payment", "tx_1001", 12550, "EUR", 377, "success", datetime(2026, 11, 20, 8, 15), date(2026, 11, 20)),
        (3, "payment", "tx_1002", 1999, "EUR", 60, "success", datetime(2026, 11, 20, 22, 40), date(2026, 11, 20)),
        # a refund printed positive is stored negative; Z is UTC
        (4, "refund", "tx_1001", -2500, "EUR", 0, "success", datetime(2026, 11, 20, 10, 0), date(2026, 11, 20)),
        # local 00:30 on the 21st in Berlin is 23:30 UTC on the 20th: the business day is the 21st
        (5, "fee", "tx_1004", -200, "EUR", 0, "success", datetime(2026, 11, 20, 23, 30), date(2026, 11, 21)),
        (6, "payout", "tx_1005", -10000, "EUR", 0, "pending", datetime(2026, 11, 20, 4, 0), date(2026, 11, 20)),
        (7, "payment", "tx_1006", 700, "JPY", 0, "success", datetime(2026, 11, 20, 10, 0), date(2026, 11, 20)),
    ]
    first = rows[0]
    assert (first["order_id"], first["payer"], first["memo"], first["txn_id"], first["source"]) == \
        ("ORD-1", "Anna Schmidt", "Order ORD-1", "tx_1001", None)
    assert rows[2]["memo"] == "Partial refund, ORD-1"
    assert parsed.format == "generic.table" and parsed.business_day == date(2026, 11, 20)
    assert parsed.control_totals == {"rows": 6, "amount_minor": {"EUR": 1849, "JPY": 700}}


def test_xlsx_with_typed_cells_parses_like_the_csv(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Transaction ID", "Created", "Gross", "Currency", "Type", "Fee"])
    ws.append(["tx_1", datetime(2026, 11, 20, 9, 15), 125.5, "EUR", "payment", 3.77])
    ws.append(["tx_2", "2026-11-20T10:00:00+01:00", -3, "EUR", "refund", None])
    path = tmp_path / "acme.xlsx"
    wb.save(path)
    source = _source({"Transaction ID": "txn_id", "Created": "occurred_at", "Gross": "amount",
                      "Currency": "currency", "Type": "kind", "Fee": "fee"})
    file = InputFile.read(path)
    assert source.identify(file)
    rows = source.parse(file).records.to_pylist()
    assert [(r["line"], r["amount"], r["fee"], r["occurred_at"]) for r in rows] == [
        (2, 12550, 377, datetime(2026, 11, 20, 8, 15)), (3, -300, 0, datetime(2026, 11, 20, 9, 0))]


def test_identify_needs_the_three_required_columns_through_the_mapping(tmp_path):
    file = InputFile.read(ACME)
    assert _source().identify(file)
    assert not _source({}).identify(file), "a generic source without mapping recognises nothing"
    assert not _source({"Transaction ID": "txn_id", "Gross": "amount"}).identify(file)
    # canonical names in the file do not count unless mapped
    plain = _csv(tmp_path, "txn_id,amount,occurred_at\nt1,1.00,2026-11-20 10:00:00\n")
    assert not _source({"Other": "txn_id"}).identify(plain)
    # the other sources leave the file alone, and the generic source leaves an orders export alone
    merchant = from_dict({"merchants": [{"id": "m", "name": "M", "sources": [
        {"name": k, "kind": k} for k in REGISTRY]}]}).merchants[0]
    claims = [s.name for s in merchant.sources if REGISTRY[s.kind](s, merchant).identify(file)]
    assert claims == []
    orders = InputFile.read(Path(__file__).resolve().parents[1] / "examples" / "demo" / "orders_2026-11-20.csv")
    assert not _source().identify(orders)


def test_unknown_canonical_name_in_config_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown column.*ammount"):
        _source({"Gross": "ammount"})


@pytest.mark.parametrize("row, line, field, reason", [
    ("t1,2026-11-20 10:00:00,payment,-5.00,EUR,,,,,", 2, "amount", "a payment cannot be negative"),
    ("t1,2026-11-20 10:00:00,payment,7.5,JPY,,,,,", 2, "amount", "not an amount with the currency's decimals"),
    ("t1,2026-11-20 10:00:00,payment,1.005,EUR,,,,,", 2, "amount", "not an amount"),
    ("t1,2026-11-20 10:00:00,chargeback,5.00,EUR,,,,,", 2, "kind", "unknown kind"),
    ("t1,20.11.2026,payment,5.00,EUR,,,,,", 2, "occurred_at", "not a date-time"),
    ("t1,2026-11-20 10:00:00,payment,5.00,EURO,,,,,", 2, "currency", "not an ISO currency code"),
    (",2026-11-20 10:00:00,payment,5.00,EUR,,,,,", 2, "txn_id", "required value is empty"),
])
def test_bad_rows_name_file_line_field_and_reason(tmp_path, row, line, field, reason):
    file = _csv(tmp_path, HEADER + "ok1,2026-11-20 09:00:00,payment,1.00,EUR,,,,,\n".replace("ok1", "t0") + row + "\n")
    with pytest.raises(ParseError) as exc:
        _source().parse(file)
    assert (exc.value.line, exc.value.field) == (line + 1, field)
    assert reason in exc.value.reason
    assert str(exc.value).startswith(f"{file.path} line {line + 1}: {field}=")


def test_the_same_transaction_twice_is_refused(tmp_path):
    file = _csv(tmp_path, HEADER + "t1,2026-11-20 09:00:00,payment,1.00,EUR,,,,,\n"
                                   "t1,2026-11-20 10:00:00,refund,1.00,EUR,,,,,\n"
                                   "t1,2026-11-20 11:00:00,payment,1.00,EUR,,,,,\n")
    with pytest.raises(ParseError, match=r"line 4: txn_id='t1': the same payment appears twice \(also on line 2\)"):
        _source().parse(file)


def test_two_headers_mapped_to_one_column_are_refused(tmp_path):
    file = _csv(tmp_path, "Id,Id2,Amount,When\nt1,t2,1.00,2026-11-20 10:00:00\n")
    with pytest.raises(ParseError, match="line 1: .*both map to txn_id"):
        _source({"Id": "txn_id", "Id2": "txn_id", "Amount": "amount", "When": "occurred_at"}).parse(file)


def test_generic_statement_ingests_idempotently(tmp_path):
    from conftest import table_counts
    from core.ingest import ingest_file
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    cfg = from_dict({"database": {"url": url}, "merchants": [{"id": "m", "name": "M", "currency": "EUR", "sources": [
        {"name": "acme", "kind": "generic", "timezone": "Europe/Berlin", "columns": MAP}]}]})
    first = ingest_file(cfg, cfg.merchants[0], ACME)
    again = ingest_file(cfg, cfg.merchants[0], ACME)
    assert (first.format, first.rows, first.new_rows) == ("generic.table", 6, 6)
    assert again.already_ingested and table_counts(url)["record"] == 6

"""Adyen settlement detail report: mapping, conversion, and the per-row and per-batch checks."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import ControlTotalError, InputFile, ParseError
from core.sources.adyen import AdyenSettlementDetail

HEADER = ("Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,"
          "Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,"
          "Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),"
          "Payment Method Variant,Modification Merchant Reference,Batch Number")


def row(psp, ref, typ, modref, gc="", gdr="", gcr="", rate="", nc="EUR", ndr="", ncr="", fees=("", "", "", ""),
        when="2026-07-01 12:00:00", tz="CEST", variant="", batch="12"):
    return ",".join(["Co", "Acct", psp, ref, "visa" if psp else "", when, tz, typ, modref, gc, gdr, gcr, rate, nc,
                     ndr, ncr, *fees, variant, "", batch])


def parse(tmp_path, *rows, tz="Europe/Amsterdam"):
    p = tmp_path / "settlement_detail_report_batch_12.csv"
    p.write_text("\n".join([HEADER, *rows]) + "\n")
    m = from_dict({"merchants": [{"id": "m", "name": "m", "sources": [
        {"name": "adyen", "kind": "adyen", "timezone": tz}]}]}).merchants[0]
    src = AdyenSettlementDetail(m.sources[0], m)
    f = InputFile.read(p)
    assert src.identify(f)
    return src.parse(f)


BATCH = [
    row("P1", "ORD-1", "Settled", "C1", "EUR", "", "100.00", "1", "EUR", "", "98.10", ("", "0.40", "0.30", "1.20"),
        variant="visagold"),
    row("P1", "ORD-1", "Refunded", "R1", "EUR", "30.00", "", "1", "EUR", "30.00", "", when="2026-07-01 23:30:00"),
    row("P2", "ORD-2", "Chargeback", "CB1", "EUR", "20.00", "", "1", "EUR", "20.00", ""),
    row("", "", "Fee", "Transaction Fees July 01 2026", nc="EUR", ndr="1.10"),
    row("", "", "MerchantPayout", "TX1 batch 12", nc="EUR", ndr="47.00", when="2026-07-02 06:00:00"),
]


def test_a_closed_batch_maps_to_records_and_nets_to_zero(tmp_path):
    parsed = parse(tmp_path, *BATCH)
    r = {x["line"]: x for x in parsed.records.to_pylist()}
    got = {n: (x["kind"], x["ref"], x["txn_id"], x["order_id"], x["amount"], x["currency"], x["fee"])
           for n, x in r.items()}
    assert got == {
        2: ("payment", "C1", "P1", "ORD-1", 10000, "EUR", 190),
        3: ("refund", "R1", "P1", "ORD-1", -3000, "EUR", 0),
        4: ("adjustment", "CB1", "P2", "ORD-2", -2000, "EUR", 0),
        5: ("fee", "12:Fee:Transaction Fees July 01 2026", None, None, -110, "EUR", 0),
        6: ("payout", "12:MerchantPayout:TX1 batch 12", None, None, -4700, "EUR", 0),
    }
    assert r[2]["occurred_at"] == datetime(2026, 7, 1, 10, 0) and r[2]["memo"] == "Settled | visagold"
    # 23:30 CEST is 21:30 UTC, still 1 July in Amsterdam
    assert r[3]["occurred_at"] == datetime(2026, 7, 1, 21, 30) and r[3]["business_day"] == date(2026, 7, 1)
    assert parsed.control_totals == {"batches": {"12": {"EUR": {
        "rows": 5, "net_credit_minor": 9810, "net_debit_minor": 9810, "closed": True}}}}


def test_a_batch_that_closes_with_money_left_is_rejected(tmp_path):
    rows = list(BATCH)
    rows[-1] = row("", "", "MerchantPayout", "TX1 batch 12", nc="EUR", ndr="46.00")
    with pytest.raises(ControlTotalError, match=r"line 6: Net Debit \(NC\)='46.00': batch 12 closes here, but its EUR "
                                                r"entries net to 1.00"):
        parse(tmp_path, *rows)


def test_an_open_batch_is_not_balanced(tmp_path):
    parsed = parse(tmp_path, *BATCH[:3])
    assert parsed.control_totals["batches"]["12"]["EUR"]["closed"] is False


def test_net_that_does_not_follow_from_gross_and_fees_is_rejected(tmp_path):
    bad = row("P1", "ORD-1", "Settled", "C1", "EUR", "", "100.00", "1", "EUR", "", "98.00", ("", "0.40", "0.30", "1.20"))
    with pytest.raises(ControlTotalError, match=r"line 2: Net Credit \(NC\)='98.00': gross 100.00 less fees 1.90 is "
                                                r"98.10, but the row's net is 98.00"):
        parse(tmp_path, bad)


def test_converted_payment_keeps_the_shoppers_amount_and_names_the_settled_fees(tmp_path):
    fx = row("P9", "ORD-9", "Settled", "C9", "GBP", "", "10.00", "1.1713", "EUR", "", "11.41", ("0.30", "", "", ""),
             tz="CET", when="2026-01-15 09:00:00")
    r = parse(tmp_path, fx).records.to_pylist()[0]
    assert (r["amount"], r["currency"], r["fee"]) == (1000, "GBP", 0)
    assert r["memo"] == "Settled | fees 0.30 EUR, net 11.41 EUR"
    assert r["occurred_at"] == datetime(2026, 1, 15, 8, 0)
    off = row("P9", "ORD-9", "Settled", "C9", "GBP", "", "10.00", "1.1713", "EUR", "", "11.30", ("0.30", "", "", ""))
    with pytest.raises(ControlTotalError, match="more than one minor unit off"):
        parse(tmp_path, off)


def test_bad_values_name_line_and_field(tmp_path):
    with pytest.raises(ParseError, match=r"line 2: Gross Credit \(GC\)='1.234': not an amount"):
        parse(tmp_path, row("P1", "O", "Settled", "C1", "EUR", "", "1.234", "1", "EUR", "", "1.23"))
    with pytest.raises(ParseError, match=r"line 2: TimeZone='XST': unknown time zone"):
        parse(tmp_path, row("P1", "O", "Settled", "C1", "EUR", "", "1.00", "1", "EUR", "", "1.00", tz="XST"))
    with pytest.raises(ParseError, match=r"line 3: Modification Reference='C1': entry appears twice"):
        parse(tmp_path, *[row("P1", "O", "Settled", "C1", "EUR", "", "1.00", "1", "EUR", "", "1.00")] * 2)

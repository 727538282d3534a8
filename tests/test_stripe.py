"""Stripe itemized balance reports: mapping, signs, currencies, times and the checks that reject."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import ControlTotalError, InputFile, ParseError
from core.sources.stripe import StripeBalanceReport

HEADER = ("balance_transaction_id,created,available_on,currency,gross,fee,net,reporting_category,source_id,"
          "charge_id,payment_intent_id,description,customer_email,payment_metadata[order_id]")


def source(tz: str = "UTC", **extra) -> StripeBalanceReport:
    m = from_dict({"merchants": [{"id": "m", "name": "m", "sources": [
        {"name": "stripe", "kind": "stripe", "timezone": tz, **extra}]}]}).merchants[0]
    return StripeBalanceReport(m.sources[0], m)


def parse(tmp_path, text: str, src: StripeBalanceReport | None = None, name: str = "report.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    src = src or source()
    f = InputFile.read(p)
    assert src.identify(f)
    return src.parse(f)


def rows(parsed):
    return {r["ref"]: r for r in parsed.records.to_pylist()}


def test_every_category_maps_to_a_kind_with_the_balance_sign(tmp_path):
    body = "\n".join([
        HEADER,
        "txn_1,2026-03-01 10:00:00,2026-03-03 00:00:00,usd,100.00,3.20,96.80,charge,ch_1,ch_1,pi_1,Order 7,a@b.c,ORD-7",
        "txn_2,2026-03-01 11:00:00,2026-03-03 00:00:00,usd,-40.00,0.00,-40.00,refund,re_1,ch_1,pi_1,,,ORD-7",
        "txn_3,2026-03-01 12:00:00,2026-03-03 00:00:00,usd,-0.50,0.00,-0.50,fee,,,,Radar,,",
        "txn_4,2026-03-01 13:00:00,2026-03-03 00:00:00,usd,-15.00,15.00,-30.00,dispute,dp_1,ch_1,pi_1,,,ORD-7",
        "txn_5,2026-03-01 14:00:00,2026-03-03 00:00:00,usd,15.00,-15.00,30.00,dispute_reversal,dp_1,ch_1,pi_1,,,ORD-7",
        "txn_6,2026-03-02 00:00:00,2026-03-02 00:00:00,usd,-98.30,0.00,-98.30,payout,po_1,,,STRIPE PAYOUT,,",
        "txn_7,2026-03-02 01:00:00,2026-03-02 00:00:00,usd,5.00,0.00,5.00,transfer,tr_1,,,,,",
    ]) + "\n"
    r = rows(parse(tmp_path, body))
    got = {ref: (x["kind"], x["amount"], x["fee"], x["currency"], x["txn_id"], x["order_id"]) for ref, x in r.items()}
    assert got == {
        "txn_1": ("payment", 10000, 320, "USD", "pi_1", "ORD-7"),
        "txn_2": ("refund", -4000, 0, "USD", "pi_1", "ORD-7"),
        "txn_3": ("fee", -50, 0, "USD", None, None),
        "txn_4": ("adjustment", -1500, 1500, "USD", "pi_1", "ORD-7"),
        "txn_5": ("adjustment", 1500, -1500, "USD", "pi_1", "ORD-7"),
        "txn_6": ("payout", -9830, 0, "USD", "po_1", None),
        "txn_7": ("adjustment", 500, 0, "USD", "tr_1", None),
    }
    assert r["txn_1"]["memo"] == "charge | Order 7" and r["txn_7"]["memo"] == "transfer"
    assert r["txn_1"]["payer"] == "a@b.c" and r["txn_1"]["line"] == 2 and r["txn_7"]["line"] == 8


def test_zero_decimal_currency_is_whole_units_and_rejects_fractions(tmp_path):
    ok = HEADER + "\ntxn_1,2026-03-01 10:00:00,,jpy,1500,54,1446,charge,ch_1,ch_1,,,,\n"
    assert rows(parse(tmp_path, ok))["txn_1"]["amount"] == 1500
    bad = HEADER + "\ntxn_1,2026-03-01 10:00:00,,jpy,1500.5,54,1446.5,charge,ch_1,ch_1,,,,\n"
    with pytest.raises(ParseError, match=r"line 2: gross='1500.5': not an amount with the currency's decimals"):
        parse(tmp_path, bad, name="bad.csv")


def test_created_is_read_in_the_configured_zone_and_created_utc_as_utc(tmp_path):
    local = HEADER + "\ntxn_1,2026-03-01 08:30:00,,usd,1.00,0.00,1.00,charge,ch_1,ch_1,,,,\n"
    r = rows(parse(tmp_path, local, source("Asia/Tokyo")))["txn_1"]
    assert r["occurred_at"] == datetime(2026, 2, 28, 23, 30) and r["business_day"] == date(2026, 3, 1)
    utc = ("balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category\n"
           "txn_1,2026-03-01 08:30:00,usd,1.00,0.00,1.00,charge\n")
    r = rows(parse(tmp_path, utc, source("Asia/Tokyo"), name="utc.csv"))["txn_1"]
    assert r["occurred_at"] == datetime(2026, 3, 1, 8, 30) and r["business_day"] == date(2026, 3, 1)


def test_order_id_column_is_mapped_in_config(tmp_path):
    body = ("balance_transaction_id,created,currency,gross,fee,net,reporting_category,payment_metadata[order_no]\n"
            "txn_1,2026-03-01 08:30:00,eur,9.99,0.30,9.69,charge,A-1\n")
    assert rows(parse(tmp_path, body))["txn_1"]["order_id"] is None
    src = source(columns={"payment_metadata[order_no]": "order_id"})
    assert rows(parse(tmp_path, body, src, name="mapped.csv"))["txn_1"]["order_id"] == "A-1"


def test_net_that_is_not_gross_minus_fee_is_rejected(tmp_path):
    body = HEADER + "\ntxn_1,2026-03-01 10:00:00,,usd,10.00,0.30,9.60,charge,ch_1,ch_1,,,,\n"
    with pytest.raises(ControlTotalError, match=r"line 2: net='9.60': gross 10.00 minus fee 0.30 is 9.70"):
        parse(tmp_path, body)


def test_positive_payout_and_repeated_balance_transaction_are_rejected(tmp_path):
    body = HEADER + "\ntxn_1,2026-03-01 10:00:00,,usd,10.00,0,10.00,payout,po_1,,,,,\n"
    with pytest.raises(ParseError, match=r"line 2: gross='10.00': a payout takes money out"):
        parse(tmp_path, body)
    body = HEADER + ("\ntxn_1,2026-03-01 10:00:00,,usd,1.00,0,1.00,charge,ch_1,ch_1,,,,"
                     "\ntxn_1,2026-03-01 10:00:00,,usd,1.00,0,1.00,charge,ch_1,ch_1,,,,\n")
    with pytest.raises(ParseError, match=r"line 3: balance_transaction_id='txn_1': .* twice \(also on line 2\)"):
        parse(tmp_path, body, name="twice.csv")


def test_header_only_report_is_an_empty_statement(tmp_path):
    parsed = parse(tmp_path, HEADER + "\n")
    assert parsed.row_count == 0 and parsed.business_day is None


def test_other_csvs_are_not_identified(tmp_path):
    p = tmp_path / "orders.csv"
    p.write_text("order_id,channel,amount,currency,status,paid_at\n1,stripe,1.00,USD,paid,2026-03-01 10:00\n")
    assert not source().identify(InputFile.read(p))

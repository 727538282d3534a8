"""OFX: times, accounts, required fields and the match with ofxparse, on files written here."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import REGISTRY, InputFile, ParseError

MERCHANT = from_dict({"merchants": [{"id": "m", "name": "M", "sources": [
    {"name": "bank", "kind": "ofx", "timezone": "America/New_York"}]}]}).merchants[0]
SOURCE = REGISTRY["ofx"](MERCHANT.sources[0], MERCHANT)

SGML = """OFXHEADER:100
DATA:OFXSGML
VERSION:102
SECURITY:NONE
ENCODING:USASCII
CHARSET:1252
COMPRESSION:NONE
OLDFILEUID:NONE
NEWFILEUID:NONE

<OFX>
<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>{code}<SEVERITY>INFO</STATUS>
<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>111<ACCTTYPE>CHECKING</BANKACCTFROM>
<BANKTRANLIST><DTSTART>20261101<DTEND>20261120235959[-5:EST]
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20261120<TRNAMT>{amount}<FITID>A1<NAME>Acme &amp; Co<MEMO>Invoice 7</STMTTRN>
<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20261120230000<TRNAMT>-5.5<FITID>A2<NAME>Fee</STMTTRN>
<STMTTRN><TRNTYPE>CHECK<DTPOSTED>20261120230000.000[-5:EST]<TRNAMT>-20,00<FITID>A3<CHECKNUM>1042</STMTTRN>
</BANKTRANLIST><LEDGERBAL><BALAMT>74.50<DTASOF>20261120</LEDGERBAL></STMTRS></STMTTRNRS>
<STMTTRNRS><TRNUID>2<STATUS><CODE>0<SEVERITY>INFO</STATUS>
<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>222<ACCTTYPE>SAVINGS</BANKACCTFROM>
<BANKTRANLIST><DTSTART>20261101<DTEND>20261120
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20261119<TRNAMT>1.00<FITID>A1</STMTTRN>
</BANKTRANLIST><LEDGERBAL><BALAMT>1.00<DTASOF>20261120</LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1>
</OFX>
"""


def _file(tmp_path, text: str, name="s.ofx") -> InputFile:
    path = tmp_path / name
    path.write_text(text, encoding="cp1252")
    return InputFile.read(path)


def _sgml(code="0", amount="100.00") -> str:
    return SGML.format(code=code, amount=amount)


def test_times_accounts_refs_and_fields(tmp_path):
    parsed = SOURCE.parse(_file(tmp_path, _sgml()))
    rows = parsed.records.to_pylist()
    got = [(r["line"], r["ref"], r["kind"], r["amount"], r["business_day"], r["occurred_at"]) for r in rows]
    assert got == [
        # a date alone is the booking date; it starts at local midnight (EST: 05:00 UTC)
        (15, "111:A1", "payment", 10000, date(2026, 11, 20), datetime(2026, 11, 20, 5, 0)),
        # a time without offset is local to the statement's zone
        (16, "111:A2", "payout", -550, date(2026, 11, 20), datetime(2026, 11, 21, 4, 0)),
        # the same time with an explicit offset is that instant
        (17, "111:A3", "payout", -2000, date(2026, 11, 20), datetime(2026, 11, 21, 4, 0)),
        # the same FITID in another account is another transaction
        (22, "222:A1", "payment", 100, date(2026, 11, 19), datetime(2026, 11, 19, 5, 0)),
    ]
    assert (rows[0]["payer"], rows[0]["memo"], rows[0]["txn_id"]) == ("Acme & Co", "Invoice 7", "A1")
    assert rows[2]["order_id"] == "1042"
    assert parsed.business_day == date(2026, 11, 20)
    assert [s["ledger_balance"] for s in parsed.control_totals["statements"]] == ["74.50", "1.00"]


@pytest.mark.parametrize("change, line, field, reason", [
    (("<TRNAMT>100.00", "<TRNAMT>$100"), 15, "TRNAMT", "not a decimal amount"),
    (("<TRNAMT>100.00", "<TRNAMT>100.001"), 15, "TRNAMT", "has more decimals than USD allows"),
    (("<FITID>A2", "<FITID>"), 16, "FITID", "transaction lacks a required field"),
    (("<DTPOSTED>20261119", "<DTPOSTED>20261131"), 22, "DTPOSTED", "not an OFX date"),
    (("<CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>111", "<CURDEF>US<BANKACCTFROM><BANKID>1<ACCTID>111"), 13, "CURDEF",
     "not an ISO 4217 currency code"),
    (("<BALAMT>74.50", "<BALAMT>"), 18, "BALAMT", "balance amount is empty"),
    (("<CODE>0<SEVERITY>INFO</STATUS>\n<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>111",
      "<CODE>2000<SEVERITY>ERROR</STATUS>\n<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>111"), 12, "CODE",
     "the bank answered this request with an error"),
])
def test_bad_fields_name_line_and_field(tmp_path, change, line, field, reason):
    with pytest.raises(ParseError) as exc:
        SOURCE.parse(_file(tmp_path, _sgml().replace(*change, 1)))
    assert (exc.value.line, exc.value.field) == (line, field)
    assert reason in exc.value.reason


def test_the_same_fitid_twice_in_one_account_is_refused(tmp_path):
    text = _sgml().replace("<FITID>A2", "<FITID>A1")
    with pytest.raises(ParseError, match=r"line 16: ref='111:A1': the same entry appears twice \(also on line 15\)"):
        SOURCE.parse(_file(tmp_path, text))


def test_comments_do_not_count(tmp_path):
    text = _sgml().replace("<STMTTRN><TRNTYPE>DEBIT", "<!-- <STMTTRN><TRNTYPE>CREDIT<TRNAMT>1</STMTTRN> -->"
                                                       "<STMTTRN><TRNTYPE>DEBIT")
    assert SOURCE.parse(_file(tmp_path, text)).row_count == 4


def test_identify(tmp_path):
    assert SOURCE.identify(_file(tmp_path, _sgml(), name="a.ofx"))
    assert SOURCE.identify(_file(tmp_path, "\n\n<OFX>\n<SIGNONMSGSRSV1>", name="b.ofx"))
    assert not SOURCE.identify(_file(tmp_path, ":20:X\n:25:Y\n", name="c.sta"))
    assert not SOURCE.identify(_file(tmp_path, "<?xml version='1.0'?><Document/>", name="d.xml"))

"""MT940: the checks around the mt-940 package, on small statements written here.

The real samples are covered by the golden files (tests/test_golden.py); these tests pin
the behaviour those samples do not show on their own.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import REGISTRY, ControlTotalError, InputFile, ParseError

MERCHANT = from_dict({"merchants": [{"id": "m", "name": "M", "sources": [
    {"name": "bank", "kind": "mt940", "timezone": "Europe/Berlin"}]}]}).merchants[0]
SOURCE = REGISTRY["mt940"](MERCHANT.sources[0], MERCHANT)

STATEMENT = """\
:20:REF1
:25:DE89370400440532013000
:28C:7/1
:60F:C261119EUR1000,00
:61:2611201120C250,00NTRFORD-77//BANKREF1
:86:166?00GUTSCHRIFT?20EREF+ORD-77?32Max Mustermann
:61:2611201121D50,5NCHGNONREF
:86:Kontofuehrung
:61:2611201120RC10,00NRTINONREF
:86:Storno
:62F:C261120EUR1189,50
-
"""


def _file(tmp_path, text: str, encoding="utf-8", name="s.sta") -> InputFile:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return InputFile.read(path)


def test_lines_signs_kinds_days_and_refs(tmp_path):
    parsed = SOURCE.parse(_file(tmp_path, STATEMENT))
    rows = parsed.records.to_pylist()
    assert [(r["line"], r["kind"], r["amount"], r["business_day"], r["occurred_at"]) for r in rows] == [
        (5, "payment", 25000, date(2026, 11, 20), datetime(2026, 11, 19, 23, 0)),
        (7, "payout", -5050, date(2026, 11, 21), datetime(2026, 11, 20, 23, 0)),  # entry date 1121 is the booking
        (9, "adjustment", -1000, date(2026, 11, 20), datetime(2026, 11, 19, 23, 0)),  # RC: a credit reversed
    ]
    assert [r["ref"] for r in rows] == [f"DE89370400440532013000:7/1:20261119#{i}" for i in (1, 2, 3)]
    first = rows[0]
    assert (first["txn_id"], first["order_id"], first["payer"], first["memo"]) == \
        ("BANKREF1", "ORD-77", "Max Mustermann", "GUTSCHRIFT | EREF+ORD-77")
    assert rows[1]["order_id"] is None and rows[1]["memo"] == "Kontofuehrung"
    assert parsed.business_day == date(2026, 11, 20)
    assert parsed.control_totals["statements"][0]["closing"] == "1189.50"


def test_refs_do_not_change_when_the_bank_sends_the_statement_again(tmp_path):
    again = STATEMENT.replace(":20:REF1", ":20:RESENT-99")
    first = SOURCE.parse(_file(tmp_path, STATEMENT, name="a.sta")).records["ref"].to_pylist()
    second = SOURCE.parse(_file(tmp_path, again, name="b.sta")).records["ref"].to_pylist()
    assert first == second


def test_balance_mismatch_is_refused_with_both_numbers(tmp_path):
    text = STATEMENT.replace(":62F:C261120EUR1189,50", ":62F:C261120EUR1189,51")
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(_file(tmp_path, text))
    assert exc.value.line == 11 and exc.value.field == ":62F:"
    assert "opening balance 1000.00 EUR (line 4) plus the 3 statement lines (+189.50) is 1189.50, but the closing " \
           "balance says 1189.51" in str(exc.value)


def test_a_debit_closing_balance_is_negative(tmp_path):
    text = (":20:X\n:25:ACC\n:28C:1\n:60F:D261119EUR10,00\n:61:261120D5,00NTRFNONREF\n:62F:D261120EUR15,00\n-\n")
    rows = SOURCE.parse(_file(tmp_path, text)).records.to_pylist()
    assert [r["amount"] for r in rows] == [-500]


def test_long_amounts_are_refused_not_truncated(tmp_path):
    # the library's grammar would read 16 digits of this balance and drop the rest
    long_balance = STATEMENT.replace(":60F:C261119EUR1000,00", ":60F:C261119EUR000000000001000,00")
    assert SOURCE.parse(_file(tmp_path, long_balance, name="ok.sta")).row_count == 3
    long_line = STATEMENT.replace("C250,00NTRF", "C0000000000000250,00NTRF")
    with pytest.raises(ParseError, match="line 5: :61:=.*longer than 15 characters"):
        SOURCE.parse(_file(tmp_path, long_line, name="bad.sta"))


@pytest.mark.parametrize("change, line, message", [
    ((":28C:7/1\n", ""), 3, "tag :60F: (opening balance) is out of place: after :25: the statement needs :28C:"),
    ((":62F:C261120EUR1189,50\n", ""), 10, "ends where :61: or :86: or :62F: was expected"),
    ((":60F:C261119EUR1000,00", ":60F:C261119EU1000,00"), 4, "opening balance is malformed"),
    ((":60F:C261119EUR1000,00", ":60F:C261131EUR1000,00"), 4, "opening balance date is not a calendar date"),
    (("C250,00NTRF", "X250,00NTRF"), 5, "statement line does not parse"),
    ((":86:Storno\n", ":86:Storno\n:25:OTHER\n"), 11, "tag :25: (account identification) is out of place"),
    ((":20:REF1\n", ":20:REF1\n:99X:what\n"), None, None),  # unknown id: continuation text of :20:
])
def test_malformed_statements_name_their_line(tmp_path, change, line, message):
    text = STATEMENT.replace(*change, 1)
    if message is None:
        assert SOURCE.parse(_file(tmp_path, text)).row_count == 3
        return
    with pytest.raises(ParseError) as exc:
        SOURCE.parse(_file(tmp_path, text))
    assert exc.value.line == line and message in str(exc.value)


def test_a_fragment_and_an_mt942_are_refused(tmp_path):
    with pytest.raises(ParseError, match="line 1: tag :61: before any :20:.*fragment"):
        SOURCE.parse(_file(tmp_path, ":61:2611201120C250,00NTRFNONREF\n", name="f.sta"))
    mt942 = ":20:X\n:25:ACC\n:28C:1\n:34F:EUR0,\n:13D:2611201200+0100\n:61:261120C1,00NTRFNONREF\n:90C:1EUR1,00\n-\n"
    with pytest.raises(ParseError, match="line 4: MT942 interim transaction report"):
        SOURCE.parse(_file(tmp_path, mt942, name="i.sta"))


def test_a_tag_after_the_end_of_a_statement_says_so(tmp_path):
    text = STATEMENT.replace(":61:2611201120RC10", "-\n:61:2611201120RC10")
    with pytest.raises(ParseError, match=r"line 10: tag :61: after the end of the statement \('-' on line 9\)"):
        SOURCE.parse(_file(tmp_path, text))


def test_swift_envelope_and_terminators_are_not_statement_text(tmp_path):
    text = "{1:F01BANKDEFFXXXX0000000000}{2:O940BANKDEFFXXXXN}{3:}{4:\n" + STATEMENT.replace("-\n", "-}{5:}\n")
    rows = SOURCE.parse(_file(tmp_path, text)).records.to_pylist()
    assert [r["line"] for r in rows] == [6, 8, 10]


def test_text_that_is_not_utf8_is_read_as_code_page_852(tmp_path):
    text = STATEMENT.replace(":86:Kontofuehrung", ":86:Díj, jutalék")
    rows = SOURCE.parse(_file(tmp_path, text, encoding="cp852")).records.to_pylist()
    assert rows[1]["memo"] == "Díj, jutalék"


def test_identify_is_about_mt940_tags_only(tmp_path):
    assert SOURCE.identify(_file(tmp_path, STATEMENT, name="a.sta"))
    assert SOURCE.identify(_file(tmp_path, "ABNANL2A\n940\nABNANL2A\n" + STATEMENT, name="b.sta"))
    assert not SOURCE.identify(_file(tmp_path, "a,b,c\n1,2,3\n", name="c.csv"))
    assert not SOURCE.identify(_file(tmp_path, "<?xml version='1.0'?>\n<Document>\n:20:X\n</Document>\n", name="d.xml"))
    assert not SOURCE.identify(_file(tmp_path, "OFXHEADER:100\n<OFX>\n", name="e.ofx"))


def test_same_statement_twice_in_one_file_is_refused(tmp_path):
    with pytest.raises(ParseError, match=r"line 17: ref=.*the same entry appears twice \(also on line 5\)"):
        SOURCE.parse(_file(tmp_path, STATEMENT + STATEMENT))


def test_an_mt940_sample_ingests_idempotently(tmp_path, samples):
    from conftest import table_counts
    from core.ingest import ingest_file
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    cfg = from_dict({"database": {"url": url}, "merchants": [{"id": "m", "name": "M", "currency": "EUR", "sources": [
        {"name": "bank", "kind": "mt940", "timezone": "Europe/Amsterdam"}]}]})
    path = samples / "mt940" / "betterplace_sepa_mt9401.sta"
    first = ingest_file(cfg, cfg.merchants[0], path)
    assert (first.format, first.rows, first.new_rows, first.business_day) == ("bank.mt940", 97, 97, date(2007, 9, 4))
    assert ingest_file(cfg, cfg.merchants[0], path).already_ingested
    assert table_counts(url)["record"] == 97

"""camt.053 / camt.054: version-independent reading and the checks, on documents built here.

Most genkgo samples are refused by their balance check (their closing balances do not add
up), so the entry reading of v3/v4/v8 statements is tested here on those samples with the
closing balance corrected in memory (the sample files themselves are not changed).
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime

import pytest
from lxml import etree

from core.config import from_dict
from core.sources import REGISTRY, ControlTotalError, InputFile, ParseError

MERCHANT = from_dict({"merchants": [{"id": "m", "name": "M", "sources": [
    {"name": "bank", "kind": "camt", "timezone": "Europe/Amsterdam"}]}]}).merchants[0]
SOURCE = REGISTRY["camt"](MERCHANT.sources[0], MERCHANT)

DOC = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{v}">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-11-21T06:00:00+01:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>S-20261120</Id>
      <Acct><Id><IBAN>NL91ABNA0417164300</IBAN></Id></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-19</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{closing}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-20</Dt></Dt></Bal>
      {summary}
      <Ntry>
        <Amt Ccy="EUR">30.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>{status}</Sts>
        <BookgDt><DtTm>2026-11-20T23:30:00Z</DtTm></BookgDt>
        <AcctSvcrRef>BANK-1</AcctSvcrRef>
        <NtryDtls>
          <TxDtls>
            <Refs><EndToEndId>E2E-1</EndToEndId></Refs>
            <Amt Ccy="EUR">{first}</Amt>
            <RltdPties><Dbtr>{debtor}</Dbtr></RltdPties>
            <RmtInf><Strd><CdtrRefInf><Ref>INV-1</Ref></CdtrRefInf></Strd></RmtInf>
          </TxDtls>
          <TxDtls>
            <Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs>
            <AmtDtls><TxAmt><Amt Ccy="EUR">10.00</Amt></TxAmt></AmtDtls>
            <RmtInf><Ustrd>second payment</Ustrd></RmtInf>
          </TxDtls>
        </NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">5.25</Amt><CdtDbtInd>DBIT</CdtDbtInd><RvslInd>true</RvslInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-20</Dt></BookgDt>
        <NtryDtls><TxDtls><RltdPties><Cdtr><Nm>Shop   GmbH</Nm></Cdtr></RltdPties></TxDtls></NtryDtls>
        <AddtlNtryInf>storno</AddtlNtryInf>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""


def _doc(v="02", closing="124.75", first="20.00", status="BOOK", summary="", debtor="<Nm>Anna</Nm>") -> str:
    if v >= "08":  # v8 moved the party name under Pty and the status under Cd
        debtor = debtor.replace("<Nm>", "<Pty><Nm>").replace("</Nm>", "</Nm></Pty>")
        status = f"<Cd>{status}</Cd>"
    return DOC.format(v=v, closing=closing, first=first, status=status, summary=summary, debtor=debtor)


def _file(tmp_path, text: str | bytes, name="s.xml") -> InputFile:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return InputFile.read(path)


@pytest.mark.parametrize("version", ["02", "04", "08"])
def test_entries_batches_reversals_and_days_in_every_version(tmp_path, version):
    parsed = SOURCE.parse(_file(tmp_path, _doc(version)))
    rows = parsed.records.to_pylist()
    got = [(r["line"], r["ref"], r["kind"], r["amount"], r["business_day"], r["occurred_at"], r["txn_id"],
            r["order_id"], r["payer"], r["memo"]) for r in rows]
    assert got == [
        # a batch entry whose transactions add up: one record each; 23:30Z is 00:30 on the 21st in Amsterdam
        (16, "NL91ABNA0417164300:S-20261120#1.1", "payment", 2000, date(2026, 11, 21), datetime(2026, 11, 20, 23, 30),
         "BANK-1", "INV-1", "Anna", None),
        (22, "NL91ABNA0417164300:S-20261120#1.2", "payment", 1000, date(2026, 11, 21), datetime(2026, 11, 20, 23, 30),
         "BANK-1", None, None, "second payment"),
        (29, "NL91ABNA0417164300:S-20261120#2", "adjustment", -525, date(2026, 11, 20), datetime(2026, 11, 19, 23, 0),
         None, None, "Shop GmbH", "storno"),
    ]
    assert parsed.business_day == date(2026, 11, 20)
    assert parsed.control_totals["namespace"].endswith(f"camt.053.001.{version}")


def test_closing_balance_that_does_not_add_up_is_refused(tmp_path):
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(_file(tmp_path, _doc(closing="124.76")))
    assert exc.value.line == 9
    assert "opening balance OPBD 100.00 EUR (line 8) plus the booked entries (+24.75) is 124.75, but the closing " \
           "balance CLBD says 124.76" in str(exc.value)


def test_pending_entries_do_not_count_towards_the_closing_balance(tmp_path):
    rows = SOURCE.parse(_file(tmp_path, _doc(closing="94.75", status="PDNG"))).records.to_pylist()
    assert [r["status"] for r in rows] == ["pending", "pending", "success"]


def test_batch_transactions_that_do_not_add_up_are_refused(tmp_path):
    with pytest.raises(ControlTotalError, match=r"line 11: Ntry/Amt='30.00': the entry's 2 transactions add up to "
                                                r"31.00 EUR, the entry says 30.00"):
        SOURCE.parse(_file(tmp_path, _doc(first="21.00")))


def test_transaction_summary_is_checked(tmp_path):
    good = "<TxsSummry><TtlNtries><NbOfNtries>2</NbOfNtries><TtlNetNtry><Amt>24.75</Amt><CdtDbtInd>CRDT</CdtDbtInd></TtlNetNtry></TtlNtries></TxsSummry>"
    assert SOURCE.parse(_file(tmp_path, _doc(summary=good), name="a.xml")).row_count == 3
    with pytest.raises(ControlTotalError, match="summary counts 3 entries, the statement has 2"):
        SOURCE.parse(_file(tmp_path, _doc(summary=good.replace(">2<", ">3<")), name="b.xml"))
    with pytest.raises(ControlTotalError, match="summary says a net -24.75, the entries add up to 24.75"):
        SOURCE.parse(_file(tmp_path, _doc(summary=good.replace("CRDT", "DBIT")), name="c.xml"))


@pytest.mark.parametrize("sample", ["genkgo_camt053.v3.xml", "genkgo_camt053.v4.xml", "genkgo_camt053.v8.xml"])
def test_genkgo_statements_read_once_their_closing_balance_adds_up(tmp_path, samples, sample):
    """The samples' CLBD is 27.00 SEK DBIT, which cannot follow 18.15 EUR + 8.85 EUR; corrected in memory."""
    root = etree.fromstring((samples / "camt053" / sample).read_bytes())
    ns = {"c": etree.QName(root).namespace}
    clbd = root.xpath("//c:Bal[c:Tp/c:CdOrPrtry/c:Cd='CLBD']", namespaces=ns)[0]
    clbd.find("c:Amt", ns).set("Ccy", "EUR")
    clbd.find("c:CdtDbtInd", ns).text = "CRDT"
    parsed = SOURCE.parse(InputFile(samples / "camt053" / sample, etree.tostring(root)))
    (row,) = parsed.records.to_pylist()
    assert (row["amount"], row["currency"], row["kind"], row["ref"]) == \
        (885, "EUR", "payment", "NL26VAYB8060476890:253EURNL26VAYB8060476890#1")
    booked = date(2014, 12, 31)
    assert row["business_day"] == booked


def test_not_well_formed_xml_names_its_line(tmp_path):
    with pytest.raises(ParseError, match=r"s.xml line 6: not well-formed XML"):
        SOURCE.parse(_file(tmp_path, _doc().replace("<Id>S-20261120</Id>", "<Id>S-20261120</Idx>")))


def test_a_zip_with_one_document_names_its_member_and_with_two_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("day.xml", _doc())
        zf.writestr("readme.txt", "not a statement")
    parsed = SOURCE.parse(_file(tmp_path, buf.getvalue(), name="one.zip"))
    assert parsed.member == "day.xml" and parsed.row_count == 3
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.xml", _doc())
        zf.writestr("b.xml", _doc())
    file = _file(tmp_path, buf.getvalue(), name="two.zip")
    assert SOURCE.identify(file)
    with pytest.raises(ParseError, match=r"zip holds 2 camt documents \(a.xml, b.xml\)"):
        SOURCE.parse(file)


def test_identify(tmp_path):
    assert SOURCE.identify(_file(tmp_path, _doc(), name="a.xml"))
    assert SOURCE.identify(_file(tmp_path, _doc().replace(' xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"', ""),
                                 name="b.xml")), "a document without namespace is still recognised by its message"
    assert not SOURCE.identify(_file(tmp_path, "<?xml version='1.0'?><Document xmlns='urn:iso:std:iso:20022:tech:xsd:"
                                               "pain.001.001.03'><CstmrCdtTrfInitn/></Document>", name="c.xml"))
    assert not SOURCE.identify(_file(tmp_path, ":20:camt.053.001.02\n", name="d.sta"))

"""PayPal: STL and TRR record-type reports (footers checked) and the website activity CSV."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import ControlTotalError, InputFile, ParseError
from core.sources.paypal import PayPalSettlementReport, PayPalTransactionDetailReport
from core.sources.paypal_csv import PayPalActivityCSV


def make(cls, tz: str = "America/Los_Angeles"):
    m = from_dict({"merchants": [{"id": "m", "name": "m", "sources": [
        {"name": "pp", "kind": "paypal_stl", "timezone": tz}]}]}).merchants[0]
    return cls(m.sources[0], m)


def write(tmp_path, text: str, name: str = "report.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return InputFile.read(p)


def by_ref(parsed):
    return {r["ref"]: r for r in parsed.records.to_pylist()}


# -- STL ----------------------------------------------------------------------------------

STL_CH = ('"CH","Transaction ID","Invoice ID","PayPal Reference ID","PayPal Reference ID Type",'
          '"Transaction Event Code","Transaction Initiation Date","Transaction Completion Date",'
          '"Transaction Debit or Credit","Gross Transaction Amount","Gross Transaction Currency",'
          '"Fee Debit or Credit","Fee Amount","Fee Currency","Custom Field","Consumer ID","Payment Tracking ID",'
          '"Store ID","Bank Reference ID","Credit Transactional Fee","Credit Promotional Fee","Credit Term"')
STL = [
    '"RH",2026/01/07 02:05:05 -0800,"A","ACCT1",009,',
    '"FH",01',
    '"SH",2026/01/06 00:00:00 -0800,2026/01/06 23:59:59 -0800,"ACCT1",""',
    STL_CH,
    '"SB","P1","INV-1","","","T0006",2026/01/06 10:00:00 -0800,2026/01/06 10:00:00 -0800,"CR",10000,"USD","DR",320,"USD","","C1","","","",,,',  # noqa: E501
    '"SB","R1","INV-1","P1","TXN","T1107",2026/01/06 12:00:00 -0800,2026/01/06 12:00:00 -0800,"DR",4000,"USD","CR",100,"USD","","C1","","","",,,',  # noqa: E501
    '"SB","W1","","","","T0400",2026/01/06 23:00:00 -0800,2026/01/06 23:00:00 -0800,"DR",5000,"USD","",,"","","","","","B-77",,,',  # noqa: E501
    '"SB","J1","INV-2","","","T0006",2026/01/06 17:00:00 -0800,2026/01/06 17:00:00 -0800,"CR",150000,"JPY","DR",5000,"JPY","","C2","","","",,,',  # noqa: E501
    '"SF","USD",10000,9000,100,320,"CR",0,"CR",780,"CR",0,"CR",780,"CR",0,"CR",0,3',
    '"SF","JPY",150000,0,0,5000,"CR",0,"CR",145000,"CR",0,"CR",145000,"CR",0,"CR",0,1',
    '"SC",4',
    '"RF","USD",10000,9000,100,320,"CR",0,"CR",780,"CR",0,"CR",780,"CR",0,"CR",0,3',
    '"RF","JPY",150000,0,0,5000,"CR",0,"CR",145000,"CR",0,"CR",145000,"CR",0,"CR",0,1',
    '"RC",4',
    '"FF",4',
]


def stl(lines=STL) -> str:
    return "\r\n".join(lines) + "\r\n"


def test_stl_rows_map_to_records_and_every_footer_is_checked(tmp_path):
    f = write(tmp_path, "\ufeff" + stl())
    src = make(PayPalSettlementReport)
    assert src.identify(f) and not make(PayPalTransactionDetailReport).identify(f)
    parsed = src.parse(f)
    r = by_ref(parsed)
    got = {k: (v["line"], v["kind"], v["amount"], v["currency"], v["fee"], v["txn_id"], v["order_id"], v["status"])
           for k, v in r.items()}
    assert got == {
        "P1": (5, "payment", 10000, "USD", 320, "P1", "INV-1", "success"),
        "R1": (6, "refund", -4000, "USD", -100, "P1", "INV-1", "success"),
        "W1": (7, "payout", -5000, "USD", 0, "W1", None, "success"),
        "J1": (8, "payment", 1500, "JPY", 50, "J1", "INV-2", "success"),  # 150000 hundredths of a yen
    }
    assert r["P1"]["occurred_at"] == datetime(2026, 1, 6, 18, 0) and r["J1"]["business_day"] == date(2026, 1, 6)
    assert r["W1"]["memo"] == "T0400 | B-77" and r["P1"]["payer"] == "C1"
    assert parsed.business_day == date(2026, 1, 6)
    assert parsed.control_totals["footers_checked"] == [
        "line 9 SF USD", "line 10 SF JPY", "line 12 RF USD", "line 13 RF JPY", "line 11 SC", "line 15 FF", "line 14 RC"]


@pytest.mark.parametrize("index, new, message", [
    (8, '"SF","USD",10000,8000,100,320,"CR",0,"CR",780,"CR",0,"CR",780,"CR",0,"CR",0,3',
     "line 9: SF Total Gross Amount Debit='8000': SF USD says Total Gross Amount Debit 80.00 but the USD rows of "
     "its section add up to 90.00"),
    (8, '"SF","USD",10000,9000,320,100,"CR",0,"CR",780,"CR",0,"CR",780,"CR",0,"CR",0,3',
     "line 9: SF Total Fee Amount Credit='320': SF USD says Total Fee Amount Credit 3.20"),
    (9, '"SF","JPY",150000,0,0,5000,"CR",0,"CR",145000,"CR",0,"CR",145000,"CR",0,"CR",0,2',
     "line 10: SF row count='2': SF JPY says 2 body rows, but its section has 1 JPY rows"),
    (9, '"SF","JPY",150050,0,0,5000,"CR",0,"CR",145000,"CR",0,"CR",145000,"CR",0,"CR",0,1',
     "line 10: SF Total Gross Amount Credit='150050': SF JPY says Total Gross Amount Credit 150050"),
    (10, '"SC",5', "line 11: SC count='5': SC says 5 body rows in its section, but its section has 4"),
    (11, '"RF","USD",10001,9000,100,320,"CR",0,"CR",780,"CR",0,"CR",780,"CR",0,"CR",0,3',
     "line 12: RF Total Gross Amount Credit='10001': RF USD says Total Gross Amount Credit 100.01 but the USD rows "
     "of the report add up to 100.00"),
    (13, '"RC",40', "line 14: RC count='40': RC says 40 body rows in the report, but the report has 4"),
    (14, '"FF",3', "line 15: FF count='3': FF says 3 body rows in this file, but this file has 4"),
])
def test_stl_footer_that_disagrees_with_the_rows_is_rejected(tmp_path, index, new, message):
    lines = list(STL)
    lines[index] = new
    with pytest.raises(ControlTotalError) as exc:
        make(PayPalSettlementReport).parse(write(tmp_path, stl(lines)))
    assert message in str(exc.value)


def test_stl_currency_without_its_footer_is_rejected(tmp_path):
    lines = [line for line in STL if not line.startswith(('"SF","JPY"', '"RF","JPY"'))]
    with pytest.raises(ControlTotalError, match=r"line 5: .* has JPY rows but no SF footer for JPY"):
        make(PayPalSettlementReport).parse(write(tmp_path, stl(lines)))


def test_report_counts_of_a_later_file_of_a_split_report_are_not_checked(tmp_path):
    """RF/RC in the last file of a split report count all its files, which one file cannot check."""
    lines = list(STL)
    lines[1] = '"FH",02'
    lines[13] = '"RC",4000'
    parsed = make(PayPalSettlementReport).parse(write(tmp_path, stl(lines)))
    assert parsed.row_count == 4 and "line 14 RC" not in parsed.control_totals["footers_checked"]


def test_excerpt_without_footers_parses(tmp_path):
    parsed = make(PayPalSettlementReport).parse(write(tmp_path, stl(STL[:8])))
    assert parsed.row_count == 4 and parsed.control_totals["footers_checked"] == []


# -- TRR ----------------------------------------------------------------------------------

TRR_CH = ('"CH","Transaction ID","Invoice ID","PayPal Reference ID","PayPal Reference ID Type",'
          '"Transaction Event Code","Transaction Initiation Date","Transaction Completion Date",'
          '"Transaction  Debit or Credit","Gross Transaction Amount","Gross Transaction Currency",'  # old header: 2 spaces
          '"Fee Debit or Credit","Fee Amount","Fee Currency","Transactional Status","Transaction Subject",'
          '"Transaction Note","Payer\'s Account ID"')


def trr(*sb: str, footer: int | None = None) -> str:
    lines = ['"RH",2026/01/07 02:05:05 -0800,"A","ACCT1",011,', '"FH",01',
             '"SH",2026/01/06 00:00:00 -0800,2026/01/06 23:59:59 -0800,"ACCT1",""', TRR_CH, *sb]
    n = len(sb) if footer is None else footer
    lines += [f'"SF",{n}', f'"SC",{n}', f'"RF",{n}', f'"RC",{n}', f'"FF",{n}']
    return "\n".join(lines) + "\n"


def sb(tid, code, direction, gross, cur="USD", status="S", fee="", fee_dir="", ref="", ref_type="", invoice=""):
    return (f'"SB","{tid}","{invoice}","{ref}","{ref_type}","{code}",2026/01/06 09:00:00 -0800,'
            f'2026/01/06 09:00:00 -0800,"{direction}",{gross},"{cur}","{fee_dir}",{fee},"{cur if fee else ""}",'
            f'"{status}","subject","","payer@example.com"')


def test_trr_statuses_kinds_and_references(tmp_path):
    text = trr(
        sb("A", "T0006", "CR", 2500, fee=103, fee_dir="DR", invoice="O-1"),
        sb("B", "T0006", "CR", 700, status="P"),
        sb("C", "T0006", "CR", 700, status="D"),
        sb("D", "T0006", "CR", 700, status="V"),
        sb("E", "T1300", "CR", 900),
        sb("F", "T1201", "DR", 2500, ref="A", ref_type="TXN"),
        sb("G", "T0000", "DR", 1000),
        sb("H", "T0200", "DR", 1000),
        sb("I", "T1108", "CR", 103, ref="A", ref_type="TXN"),
    )
    f = write(tmp_path, text)
    src = make(PayPalTransactionDetailReport)
    assert src.identify(f) and not make(PayPalSettlementReport).identify(f)
    parsed = src.parse(f)
    got = {k: (v["kind"], v["amount"], v["fee"], v["status"], v["txn_id"]) for k, v in by_ref(parsed).items()}
    assert got == {
        "A": ("payment", 2500, 103, "success", "A"),
        "B": ("payment", 700, 0, "pending", "B"),
        "C": ("payment", 700, 0, "failed", "C"),
        "D": ("payment", 700, 0, "reversed", "D"),
        "E": ("payment", 900, 0, "authorized", "E"),  # an authorisation moves no money
        "F": ("adjustment", -2500, 0, "success", "A"),  # chargeback of A
        "G": ("adjustment", -1000, 0, "success", "G"),  # a payment the merchant sent
        "H": ("adjustment", -1000, 0, "success", "H"),
        "I": ("fee", 103, 0, "success", "A"),  # fee reversal
    }
    assert parsed.control_totals["footers_checked"] == [
        "line 14 SF", "line 16 RF", "line 15 SC", "line 18 FF", "line 17 RC"]


@pytest.mark.parametrize("row, message", [
    (sb("A", "T0006", "CR", 15050, cur="JPY"),
     "line 5: Gross Transaction Amount='15050': not an unsigned amount in hundredths that fits"),
    (sb("A", "T0006", "XX", 100), "line 5: Transaction Debit or Credit='XX': expected CR or DR"),
    (sb("A", "T0006", "CR", 100, status="Q"), "line 5: Transactional Status='Q': unknown Transactional Status"),
    (sb("A", "T0006", "CR", 100, status=""), "line 5: Transactional Status='': empty Transactional Status"),
    (sb("A", "T0006", "CR", -100), "line 5: Gross Transaction Amount='-100'"),
    (sb("A", "T0006", "CR", 100, fee=10, fee_dir="DR").replace('"DR",10,"USD"', '"DR",10,"EUR"'),
     "line 5: Fee Currency='EUR': fee is in another currency"),
])
def test_trr_bad_rows_are_rejected_with_line_and_field(tmp_path, row, message):
    with pytest.raises(ParseError) as exc:
        make(PayPalTransactionDetailReport).parse(write(tmp_path, trr(row)))
    assert message in str(exc.value)


def test_trr_count_footer_mismatch_and_stray_record_type(tmp_path):
    with pytest.raises(ControlTotalError, match=r"line 6: SF count='2': SF says 2 body rows in its section"):
        make(PayPalTransactionDetailReport).parse(write(tmp_path, trr(sb("A", "T0006", "CR", 100), footer=2)))
    text = trr(sb("A", "T0006", "CR", 100)).replace('"SF",1', '"ZZ",1\n"SF",1')
    with pytest.raises(ParseError, match=r"line 6: record type='ZZ': unknown record type"):
        make(PayPalTransactionDetailReport).parse(write(tmp_path, text, "zz.csv"))


def test_subscription_agreement_report_is_not_a_statement(tmp_path):
    f = write(tmp_path, '"CH","Subscription ID","Subscription Action Type","Subscription Currency"\n'
                        '"SB","S-1","S0000","EUR"\n')
    assert not make(PayPalSettlementReport).identify(f)
    assert not make(PayPalTransactionDetailReport).identify(f)


# -- website activity / statement CSV ------------------------------------------------------

ACT = ('"Date","Time","TimeZone","Name","Type","Status","Currency","Gross","Fee","Net","From Email Address",'
       '"Transaction ID","Reference Txn ID","Invoice Number","Balance"')


def act(*rows: str) -> str:
    return "\n".join([ACT, *rows]) + "\n"


def test_activity_newest_first_with_running_balance(tmp_path):
    text = act(
        '"3/5/2026","10:00:00","PST","","General Withdrawal","Completed","USD","-50.00","0.00","-50.00","","W1","","","47.10"',
        '"3/4/2026","09:00:00","PST","Ann","Website Payment","Completed","USD","100.00","-2.90","97.10","ann@x.y","P1","","7","97.10"',
    )
    parsed = make(PayPalActivityCSV).parse(write(tmp_path, text))
    r = by_ref(parsed)
    assert (r["P1"]["kind"], r["P1"]["amount"], r["P1"]["fee"], r["P1"]["order_id"]) == ("payment", 10000, 290, "7")
    assert r["P1"]["occurred_at"] == datetime(2026, 3, 4, 17, 0)  # M/D/Y: no day above 12 decides, English
    assert (r["W1"]["kind"], r["W1"]["amount"]) == ("payout", -5000)
    assert parsed.control_totals["date_format"] == "%m/%d/%Y"


def test_activity_balance_that_does_not_follow_is_rejected(tmp_path):
    text = act(
        '"4/3/2026","09:00:00","PST","","Website Payment","Completed","USD","100.00","-2.90","97.10","","P1","","","97.10"',
        '"5/3/2026","10:00:00","PST","","General Withdrawal","Completed","USD","-50.00","0.00","-50.00","","W1","","","57.10"',
    )
    with pytest.raises(ControlTotalError, match=r"line 3: Balance='57.10': the USD balance before this row was 97.10; "
                                                r"plus net -50.00 makes 47.10"):
        make(PayPalActivityCSV).parse(write(tmp_path, text))


def test_activity_net_and_dates(tmp_path):
    bad_net = act('"4/3/2026","09:00:00","PST","","Website Payment","Completed","USD","100.00","-2.90","97.00","","P1","","",""')
    with pytest.raises(ControlTotalError, match=r"line 2: Net='97.00': gross 100.00 plus fee -2.90 is 97.10"):
        make(PayPalActivityCSV).parse(write(tmp_path, bad_net))
    dmy = act('"13/3/2026","23:30:00","CET","","Refund","Completed","EUR","-5.00","0.00","-5.00","","R1","P0","",""')
    r = by_ref(make(PayPalActivityCSV, "Europe/Berlin").parse(write(tmp_path, dmy, "dmy.csv")))["R1"]
    assert (r["kind"], r["txn_id"], r["occurred_at"], r["business_day"]) == (
        "refund", "P0", datetime(2026, 3, 13, 22, 30), date(2026, 3, 13))
    unknown = act('"3/4/2026","09:00:00","XYZ","","Refund","Completed","EUR","-5.00","0.00","-5.00","","R1","","",""')
    with pytest.raises(ParseError, match=r"line 2: TimeZone='XYZ': unknown time zone"):
        make(PayPalActivityCSV).parse(write(tmp_path, unknown, "tz.csv"))


def test_spanish_statement_reads_decimal_commas(tmp_path):
    text = ('"Fecha","Hora","Zona horaria","Descripción","Divisa","Bruto","Comisión","Neto","Saldo",'
            '"Id. de transacción"\n'
            '"2/1/2020","11:05:56","Europe/Berlin","Pago estándar","EUR","1.049,37","-1,78","1.047,59","4.626,81","T1"\n')
    r = by_ref(make(PayPalActivityCSV).parse(write(tmp_path, text)))["T1"]
    assert (r["amount"], r["fee"], r["occurred_at"]) == (104937, 178, datetime(2020, 1, 2, 10, 5, 56))


def test_header_only_activity_is_an_empty_statement(tmp_path):
    parsed = make(PayPalActivityCSV).parse(write(tmp_path, ACT + "\n"))
    assert parsed.row_count == 0 and parsed.business_day is None

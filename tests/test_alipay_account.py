"""Alipay account statement (账务明细, signcustomer): identification, records, footer totals.

No real statement of this kind was available: tests/data/alipay/ holds statements written
for these tests in the documented layout (GBK/CRLF classic columns; UTF-8 with the newer
columns, half-width parentheses, negative 支出 and footer lines padded with commas).
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import EXAMPLES, write_zip_bomb
from core.config import from_dict
from core.ingest import ingest_file
from core.sources import REGISTRY, ControlTotalError, InputFile, ParseError
from core.sources.alipay_account import AlipayAccountStatement

DATA = Path(__file__).parent / "data" / "alipay"
CLASSIC = DATA / "signcustomer_20261120_gbk.csv"
NEWER = DATA / "signcustomer_202611_utf8_newer_columns.csv"
MISMATCH = DATA / "signcustomer_20261120_footer_mismatch.csv"
MEMBER = "20881234567890120156_20261120_账务明细.csv"

MERCHANT = from_dict({"merchants": [{
    "id": "m", "name": "M", "sources": [{"name": k, "kind": k} for k in REGISTRY],
}]}).merchants[0]
SOURCE = AlipayAccountStatement(MERCHANT.sources[0], MERCHANT)


def claimants(file: InputFile) -> list[str]:
    return [s.name for s in MERCHANT.sources if REGISTRY[s.kind](s, MERCHANT).identify(file)]


def make_zip(tmp_path, members: dict[str, bytes], name="20881234567890120156_20261120.csv.zip") -> InputFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return InputFile.read(path)


def summary_member() -> bytes:
    return "#支付宝账务汇总查询\r\n类型,收入笔数,收入金额（+元）,支出笔数,支出金额（-元）\r\n合计,4,367.53,4,5090.08\r\n".encode("gb18030")


def test_statements_and_their_zip_are_identified_by_this_source_only(tmp_path):
    for path in (CLASSIC, NEWER, MISMATCH):
        assert claimants(InputFile.read(path)) == ["alipay_account"], path.name
    bundle = make_zip(tmp_path, {MEMBER: CLASSIC.read_bytes(),
                                 "20881234567890120156_20261120_账务明细(汇总).csv": summary_member()})
    assert claimants(bundle) == ["alipay_account"]


def test_a_zip_that_also_holds_the_trade_bill_belongs_to_the_trade_bill_source(tmp_path):
    trade = InputFile.read(EXAMPLES / "20881234567890120156_20261120.csv.zip").members
    bundle = make_zip(tmp_path, {**trade, MEMBER: CLASSIC.read_bytes()})
    assert claimants(bundle) == ["alipay"]


def test_classic_statement_records(tmp_path):
    parsed = SOURCE.parse(InputFile.read(CLASSIC))
    rows = parsed.records.to_pylist()
    assert [(r["line"], r["kind"], r["ref"], r["amount"], r["fee"]) for r in rows] == [
        (6, "payment", "300100000001", 8800, 0),
        (7, "fee", "300100000002", -53, 0),
        (8, "payment", "300100000003", 25900, 0),
        (9, "fee", "300100000004", -155, 0),
        (10, "refund", "300100000005", -8800, 0),
        (11, "fee", "300100000006", 53, 0),  # 退还服务费: a fee returned on the refund
        (12, "payout", "300100000007", -500000, 0),
        (13, "adjustment", "300100000008", 2000, 0),
    ]
    first = rows[0]
    assert (first["txn_id"], first["order_id"], first["payer"]) == (
        "2026112022001400000000000001", "T20261120001", "张** (138****0001)")
    assert first["occurred_at"] == datetime(2026, 11, 19, 16, 12, 45) and first["business_day"] == date(2026, 11, 20)
    assert first["memo"] == "在线支付 | 咖啡豆 500g" and first["currency"] == "CNY" and first["status"] == "success"
    assert rows[6]["memo"] == "提现" and rows[6]["order_id"] is None
    assert rows[7]["memo"] == "转账 | 补差价"
    assert parsed.business_day == date(2026, 11, 20) and parsed.member is None
    assert parsed.control_totals == {"账号": "20881234567890120156",
                                     "支出合计": {"count": 4, "amount": "5090.08"},
                                     "收入合计": {"count": 4, "amount": "367.53"}}


def test_newer_columns_half_width_names_and_negative_expenses():
    parsed = SOURCE.parse(InputFile.read(NEWER))
    rows = parsed.records.to_pylist()
    assert [(r["kind"], r["amount"], r["order_id"]) for r in rows] == [
        ("payment", 5000, "M-1101"), ("fee", -30, "M-1101"), ("refund", -1200, "M-1101-R")]
    assert rows[2]["memo"] == "交易退款 | 茶叶礼盒 | 部分退款"
    assert parsed.business_day == date(2026, 11, 1)  # a monthly statement: its 起始日期


def test_zip_reads_the_detail_member(tmp_path):
    bundle = make_zip(tmp_path, {"20881234567890120156_20261120_账务明细(汇总).csv": summary_member(),
                                 MEMBER: CLASSIC.read_bytes()})
    parsed = SOURCE.parse(bundle)
    assert parsed.row_count == 8 and parsed.member == MEMBER


def test_mismatching_footer_is_a_totals_error():
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(InputFile.read(MISMATCH))
    assert str(exc.value).endswith("signcustomer_20261120_footer_mismatch.csv line 16: 收入合计='#收入合计：4笔，共367.35元': "
                                   "footer #收入合计 says 367.35 but the 收入 rows add up to 367.53")


def _edit(tmp_path, old: str, new: str, source=CLASSIC) -> InputFile:
    text = source.read_bytes().decode("gb18030")
    assert old in text
    path = tmp_path / "edited.csv"
    path.write_bytes(text.replace(old, new).encode("gb18030"))
    return InputFile.read(path)


def test_footer_count_mismatch_and_missing_footer(tmp_path):
    with pytest.raises(ControlTotalError, match="line 15: 支出合计=.*says 5 rows but the statement has 4 rows with 支出"):
        SOURCE.parse(_edit(tmp_path, "#支出合计：4笔", "#支出合计：5笔"))
    with pytest.raises(ParseError, match="footer lacks the #收入合计 line: the statement is truncated"):
        SOURCE.parse(_edit(tmp_path, "#收入合计：4笔，共367.53元\r\n", ""))
    text = CLASSIC.read_bytes().decode("gb18030")
    path = tmp_path / "cut.csv"
    path.write_bytes(text[:text.rindex("\r\n", 0, text.index("账务明细列表结束")) + 2].encode("gb18030"))
    with pytest.raises(ParseError, match="no # footer after the rows"):
        SOURCE.parse(InputFile.read(path))


@pytest.mark.parametrize("old, new, field, reason", [
    ("5088.00", "5088.0x", "账户余额", "not an amount"),
    ("2026-11-20 00:12:45,张", "2026-11-31 00:12:45,张", "发生时间", "not a date-time"),
    (",88.00,0.00,5088.00", ",-88.00,0.00,5088.00", "收入金额", "negative income"),
    ("300100000001\t", "\t", "账务流水号", "required value is empty"),
])
def test_a_bad_row_names_line_field_and_value(tmp_path, old, new, field, reason):
    with pytest.raises(ParseError) as exc:
        SOURCE.parse(_edit(tmp_path, old, new))
    assert f"line 6: {field}=" in str(exc.value) and reason in str(exc.value)


def test_the_same_movement_twice_is_rejected(tmp_path):
    with pytest.raises(ParseError, match=r"line 7: 账务流水号='300100000001': the same movement appears twice "
                                         r"\(also on line 6\)"):
        SOURCE.parse(_edit(tmp_path, "300100000002\t", "300100000001\t"))


def test_zip_bomb_is_refused(tmp_path):
    file = InputFile.read(write_zip_bomb(tmp_path / "bomb.csv.zip", MEMBER, fill=b"#"))
    assert claimants(file) == ["alipay_account"]
    with pytest.raises(ParseError, match="refused as a zip bomb"):
        SOURCE.parse(file)


def test_ingest_and_reingest(db_url, tmp_path):
    cfg = from_dict({"database": {"url": db_url}, "merchants": [{
        "id": "shop", "name": "Shop", "sources": [{"name": "alipay_account", "kind": "alipay_account"}]}]})
    first = ingest_file(cfg, cfg.merchants[0], CLASSIC)
    assert (first.format, first.rows, first.new_rows, first.business_day) == (
        "alipay.account_statement", 8, 8, date(2026, 11, 20))
    bundle = make_zip(tmp_path, {MEMBER: CLASSIC.read_bytes()})  # the same statement, zipped: nothing new
    again = ingest_file(cfg, cfg.merchants[0], bundle.path)
    assert again.rows == 8 and again.new_rows == 0


def test_a_loose_summary_file_with_the_detail_banner_is_not_claimed(tmp_path):
    """Some exports start the (汇总) file with the detail's banner too: without 账务流水号 it is not a statement."""
    path = tmp_path / "summary.csv"
    path.write_bytes(summary_member().replace("账务汇总".encode("gb18030"), "账务明细".encode("gb18030")))
    assert claimants(InputFile.read(path)) == []

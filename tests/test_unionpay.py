"""UnionPay ACP reconciliation files: the fixed-width ZM flow file, alone or in its zip with the RD report.

The real sample (one day, 8 purchases) is covered by the golden files; the files here are
built for these tests: refunds, year boundaries, totals that disagree, damaged input.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime

import pytest

from conftest import write_zip_bomb
from core.config import from_dict
from core.ingest import ingest_file
from core.sources import REGISTRY, ControlTotalError, InputFile, ParseError
from core.sources.unionpay import FIELDS, WIDTH, UnionPayAcpFlow

MERCHANT = from_dict({"merchants": [{
    "id": "m", "name": "M", "sources": [{"name": k, "kind": k} for k in REGISTRY],
}]}).merchants[0]
SOURCE = UnionPayAcpFlow(MERCHANT.sources[0], MERCHANT)
MER_ID = "898110000000001"


def record(**values: str) -> bytes:
    """One ZM record: every field padded to its width (text left-aligned), joined by spaces, GBK."""
    defaults = {"交易代码": "S22", "代理机构标识码": "48020000", "发送机构标识码": "48020000", "系统跟踪号": "000001",
                "交易金额": "000000010000", "商户类别": "5411", "终端类型": "07", "支付方式(旧)": "01",
                "支付卡类型": "01", "商户手续费": "D000000000060", "结算金额": "C000000009940", "支付方式": "0001",
                "交易类型": "01", "交易子类": "01", "业务类型": "000201", "商户代码": MER_ID,
                "二级商户代码": "000000000000000", "二级商户分账入账金额": " 000000000000",
                "清算净额": "C000000009940", "优惠金额": " 000000000000", "发票金额": " 000000000000",
                "分期付款附加手续费": " 00000000000", "交易介质": "7"}
    merged = {**defaults, **values}
    cells = []
    for name, width in FIELDS:
        raw = merged.get(name, "").encode("gb18030")
        assert len(raw) <= width, name
        cells.append(raw + b" " * (width - len(raw)))
    line = b" ".join(cells)
    assert len(line) == WIDTH
    return line


def flow(*records: bytes) -> bytes:
    return b"".join(r + b"\r\n" for r in records)


def purchase(n: int, when: str, fen: int, fee: int, **kw) -> bytes:
    return record(系统跟踪号=f"{n:06d}", 交易传输时间=when, 查询流水号=f"Q{n:020d}", 商户订单号=f"ORD{n}",
                  交易金额=f"{fen:012d}", 商户手续费=f"D{fee:012d}", 结算金额=f"C{fen - fee:012d}",
                  清算净额=f"C{fen - fee:012d}", 账号="621700******1234", **kw)


def refund(n: int, when: str, fen: int, fee_back: int, original: int) -> bytes:
    return record(交易代码="S31", 系统跟踪号=f"{n:06d}", 交易传输时间=when, 查询流水号=f"Q{n:020d}",
                  商户订单号=f"RF{n}", 交易金额=f"{fen:012d}", 商户手续费=f"C{fee_back:012d}",
                  结算金额=f"D{fen - fee_back:012d}", 清算净额=f"D{fen - fee_back:012d}", 交易类型="04", 交易子类="00",
                  原交易查询流水号=f"Q{original:020d}", 账号="621700******1234")


DAY = [purchase(1, "0105093000", 10000, 60), purchase(2, "0105120001", 25050, 150),
       refund(3, "0105160000", 5000, 30, original=1)]


def report(settle="20260105", count=3, amt=("50.00", "350.50"), fee=("2.10", "0.30"), net=("0.00", "298.70"),
           merchant=MER_ID) -> bytes:
    """An RD summary report laid out like UnionPay's (title, header fields, two tables with 总计)."""
    row = lambda label: (f"{label:<20}{count:>8}{amt[0]:>16}{amt[1]:>16}{fee[0]:>16}{fee[1]:>16}"  # noqa: E731
                         f"{net[0]:>16}{net[1]:>20}")
    rule = "_" * 136
    text = "\r\n".join([
        " " * 73 + "中国银联全渠道商户交易汇总表", "",
        f"商户代码:{merchant:<40}清算币种:人民币",
        f"收单机构:48020000{'':<33}清算日期:{settle}",
        f"商户名称:测试商户{'':<37}生成日期:20260106", "", "",
        "交易类型            交易笔数               交易金额                         费用                              资金清算差额",
        " " * 41 + "借              贷              借              贷               借                  贷",
        rule, row("一般消费"), rule, row("总计"), "",
        "卡性质              交易笔数               交易金额                         费用                              资金清算差额",
        " " * 41 + "借              贷              借              贷               借                  贷",
        rule, row("借记卡"), rule, row("总计"), "",
    ])
    return text.encode("gb18030")


def bundle(tmp_path, members: dict[str, bytes], name="898110000000001_20260105.zip") -> InputFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return InputFile.read(path)


def loose(tmp_path, data: bytes, name=f"INN26010501ZM_{MER_ID}") -> InputFile:
    path = tmp_path / name
    path.write_bytes(data)
    return InputFile.read(path)


def good_zip(tmp_path, **report_kw) -> InputFile:
    return bundle(tmp_path, {f"INN26010501ZM_{MER_ID}": flow(*DAY),
                             f"RD202026010501_{MER_ID}": report(**report_kw)})


def claimants(file: InputFile) -> list[str]:
    return [s.name for s in MERCHANT.sources if REGISTRY[s.kind](s, MERCHANT).identify(file)]


def test_zip_and_loose_flow_file_are_identified_by_this_source_only(tmp_path):
    assert claimants(good_zip(tmp_path)) == ["unionpay"]
    assert claimants(loose(tmp_path, flow(*DAY))) == ["unionpay"]
    assert claimants(loose(tmp_path, report(), name=f"RD202026010501_{MER_ID}")) == []


def test_records_payments_and_a_refund(tmp_path):
    parsed = SOURCE.parse(good_zip(tmp_path))
    rows = parsed.records.to_pylist()
    assert [(r["line"], r["kind"], r["ref"], r["txn_id"], r["order_id"], r["amount"], r["fee"]) for r in rows] == [
        (1, "payment", "Q00000000000000000001", "Q00000000000000000001", "ORD1", 10000, 60),
        (2, "payment", "Q00000000000000000002", "Q00000000000000000002", "ORD2", 25050, 150),
        (3, "refund", "Q00000000000000000003", "Q00000000000000000001", "RF3", -5000, -30),
    ]
    assert rows[0]["occurred_at"] == datetime(2026, 1, 5, 1, 30) and rows[0]["business_day"] == date(2026, 1, 5)
    assert rows[0]["payer"] == "621700******1234" and rows[0]["memo"] == "S22 消费"
    assert rows[2]["memo"] == "S31 退货" and rows[2]["status"] == "success" and rows[2]["currency"] == "CNY"
    assert parsed.business_day == date(2026, 1, 5) and parsed.member == f"INN26010501ZM_{MER_ID}"
    assert parsed.control_totals["report"]["总计"]["交易类型"]["资金清算差额"] == {"借": "0.00", "贷": "298.70"}


def test_loose_flow_file_parses_without_totals(tmp_path):
    parsed = SOURCE.parse(loose(tmp_path, flow(*DAY)))
    assert parsed.row_count == 3 and parsed.member is None
    assert parsed.control_totals == {"清算日期": "2026-01-05", "rows": 3}


@pytest.mark.parametrize("name, when, expected", [
    ("INN26010501ZM_x", "1231235959", datetime(2025, 12, 31, 15, 59, 59)),  # a December time in a January file
    ("INN25123101ZM_x", "0101000001", datetime(2025, 12, 31, 16, 0, 1)),  # 2026-01-01 00:00:01 in a December file
    ("INN24030101ZM_x", "0229120000", datetime(2024, 2, 29, 4, 0)),  # leap day
    ("INN15090588ZM_x", "0906112203", datetime(2015, 9, 6, 3, 22, 3)),  # the day after the settlement date
])
def test_the_year_is_the_one_nearest_the_settlement_date(tmp_path, name, when, expected):
    parsed = SOURCE.parse(loose(tmp_path, flow(purchase(1, when, 100, 1)), name=name))
    assert parsed.records["occurred_at"].to_pylist() == [expected]


def test_a_time_with_no_year_near_the_settlement_date_is_rejected(tmp_path):
    with pytest.raises(ParseError, match=r"line 1: 交易传输时间='0229120000': not an MMDDhhmmss time within "
                                         r"half a year of the settlement date 2025-10-01"):
        SOURCE.parse(loose(tmp_path, flow(purchase(1, "0229120000", 100, 1)), name="INN25100101ZM_x"))


def test_a_renamed_loose_file_has_no_year_and_is_rejected(tmp_path):
    with pytest.raises(ParseError, match="cannot tell the settlement date"):
        SOURCE.parse(loose(tmp_path, flow(*DAY), name="unionpay.txt"))


@pytest.mark.parametrize("kw, field, message", [
    ({"count": 4}, "交易笔数", "says 交易笔数 4 but the flow file's records 3"),
    ({"amt": ("50.00", "350.51")}, "交易金额", "says 交易金额 贷 350.51 - 借 50.00 but the flow file's records' "
                                               "signed 交易金额 add up to 300.50"),
    ({"fee": ("2.10", "0.00")}, "费用", "says 费用 借 2.10 - 贷 0.00 but the flow file's records' 商户手续费 add up to 1.80"),
    ({"net": ("0.00", "298.00")}, "资金清算差额", "records' signed 结算金额 add up to 298.70"),
])
def test_report_totals_that_disagree_reject_the_zip(tmp_path, kw, field, message):
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(good_zip(tmp_path, **kw))
    text = str(exc.value)
    assert f"!RD202026010501_{MER_ID} line 13: {field}=" in text and "the 交易类型 table's 总计" in text
    assert message in text


def test_report_for_another_day_or_merchant_is_rejected(tmp_path):
    with pytest.raises(ParseError, match="清算日期 is 2026-01-06 but the flow file"):
        SOURCE.parse(good_zip(tmp_path, settle="20260106"))
    with pytest.raises(ParseError, match="商户代码 is 898110000000002 but the flow file's records are for"):
        SOURCE.parse(good_zip(tmp_path, merchant="898110000000002"))


def test_a_zip_with_error_records_is_refused_whole(tmp_path):
    zme = b"E22 " + b"0" * 330 + b"\r\n"
    file = bundle(tmp_path, {f"INN26010501ZM_{MER_ID}": flow(*DAY), f"INN26010501ZME_{MER_ID}": zme})
    with pytest.raises(ParseError, match="ZME .* not supported yet"):
        SOURCE.parse(file)
    empty = bundle(tmp_path, {f"INN26010501ZM_{MER_ID}": flow(*DAY), f"INN26010501ZME_{MER_ID}": b""}, name="e.zip")
    parsed = SOURCE.parse(empty)
    assert parsed.row_count == 3 and parsed.control_totals["members_not_read"] == [f"INN26010501ZME_{MER_ID}"]


@pytest.mark.parametrize("bad, field, reason", [
    ({"交易类型": "02"}, "交易类型", "unknown 交易类型"),
    ({"交易金额": "00000001000A"}, "交易金额", "not an amount in fen"),
    ({"商户手续费": "X000000000060"}, "商户手续费", "not a D/C amount"),
    ({"交易传输时间": "1305093000"}, "交易传输时间", "not an MMDDhhmmss time"),
    ({"查询流水号": ""}, "查询流水号", "required value is empty"),
])
def test_a_bad_record_names_line_field_and_value(tmp_path, bad, field, reason):
    rows = [DAY[0], record(**{**dict(交易传输时间="0105100000", 查询流水号="Q9"), **bad}), DAY[2]]
    with pytest.raises(ParseError) as exc:
        SOURCE.parse(loose(tmp_path, flow(*rows)))
    assert f"line 2: {field}=" in str(exc.value) and reason in str(exc.value)


def test_a_short_line_is_named(tmp_path):
    with pytest.raises(ParseError, match=r"line 2: not a ZM flow record \(607 bytes.*this line is 600 bytes"):
        SOURCE.parse(loose(tmp_path, flow(DAY[0], DAY[1][:600], DAY[2])))


def test_the_same_transaction_twice_is_rejected(tmp_path):
    with pytest.raises(ParseError, match=r"line 3: 查询流水号='Q00000000000000000001': the same transaction appears twice"):
        SOURCE.parse(loose(tmp_path, flow(DAY[0], DAY[1], DAY[0])))


def test_gbk_merchant_field_is_decoded(tmp_path):
    parsed = SOURCE.parse(loose(tmp_path, flow(purchase(1, "0105093000", 100, 1, 商户自定义域="会员充值"))))
    assert parsed.records["memo"].to_pylist() == ["S22 消费 | 会员充值"]


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    """A member that would inflate 50 MB from ~50 kB: identified (by name), then refused by InputFile's limits."""
    file = InputFile.read(write_zip_bomb(tmp_path / "bomb.zip", f"INN26010501ZM_{MER_ID}"))
    assert claimants(file) == ["unionpay"]
    with pytest.raises(ParseError, match="refused as a zip bomb"):
        SOURCE.parse(file)


def test_ingest_stores_the_zip_once(db_url, tmp_path):
    cfg = from_dict({"database": {"url": db_url}, "merchants": [{
        "id": "shop", "name": "Shop", "sources": [{"name": "unionpay", "kind": "unionpay"}]}]})
    path = good_zip(tmp_path).path
    first = ingest_file(cfg, cfg.merchants[0], path)
    assert (first.format, first.rows, first.new_rows, first.business_day) == ("unionpay.acp_flow", 3, 3, date(2026, 1, 5))
    loose_path = loose(tmp_path, flow(*DAY)).path  # the same records, delivered loose: nothing new
    again = ingest_file(cfg, cfg.merchants[0], loose_path)
    assert again.rows == 3 and again.new_rows == 0

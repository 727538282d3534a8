"""WeChat Pay fund-flow bill (资金账单): identification, records, summary and balance checks.

The real samples all carry a summary that disagrees with their rows (golden files hold
those rejections); the bills here are written for these tests.
"""

from __future__ import annotations

import gzip
from datetime import date, datetime

import pytest

from core.config import from_dict
from core.sources import REGISTRY, ControlTotalError, InputFile, ParseError
from core.sources.wechatpay_fundflow import WeChatPayFundFlowBill

MERCHANT = from_dict({"merchants": [{
    "id": "m", "name": "M", "sources": [{"name": k, "kind": k} for k in REGISTRY],
}]}).merchants[0]
SOURCE = WeChatPayFundFlowBill(MERCHANT.sources[0], MERCHANT)

HEADER = "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),资金变更提交申请人,备注,业务凭证号"
SUMMARY = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"
# (记账时间, 业务单号, 流水单号, 业务名称, 业务类型, 收支类型, 金额, 结余, 申请人, 备注, 凭证号); opening balance 1000.00
ROWS = [
    ("2026-11-20 07:30:00", "4200000001202611200000000001", "F0001", "交易", "交易", "收入", "100.00", "1100.00",
     "system", "", "ORD-1"),
    ("2026-11-20 07:30:00", "4200000001202611200000000001", "F0002", "扣除交易手续费", "扣除交易手续费", "支出", "0.60",
     "1099.40", "system", "", "ORD-1"),
    ("2026-11-20 13:40:11", "50300000012026112000000001", "F0003", "退款", "退款", "支出", "30.00", "1069.40",
     "1900000109API", "退款总金额30.00元;含手续费0.18元", "RF-1"),
    ("2026-11-20 18:00:00", "", "F0004", "提现", "提现", "支出", "1000.00", "69.40", "1900000109", "", ""),
    ("2026-11-20 23:59:59", "", "F0005", "充值", "充值", "收入", "5.00", "74.40", "1900000109", "营销充值", ""),
]


def bill(rows=ROWS, summary: str | None = None, *, header: str = HEADER, newline: str = "\r\n") -> str:
    body = [",".join("`" + v for v in r) for r in rows]
    if summary is None:
        inc = [r for r in rows if r[5] == "收入"]
        out = [r for r in rows if r[5] == "支出"]
        total = lambda rs: f"{sum(int(r[6].replace('.', '')) for r in rs) / 100:.2f}"  # noqa: E731 (test data only)
        summary = f"`{len(rows)},`{len(inc)},`{total(inc)},`{len(out)},`{total(out)}"
    return newline.join([header, *body, SUMMARY, summary]) + newline


def write(tmp_path, text: str, name="fundflow.csv", *, gz=False, bom=False) -> InputFile:
    data = ("\ufeff" if bom else "").encode() + text.encode("utf-8")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return InputFile.read(path)


def claimants(file: InputFile) -> list[str]:
    return [s.name for s in MERCHANT.sources if REGISTRY[s.kind](s, MERCHANT).identify(file)]


def test_identified_by_this_source_only_plain_bom_and_gzip(tmp_path):
    for i, kw in enumerate([{}, {"bom": True}, {"gz": True}]):
        assert claimants(write(tmp_path, bill(), f"f{i}.csv", **kw)) == ["wechatpay_fundflow"]


def test_records_kinds_signs_refs_and_times(tmp_path):
    parsed = SOURCE.parse(write(tmp_path, bill()))
    rows = parsed.records.to_pylist()
    assert [(r["line"], r["kind"], r["ref"], r["amount"], r["fee"]) for r in rows] == [
        (2, "payment", "F0001/4200000001202611200000000001", 10000, 0),
        (3, "fee", "F0002/4200000001202611200000000001", -60, 0),
        (4, "refund", "F0003/50300000012026112000000001", -3000, 0),
        (5, "payout", "F0004/", -100000, 0),
        (6, "adjustment", "F0005/", 500, 0),
    ]
    first = rows[0]
    assert first["txn_id"] == "4200000001202611200000000001" and first["order_id"] == "ORD-1"
    assert first["occurred_at"] == datetime(2026, 11, 19, 23, 30) and first["business_day"] == date(2026, 11, 20)
    assert first["currency"] == "CNY" and first["status"] == "success" and first["source"] is None
    assert rows[2]["memo"] == "退款 | 退款总金额30.00元;含手续费0.18元"
    assert rows[3]["txn_id"] is None and rows[3]["order_id"] is None
    assert parsed.business_day == date(2026, 11, 20)
    assert parsed.control_totals == {"资金流水总笔数": "5", "收入笔数": "2", "收入金额": "105.00",
                                     "支出笔数": "3", "支出金额": "1030.60"}


def test_full_width_header_and_float_counts_are_accepted(tmp_path):
    header = HEADER.replace("(元)", "（元）")
    parsed = SOURCE.parse(write(tmp_path, bill(header=header, summary="`5.0,`2.0,`105.00,`3.0,`1030.60", newline="\n")))
    assert parsed.row_count == 5


@pytest.mark.parametrize("summary, field, message", [
    ("`6,`2,`105.00,`3,`1030.60", "资金流水总笔数", "the summary says 6 but the bill has 5 bookings"),
    ("`5,`3,`105.00,`3,`1030.60", "收入笔数", "the summary says 3 but the bill has 2 收入 bookings"),
    ("`5,`2,`105.01,`3,`1030.60", "收入金额", "the summary says 105.01 but the 收入 rows add up to 105.00"),
    ("`5,`2,`105.00,`3,`1030.00", "支出金额", "the summary says 1030.00 but the 支出 rows add up to 1030.60"),
])
def test_summary_mismatch_is_a_totals_error(tmp_path, summary, field, message):
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(write(tmp_path, bill(summary=summary)))
    assert f"line 8: {field}=" in str(exc.value) and message in str(exc.value)


def test_a_trimmed_row_with_the_original_summary_is_rejected(tmp_path):
    """What the gunsluo sample does: a row removed, the summary left as it was."""
    full = bill()
    trimmed = bill(ROWS[:2] + ROWS[3:], summary=full.split("\r\n")[-2])
    with pytest.raises(ControlTotalError, match="the summary says 5 but the bill has 4 bookings"):
        SOURCE.parse(write(tmp_path, trimmed))


def test_a_missing_row_that_keeps_the_summary_right_still_breaks_the_balance(tmp_path):
    rows = ROWS[:2] + ROWS[3:]  # the summary is recomputed: only the running balance can tell
    with pytest.raises(ControlTotalError) as exc:
        SOURCE.parse(write(tmp_path, bill(rows)))
    assert "line 4: 账户结余(元)='69.40':" in str(exc.value)
    assert "come to 99.40" in str(exc.value)


def test_empty_balances_are_carried_through(tmp_path):
    rows = [r[:7] + ("",) + r[8:] if i in (1, 2) else r for i, r in enumerate(ROWS)]
    assert SOURCE.parse(write(tmp_path, bill(rows))).row_count == 5


@pytest.mark.parametrize("index, value, field, reason", [
    (6, "1.005", "收支金额(元)", "not an amount"),
    (0, "2026-11-20 25:00:00", "记账时间", "not a date-time"),
    (5, "转入", "收支类型", "unknown 收支类型"),
    (6, "-1.00", "收支金额(元)", "negative amount"),
    (2, "", "资金流水单号", "required value is empty"),
])
def test_a_bad_row_names_line_field_and_value(tmp_path, index, value, field, reason):
    rows = list(ROWS)
    rows[2] = rows[2][:index] + (value,) + rows[2][index + 1:]
    with pytest.raises(ParseError) as exc:
        SOURCE.parse(write(tmp_path, bill(rows)))
    assert f"line 4: {field}=" in str(exc.value) and reason in str(exc.value)


def test_the_same_booking_twice_is_rejected(tmp_path):
    rows = ROWS + [ROWS[0][:7] + ("1174.40",) + ROWS[0][8:]]
    with pytest.raises(ParseError, match=r"line 7: 资金流水单号/微信支付业务单号='F0001/4200000001202611200000000001': "
                                         r"the same booking appears twice \(also on line 2\)"):
        SOURCE.parse(write(tmp_path, bill(rows)))


def test_truncated_bill_is_rejected(tmp_path):
    text = "\r\n".join(bill().split("\r\n")[:4])
    with pytest.raises(ParseError, match="no summary row"):
        SOURCE.parse(write(tmp_path, text))


def test_two_partial_refunds_booked_under_the_payment_number_stay_two_records(tmp_path):
    """As in the real v3 sample, a refund's 资金流水单号 is the payment's 微信订单号."""
    txn = "4200000001202611200000000001"
    rows = ROWS[:2] + [
        ("2026-11-20 13:40:11", "50300000012026112000000001", txn, "退款", "退款", "支出", "30.00", "1069.40", "x", "", "RF-1"),
        ("2026-11-20 13:45:00", "50300000012026112000000002", txn, "退款", "退款", "支出", "20.00", "1049.40", "x", "", "RF-2"),
    ]
    refs = SOURCE.parse(write(tmp_path, bill(rows))).records["ref"].to_pylist()
    assert refs[2:] == [f"{txn}/50300000012026112000000001", f"{txn}/50300000012026112000000002"]


def test_empty_day(tmp_path):
    parsed = SOURCE.parse(write(tmp_path, bill([], summary="`0,`0,`0.00,`0,`0.00")))
    assert parsed.row_count == 0 and parsed.business_day is None


def test_real_sample_with_a_trimmed_row_is_rejected_not_accepted(samples):
    """gunsluo's fixture: the summary counts 3 bookings (1 收入), the file holds the 2 refunds."""
    for name in ("gunsluo_fundflowbill_BASIC.csv", "gunsluo_fundflowbill_BASIC.csv.gz"):
        file = InputFile.read(samples / "wechatpay" / name)
        assert claimants(file) == ["wechatpay_fundflow"]
        with pytest.raises(ControlTotalError, match="line 5: 资金流水总笔数='3': the summary says 3 but the bill has 2"):
            SOURCE.parse(file)

"""Write the bundled example days (examples/demo/), in the channels' real file formats.

    python examples/make_demo.py

Deterministic: running it again rewrites identical files. The days are 2026-11-20 and
2026-11-21 for the coffee chain "demo-shop"; the differences planted in them are listed
in PLANTED below (and asserted by tests/test_demo.py).

- orders_YYYY-MM-DD.csv: the shop's order export, canonical header, UTF-8.
- wechatpay_tradebill_ALL_YYYY-MM-DD.csv(.gz): WeChat Pay v3 ALL trade bill: UTF-8 with
  BOM, CRLF, backtick-prefixed fields, 7-column summary (the 21st is gzipped, as the v3
  API's tar_type=GZIP serves it).
- 2088xxxxxxxx0156_YYYYMMDD.csv.zip: Alipay trade bill zip: GBK member names, GBK CSV,
  CRLF, `#` banner and footer, tab-suffixed ids, refunds as negative rows.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

OUT = Path(__file__).parent / "demo"
ALIPAY_ACCOUNT = "20881234567890120156"
WECHAT_MCH = "1900000109"
WECHAT_APPID = "wx8888888888888888"
RATE = Decimal("0.006")

# order id -> what is planted (the test reads this)
PLANTED = {
    "W-1005": ("short", "wechatpay", "paid in our books, absent from the WeChat bills"),
    "W-9001": ("long", "wechatpay", "WeChat collected an order our books do not have"),
    "W-1010": ("amount_mismatch", "wechatpay", "128.00 in our books, 118.00 at WeChat"),
    "W-1012": ("status_mismatch", "wechatpay", "refunded at WeChat, not in our books"),
    "W-1015": ("duplicate_charge", "wechatpay", "paid twice at WeChat"),
    "A-2003": ("short", "alipay", "paid in our books, absent from the Alipay bills"),
    "A-2007": ("status_mismatch", "alipay", "refunded in our books, not at Alipay"),
    "A-2009": ("amount_mismatch", "alipay", "refund 15.00 in our books, 10.00 at Alipay"),
    "A-9002": ("long", "alipay", "Alipay collected an order our books do not have"),
    "A-2011": ("status_mismatch", "alipay", "our books say unpaid, Alipay collected"),
    "W-1105": ("in_transit", "wechatpay", "paid 23:50 on the 21st, not on that day's bill yet"),
    "W-1025": ("fee_mismatch", "wechatpay", "WeChat charged a 1.00 fee on 58.00 (0.6% is 0.35)"),
    "W-1026": ("fx_difference", "wechatpay", "booked as USD 10.00, settled CNY 73.00 (7.10 gives 71.00)"),
    "W-1029": ("status_mismatch", "wechatpay", "paid in our books, revoked (REVOKED) at WeChat"),
    "W-1031": ("suggested_match", "wechatpay", "WeChat has it as W-1031-R: same payer and amount, a person decides"),
    "W-1024": ("duplicate_record", "wechatpay", "the 21st's bill repeats the 20th's row for W-1024"),
}
# Matched without any break, each by its own rule:
MATCHED = {
    "W-1003": "a 5.00 WeChat coupon: 订单金额 agrees, 应结订单金额 is 5.00 less",
    "W-1020": "crosses midnight (23:59:58 ours, 00:00:03 at WeChat): on the next day's bill",
    "W-1027": "merged: one WeChat payment W-M001 pays W-1027 and W-1028 (named in its 商户数据包 attach field)",
    "W-1028": "merged, with W-1027",
    "A-2017": "split: paid in two Alipay trades that add up",
}

GOODS = ["拿铁 Latte", "美式 Americano", "燕麦拿铁 Oat latte", "手冲 Pour-over", "可颂 Croissant", "冷萃 Cold brew"]


@dataclass
class Order:
    order_id: str
    channel: str
    amount: Decimal
    paid_at: datetime  # Beijing time, naive
    status: str = "paid"
    refund: Decimal = Decimal("0")
    refunded_at: datetime | None = None
    txn_id: str = ""
    payer: str = ""
    goods: str = ""
    # what the channel says, when it differs from our books
    channel_amount: Decimal | None = None
    channel_time: datetime | None = None
    channel_refund: Decimal | None = None
    coupon: Decimal = Decimal("0")
    in_books: bool = True
    on_channel: bool = True
    charged_twice: bool = False
    currency: str = "CNY"  # of our books
    channel_fee: Decimal | None = None  # what the channel charged, when not the rate card's
    channel_status: str = "SUCCESS"
    channel_order_id: str | None = None
    attach: str = ""
    split_parts: tuple[Decimal, ...] = ()
    redelivered_next_day: bool = False
    extra: dict = field(default_factory=dict)


def money(d: Decimal) -> str:
    return f"{d:.2f}"


def fee(amount: Decimal) -> Decimal:
    return (amount * RATE).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def make_orders(rng: random.Random, day: datetime, prefix: str, channel: str, first: int, count: int,
                start_hour: int = 7) -> list[Order]:
    orders = []
    t = day.replace(hour=start_hour, minute=30)
    for n in range(first, first + count):
        t += timedelta(minutes=rng.randint(12, 35), seconds=rng.randint(0, 59))
        amount = Decimal(rng.choice([18, 22, 25, 28, 32, 36, 38, 45, 58, 66])) + Decimal(rng.choice([0, 0, 50])) / 100
        orders.append(Order(
            order_id=f"{prefix}-{n}", channel=channel, amount=amount, paid_at=t,
            payer=(f"oUpF8uMuAJO_M2pxb1Q9zNjW{n:04d}" if channel == "wechatpay" else f"{rng.choice('张王李赵')}*({n % 97:02d}***@qq.com)"),
            goods=rng.choice(GOODS),
        ))
    return orders


def day1(rng: random.Random) -> list[Order]:
    d = datetime(2026, 11, 20)
    w = make_orders(rng, d, "W", "wechatpay", 1001, 24)
    a = make_orders(rng, d, "A", "alipay", 2001, 16)
    by = {o.order_id: o for o in w + a}
    by["W-1003"].coupon = Decimal("5.00")
    by["W-1005"].on_channel = False
    by["W-1010"].amount, by["W-1010"].channel_amount = Decimal("128.00"), Decimal("118.00")
    o = by["W-1012"]
    o.channel_refund, o.refunded_at = o.amount, o.paid_at + timedelta(hours=2)
    by["W-1015"].charged_twice = True
    o = by["W-1020"]
    o.paid_at, o.channel_time = d.replace(hour=23, minute=59, second=58), d + timedelta(days=1, seconds=3)
    by["A-2003"].on_channel = False
    o = by["A-2007"]
    o.refund, o.refunded_at, o.status, o.channel_refund = Decimal("20.00"), o.paid_at + timedelta(hours=1), "partially_refunded", Decimal("0")
    o = by["A-2009"]
    o.refund, o.refunded_at, o.status, o.channel_refund = Decimal("15.00"), o.paid_at + timedelta(hours=3), "partially_refunded", Decimal("10.00")
    by["A-2011"].status = "unpaid"
    for o in w + a:  # an ordinary refund that agrees on both sides
        if o.order_id in ("W-1007", "A-2005"):
            o.refund, o.refunded_at, o.status = o.amount, o.paid_at + timedelta(minutes=40), "refunded"
    w += make_orders(rng, d, "W", "wechatpay", 1025, 7, start_hour=17)
    by = {o.order_id: o for o in w + a}
    by["W-1024"].redelivered_next_day = True
    by["W-1025"].amount, by["W-1025"].channel_fee = Decimal("58.00"), Decimal("1.00")
    o = by["W-1026"]
    o.currency, o.amount, o.channel_amount = "USD", Decimal("10.00"), Decimal("73.00")
    by["W-1027"].on_channel = by["W-1028"].on_channel = False
    by["W-1027"].extra["books_without_txn"] = by["W-1028"].extra["books_without_txn"] = True
    merged = by["W-1027"].amount + by["W-1028"].amount
    w.append(Order("W-M001", "wechatpay", merged, by["W-1028"].paid_at + timedelta(seconds=30), in_books=False,
                   payer=by["W-1027"].payer, goods="合并支付 Combined checkout", attach="merged W-1027 W-1028"))
    by["W-1029"].channel_status = "REVOKED"
    o = by["W-1031"]
    o.channel_order_id, o.amount, o.extra["books_without_txn"] = "W-1031-R", Decimal("45.00"), True
    by["W-1029"].amount = Decimal("38.00")
    a += [Order("A-2017", "alipay", Decimal("58.50"), d.replace(hour=17, minute=44, second=2),
                split_parts=(Decimal("40.00"), Decimal("18.50")), payer="周*(33***@qq.com)", goods="手冲 Pour-over",
                extra={"books_without_txn": True})]
    w.append(Order("W-9001", "wechatpay", Decimal("36.00"), d.replace(hour=15, minute=12, second=9), in_books=False,
                   payer="oUpF8uMuAJO_M2pxb1Q9zNjW9001", goods="美式 Americano"))
    a.append(Order("A-9002", "alipay", Decimal("42.50"), d.replace(hour=16, minute=40, second=31), in_books=False,
                   payer="孙*(18***@163.com)", goods="燕麦拿铁 Oat latte"))
    return w + a


def day2(rng: random.Random) -> list[Order]:
    d = datetime(2026, 11, 21)
    w = make_orders(rng, d, "W", "wechatpay", 1101, 6)
    a = make_orders(rng, d, "A", "alipay", 2101, 4)
    o = next(x for x in w if x.order_id == "W-1105")
    o.paid_at, o.on_channel = d.replace(hour=23, minute=50, second=12), False
    return w + a


def assign_ids(orders: list[Order]) -> None:
    for o in orders:
        n = int("".join(ch for ch in o.order_id if ch.isdigit()))
        if o.channel == "wechatpay":
            o.txn_id = f"4200001{o.paid_at:%Y%m%d}{n:013d}"
        else:
            o.txn_id = f"{o.paid_at:%Y%m%d}2200145{n:011d}"
        if o.channel == "alipay" and n % 3 == 0:
            o.extra["books_without_txn"] = True  # matched by order id instead
    # the 20th's bill is generated first, the re-delivered row goes into the 21st's too


# -- writers ---------------------------------------------------------------------------

def write_orders(orders: list[Order], path: Path) -> None:
    lines = ["order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id,refunded_at,payer"]
    for o in sorted((o for o in orders if o.in_books), key=lambda o: o.paid_at):
        txn = "" if o.extra.get("books_without_txn") or o.status == "unpaid" else o.txn_id
        refunded = o.refunded_at.isoformat() + "+08:00" if o.refund else ""
        # bank transfers: the customer as our books know them, which the fuzzy pass looks for
        payer = o.payer if o.channel in ("wechatpay", "bank") else ""
        lines.append(",".join([o.order_id, o.channel, money(o.amount), o.currency, o.status,
                               o.paid_at.isoformat() + "+08:00", money(o.refund), txn, refunded, payer]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


WX_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
             "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
             "手续费,费率,订单金额,申请退款金额,费率备注")
WX_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def wechat_bill(orders: list[Order], day: datetime) -> bytes:
    rows, totals = [], [Decimal(0)] * 6
    def emit(t, txn, o, status, settle, coupon, refund_no, m_refund_no, refund, refund_type, refund_status, fee5, gross, applied):
        rows.append([t.strftime("%Y-%m-%d %H:%M:%S"), WECHAT_APPID, WECHAT_MCH, "0", "", txn,
                     o.channel_order_id or o.order_id, o.payer, "JSAPI", status, "OTHERS", "CNY", money(settle),
                     money(coupon), refund_no, m_refund_no, money(refund), "0.00", refund_type, refund_status, o.goods,
                     o.attach, f"{fee5:.5f}", "0.60%", money(gross), money(applied), ""])
        for i, v in enumerate([settle, refund, Decimal(0), fee5, gross, applied]):
            totals[i] += v
    for o in orders:
        if not o.on_channel:
            continue
        t = o.channel_time or o.paid_at
        gross = o.channel_amount if o.channel_amount is not None else o.amount
        on_this_bill = t.date() == day.date() or (o.redelivered_next_day and t.date() + timedelta(days=1) == day.date())
        if on_this_bill:
            charged = o.channel_fee if o.channel_fee is not None else fee(gross - o.coupon)
            emit(t, o.txn_id, o, o.channel_status, gross - o.coupon, o.coupon, "0", "0", Decimal(0), "", "", charged,
                 gross, Decimal(0))
            if o.charged_twice:
                t2 = t + timedelta(seconds=41)
                emit(t2, o.txn_id[:-4] + "9999", o, "SUCCESS", gross, Decimal(0), "0", "0", Decimal(0), "", "", fee(gross), gross, Decimal(0))
        refund = o.channel_refund if o.channel_refund is not None else o.refund
        if refund and o.refunded_at and o.refunded_at.date() == day.date():
            n = o.order_id.split("-")[1]
            emit(o.refunded_at, o.txn_id, o, "REFUND", Decimal(0), Decimal(0), f"5030000{o.refunded_at:%Y%m%d}{n:0>14}",
                 f"RF{o.order_id}", refund, "ORIGINAL", "SUCCESS", -fee(refund), Decimal(0), refund)
    rows.sort(key=lambda r: r[0])
    text = [WX_HEADER] + [",".join("`" + v for v in r) for r in rows]
    text += [WX_SUMMARY, ",".join("`" + v for v in [str(len(rows)), money(totals[0]), money(totals[1]), money(totals[2]),
                                                   f"{totals[3]:.5f}", money(totals[4]), money(totals[5])])]
    return ("\ufeff" + "\r\n".join(text) + "\r\n").encode("utf-8")


AL_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,"
             "商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,"
             "卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")


class _GbkZipInfo(zipfile.ZipInfo):
    """Member names in GBK without the UTF-8 flag, as Alipay's bill zips have them."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def alipay_zip(orders: list[Order], day: datetime) -> bytes:
    rows, n_trade, n_refund, s_trade, s_refund = [], 0, 0, Decimal(0), Decimal(0)
    for o in orders:
        if not o.on_channel:
            continue
        created = o.paid_at - timedelta(seconds=17)
        def row(kind, amount, done, refund_no, txn=o.txn_id, charged=None):
            charged = fee(amount) if charged is None else charged
            return [txn + "\t", (o.channel_order_id or o.order_id) + "\t", kind + "\t", o.goods,
                    created.strftime("%Y-%m-%d %H:%M:%S"), done.strftime("%Y-%m-%d %H:%M:%S"), "SH001\t", "静安店\t",
                    "cashier01\t", "\t", o.payer + "\t", money(amount), money(amount), "0.00", "0.00", "0.00", "0.00",
                    "0.00", "", "0.00\t", "0.00", refund_no + "\t", money(-charged), "0.00", ""]
        if o.paid_at.date() == day.date():
            gross = o.channel_amount if o.channel_amount is not None else o.amount
            # each part of a split payment, and a second charge, is an Alipay trade of its own
            parts = o.split_parts or ((gross, gross) if o.charged_twice else (gross,))
            for k, part in enumerate(parts):
                rows.append(row("交易", part, o.paid_at + timedelta(seconds=9 * k), "",
                                txn=f"{o.txn_id}{k}" if k else o.txn_id, charged=o.channel_fee))
                n_trade, s_trade = n_trade + 1, s_trade + part
        refund = o.channel_refund if o.channel_refund is not None else o.refund
        if refund and o.refunded_at and o.refunded_at.date() == day.date():
            rows.append(row("退款", -refund, o.refunded_at, f"RF{o.order_id}-{o.refunded_at:%H%M%S}"))
            n_refund, s_refund = n_refund + 1, s_refund - refund
    rows.sort(key=lambda r: r[5])
    start, end = day.strftime("%Y年%m月%d日"), (day + timedelta(days=1)).strftime("%Y年%m月%d日")
    lines = ["#支付宝业务明细查询", f"#账号：[{ALIPAY_ACCOUNT}]", f"#起始日期：[{start} 00:00:00]   终止日期：[{end} 00:00:00]",
             "#-----------------------------------------业务明细列表----------------------------------------", AL_HEADER]
    lines += [",".join(r) for r in rows]
    lines += ["#-----------------------------------------业务明细列表结束------------------------------------",
              f"#交易合计：{n_trade}笔，商家实收共{money(s_trade)}元，商家优惠共0.00元",
              f"#退款合计：{n_refund}笔，商家实收退款共{money(s_refund)}元，商家优惠退款共0.00元",
              f"#导出时间：[{(day + timedelta(days=1)).strftime('%Y年%m月%d日')} 09:12:07]"]
    detail = ("\r\n".join(lines) + "\r\n").encode("gbk")
    summary = ("#支付宝业务汇总查询\r\n#账号：[" + ALIPAY_ACCOUNT + "]\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,"
               "订单金额（元）,商家实收（元）\r\n" + f"SH001,静安店,{n_trade},{n_refund},{money(s_trade + s_refund)},"
               f"{money(s_trade + s_refund)}\r\n#结束\r\n").encode("gbk")
    base = f"{ALIPAY_ACCOUNT}_{day:%Y%m%d}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in ((f"{base}_业务明细.csv", detail), (f"{base}_业务明细(汇总).csv", summary)):
            exported = day + timedelta(days=1, hours=9, minutes=12, seconds=7)
            info = _GbkZipInfo(name, date_time=exported.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def main() -> None:
    rng = random.Random(20261120)
    OUT.mkdir(exist_ok=True)
    d1, d2 = day1(rng), day2(rng)
    everything = d1 + d2
    assign_ids(everything)
    for day, orders in ((datetime(2026, 11, 20), d1), (datetime(2026, 11, 21), d2)):
        write_orders(orders, OUT / f"orders_{day:%Y-%m-%d}.csv")
        wx = [o for o in everything if o.channel == "wechatpay"]
        bill = wechat_bill(wx, day)
        name = f"wechatpay_tradebill_ALL_{day:%Y-%m-%d}.csv"
        if day.day == 21:
            (OUT / (name + ".gz")).write_bytes(gzip.compress(bill, mtime=0))
        else:
            (OUT / name).write_bytes(bill)
        (OUT / f"{ALIPAY_ACCOUNT}_{day:%Y%m%d}.csv.zip").write_bytes(
            alipay_zip([o for o in everything if o.channel == "alipay"], day))
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()

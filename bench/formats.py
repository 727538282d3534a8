"""Per-format throughput: rows/s to read, identify and parse a large generated statement.

    .venv/bin/python bench/formats.py                    # 200,000 rows per format, ~1-2 min
    .venv/bin/python bench/formats.py --rows 50000 --only mt940 camt

For each format a file of about N rows is generated (seeded, into bench/out/formats/,
reused while it exists) in the real layout the source reads, then timed as ingest runs it:
`InputFile.read` (gunzip / unzip), the configured source's `identify`, and `parse`
(normalise and check the control totals). Storing rows is common to every format and is
measured by bench/bench_day.py; this table isolates the per-format cost.

Formats: WeChat Pay trade bill and orders CSV (bench/gen_day.py's day, so N orders give a
slightly longer bill), Alipay trade bill zip (GBK member), WeChat Pay fund-flow bill,
MT940 (one statement of N :61:/:86: lines), camt.053 (one statement of N entries), Stripe
itemized balance report (created_utc).
Not generated: UnionPay ACP (a long fixed-width record layout), OFX, camt.054 (the camt
reader again), PayPal STL/TRR and Adyen (many record types each): not cheap to generate
correctly; a follow-up.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from core.config import from_dict  # noqa: E402
from core.ingest import configured_sources  # noqa: E402
from core.sources import InputFile  # noqa: E402

OUT = HERE / "out" / "formats"
DAY = date(2026, 11, 20)
SEED = 20261120
KINDS = ("orders", "wechatpay", "alipay", "wechatpay_fundflow", "mt940", "camt", "stripe")
MERCHANT = from_dict({"merchants": [{"id": "bench", "name": "bench", "timezone": "Asia/Shanghai", "sources": [
    {"name": k, "kind": k, **({"timezone": "Europe/Amsterdam"} if k in ("mt940", "camt") else {})}
    for k in KINDS]}]}).merchants[0]


def _yuan(minor: np.ndarray) -> list[str]:
    return [f"{m // 100}.{m % 100:02d}" if m >= 0 else f"-{-m // 100}.{-m % 100:02d}" for m in minor.tolist()]


def _times(rng, n: int) -> list[str]:
    seconds = np.sort(rng.integers(0, 86400, n))
    base = datetime(DAY.year, DAY.month, DAY.day)
    return [(base + timedelta(seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S") for s in seconds]


def gen_day_files(n: int) -> dict[str, Path]:
    import gen_day

    files = gen_day.generate(n)
    return {"orders": files.orders, "wechatpay": files.bill}


class _GbkName(zipfile.ZipInfo):
    def _encodeFilenameFlags(self):
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


ALIPAY_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,"
                 "商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,"
                 "商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")


def gen_alipay(n: int, path: Path) -> None:
    rng = np.random.default_rng(SEED)
    amounts = rng.integers(100, 50_000, n)
    refund = rng.random(n) < 0.02
    signed = np.where(refund, -amounts, amounts)
    fees = np.where(refund, 0, -(amounts * 6 // 1000))
    times, money, fee = _times(rng, n), _yuan(signed), _yuan(fees)
    rows = [f"2026112022001{i:015d}\t,BENCH-{i:08d}\t,{'退款' if r else '交易'}\t,拿铁 Latte,{t},{t},SH001\t,静安店\t,"
            f"cashier01\t,\t,*明(138***@qq.com)\t,{m},{m},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,"
            f"{'RF%08d' % i if r else ''}\t,{f},0.00,"
            for i, (r, t, m, f) in enumerate(zip(refund.tolist(), times, money, fee))]
    trade, back = int(amounts[~refund].sum()), int(-amounts[refund].sum())
    lines = ["#支付宝业务明细查询", "#账号：[20881234567890120156]",
             "#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]",
             "#-----------------------------------------业务明细列表----------------------------------------",
             ALIPAY_HEADER, *rows,
             "#-----------------------------------------业务明细列表结束------------------------------------",
             f"#交易合计：{int((~refund).sum())}笔，商家实收共{_yuan(np.array([trade]))[0]}元，商家优惠共0.00元",
             f"#退款合计：{int(refund.sum())}笔，商家实收退款共{_yuan(np.array([back]))[0]}元，商家优惠退款共0.00元",
             "#导出时间：[2026年11月21日 09:12:07]"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = _GbkName("20881234567890120156_20261120_业务明细.csv")
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, ("\r\n".join(lines) + "\r\n").encode("gbk"))
    path.write_bytes(buf.getvalue())


def gen_fundflow(n: int, path: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    amounts = rng.integers(100, 50_000, n)
    out = rng.random(n) < 0.1
    balance = 10_000_000 + np.cumsum(np.where(out, -amounts, amounts))
    times, money, bal = _times(rng, n), _yuan(amounts), _yuan(balance)
    rows = [f"`{t},`4200001202611200{i:012d},`5030080{i:021d},`{'退款' if o else '交易'},`{'退款' if o else '交易'},"
            f"`{'支出' if o else '收入'},`{m},`{b},`1900000109API,`,`BENCH-{i:08d}"
            for i, (o, t, m, b) in enumerate(zip(out.tolist(), times, money, bal))]
    ins, outs = amounts[~out], amounts[out]
    lines = ["记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),资金变更提交申请人,备注,业务凭证号",
             *rows, "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额",
             f"`{n},`{len(ins)},`{_yuan(np.array([ins.sum()]))[0]},`{len(outs)},`{_yuan(np.array([outs.sum()]))[0]}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _eur(minor: int) -> str:
    return f"{minor // 100},{minor % 100:02d}"


def gen_mt940(n: int, path: Path) -> None:
    rng = np.random.default_rng(SEED + 2)
    amounts = rng.integers(100, 500_000, n).tolist()
    credit = (rng.random(n) < 0.7).tolist()
    opening = 100_000_000
    closing = opening + sum(a if c else -a for a, c in zip(amounts, credit))
    lines = [":20:BENCH", ":25:NL12ABCD3456789012", ":28C:1/1", f":60F:C261119EUR{_eur(opening)}"]
    for i, (a, c) in enumerate(zip(amounts, credit)):
        lines.append(f":61:2611201120{'C' if c else 'D'}{_eur(a)}NTRFBENCH{i:08d}//B{i:010d}")
        lines.append(f":86:/NAME/Customer {i % 997}/REMI/Order BENCH-{i:08d}")
    lines += [f":62F:C261120EUR{_eur(closing)}", "-"]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


def gen_camt(n: int, path: Path) -> None:
    rng = np.random.default_rng(SEED + 3)
    amounts = rng.integers(100, 500_000, n).tolist()
    credit = (rng.random(n) < 0.7).tolist()
    opening = 100_000_000
    total_c = sum(a for a, c in zip(amounts, credit) if c)
    total_d = sum(a for a, c in zip(amounts, credit) if not c)
    closing = opening + total_c - total_d

    def amt(m: int) -> str:
        return f"{m // 100}.{m % 100:02d}"

    def bal(code: str, m: int, day: str) -> str:
        return (f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"EUR\">{amt(m)}</Amt>"
                f"<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>")

    entries = [
        f"<Ntry><NtryRef>{i}</NtryRef><Amt Ccy=\"EUR\">{amt(a)}</Amt><CdtDbtInd>{'CRDT' if c else 'DBIT'}</CdtDbtInd>"
        f"<Sts>BOOK</Sts><BookgDt><Dt>2026-11-20</Dt></BookgDt><ValDt><Dt>2026-11-20</Dt></ValDt>"
        f"<AcctSvcrRef>B{i:010d}</AcctSvcrRef><NtryDtls><TxDtls><Refs><EndToEndId>BENCH-{i:08d}</EndToEndId></Refs>"
        f"<RltdPties><Dbtr><Nm>Customer {i % 997}</Nm></Dbtr></RltdPties>"
        f"<RmtInf><Ustrd>Order BENCH-{i:08d}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"
        for i, (a, c) in enumerate(zip(amounts, credit))]
    doc = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt>"
           "<GrpHdr><MsgId>BENCH</MsgId><CreDtTm>2026-11-21T06:00:00</CreDtTm></GrpHdr>"
           "<Stmt><Id>BENCH-1</Id><CreDtTm>2026-11-21T06:00:00</CreDtTm>"
           "<Acct><Id><IBAN>NL12ABCD3456789012</IBAN></Id><Ccy>EUR</Ccy></Acct>"
           + bal("OPBD", opening, "2026-11-19") + bal("CLBD", closing, "2026-11-20")
           + f"<TxsSummry><TtlNtries><NbOfNtries>{n}</NbOfNtries></TtlNtries>"
           f"<TtlCdtNtries><NbOfNtries>{sum(credit)}</NbOfNtries><Sum>{amt(total_c)}</Sum></TtlCdtNtries>"
           f"<TtlDbtNtries><NbOfNtries>{n - sum(credit)}</NbOfNtries><Sum>{amt(total_d)}</Sum></TtlDbtNtries></TxsSummry>"
           + "\n".join(entries) + "</Stmt></BkToCstmrStmt></Document>\n")
    path.write_text(doc, encoding="utf-8")


def gen_stripe(n: int, path: Path) -> None:
    """balance_change_from_activity.itemized: charges with fees, some refunds, as Stripe's CSV has them."""
    rng = np.random.default_rng(SEED + 4)
    gross = rng.integers(500, 50_000, n)
    refund = rng.random(n) < 0.05
    gross = np.where(refund, -gross, gross)
    fee = np.where(refund, 0, 30 + gross * 29 // 1000)
    g, f, net, times = _yuan(gross), _yuan(fee), _yuan(gross - fee), _times(rng, n)
    rows = [f"txn_{i:016d},{t},usd,{'Refund' if r else 'Payment'},{fe},{gr},{ne},pi_{i:016d},ch_{i:016d},"
            f"{'refund' if r else 'charge'},BENCH-{i:08d},customer{i % 997}@example.com"
            for i, (r, t, gr, fe, ne) in enumerate(zip(refund.tolist(), times, g, f, net))]
    header = ("balance_transaction_id,created_utc,currency,description,fee,gross,net,payment_intent_id,charge_id,"
              "reporting_category,payment_metadata[order_id],customer_email")
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


GENERATED = {
    "alipay": ("Alipay trade bill (zip, GBK)", "alipay_{n}.csv.zip", gen_alipay),
    "wechatpay_fundflow": ("WeChat Pay fund-flow bill", "wechatpay_fundflow_{n}.csv", gen_fundflow),
    "mt940": ("MT940", "mt940_{n}.sta", gen_mt940),
    "camt": ("camt.053 (v02)", "camt053_{n}.xml", gen_camt),
    "stripe": ("Stripe itemized balance report", "stripe_{n}.csv", gen_stripe),
}
TITLES = {"orders": "orders export (CSV)", "wechatpay": "WeChat Pay trade bill (v3 ALL)",
          **{k: v[0] for k, v in GENERATED.items()}}


def files_for(kinds: list[str], n: int) -> dict[str, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if {"orders", "wechatpay"} & set(kinds):
        out.update({k: v for k, v in gen_day_files(n).items() if k in kinds})
    for kind in kinds:
        if kind in GENERATED:
            _title, pattern, gen = GENERATED[kind]
            path = OUT / pattern.format(n=n)
            if not path.exists():
                partial = path.with_name(path.name + ".part")
                gen(n, partial)
                partial.rename(path)
            out[kind] = path
    return out


def measure(kind: str, path: Path, repeat: int) -> tuple[int, float, float]:
    """(rows, wall s, CPU s of the best run) for read + identify + parse with the source of `kind`."""
    source = dict((c.kind, s) for c, s in configured_sources(MERCHANT))[kind]
    best, cpu, rows = float("inf"), 0.0, 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        file = InputFile.read(path)
        if not source.identify(file):
            raise SystemExit(f"{path}: the {kind} source does not recognise the generated file")
        rows = source.parse(file).row_count
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return rows, best, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows per generated file (default 200000)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per format; the best counts (default 1)")
    ap.add_argument("--only", nargs="*", choices=KINDS, help="only these source kinds")
    args = ap.parse_args(argv)
    kinds = list(args.only or KINDS)
    files = files_for(kinds, args.rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"read + identify + parse, {os.cpu_count()} cores, load average {load} (on a busy machine compare cpu s)")
    print(f"{'format':34} {'rows':>9} {'MB':>7} {'wall s':>7} {'cpu s':>7} {'rows/s':>10}")
    for kind in kinds:
        rows, seconds, cpu = measure(kind, files[kind], args.repeat)
        size = files[kind].stat().st_size / 1e6
        print(f"{TITLES[kind]:34} {rows:>9,} {size:>7.1f} {seconds:>7.2f} {cpu:>7.2f} {rows / seconds:>10,.0f}",
              flush=True)
    print("not generated: UnionPay ACP, OFX, camt.054, PayPal, Adyen (see the docstring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

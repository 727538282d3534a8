"""Synthetic business day for the benchmark: N orders of one merchant, paid by WeChat Pay.

    python bench/gen_day.py 1000000          # -> bench/out/day-1000000-s20261120-v4/

Writes, for 2026-11-20 (Asia/Shanghai):
- orders.csv: the shop's export, canonical header
  `order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id`, UTF-8, LF.
- wechatpay_tradebill_ALL_2026-11-20.csv: the WeChat Pay v3 ALL trade bill, exactly as
  examples/make_demo.py writes it (UTF-8 with BOM, CRLF, backtick-prefixed fields, the 27
  column header, the 7-column summary whose totals agree with the rows).
- planted.json: what was planted and the breaks a run must report, by type.

Seeded and vectorised (numpy draws, Arrow string kernels, text written a million rows at
a time), so a million orders take a few seconds and 10M about a minute in under 2 GiB.
Files are cached under bench/out/ keyed by N, seed and GEN_VERSION; `generate()` returns
the cached set when it is complete.

Planted (counts scale with N, each at least 1 for N >= 10_000; sets are disjoint):
  short            paid in our books, absent from the bill                N / 1000
  amount_mismatch  the bill's 订单金额 differs from our amount             N / 1000
  long             the bill collected an order our books do not have      N / 2000
  duplicate_charge the bill has a second SUCCESS payment of an order      N / 5000
  status_mismatch  REFUND on the bill our books do not show               N / 2000
                   + our books say unpaid (no txn id), the bill collected N / 5000
Amounts of the "short" orders end in .87 and of the "long" payments in .37, which nothing else
has, so the engine's fuzzy pass (same amount, close in time) finds no candidate for them and
turns none into a suggested match. And, producing no break: full refunds on both sides (N / 100), partial refunds on both
sides (N / 200), WeChat coupons (应结 < 订单金额, N / 100), unpaid orders absent from the
bill (N / 200).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OUT = Path(__file__).resolve().parent / "out"
GEN_VERSION = 4
CHUNK = 1_000_000  # rows turned into text at a time (see _chunks)
DAY = "2026-11-20"
DAY_COMPACT = "20261120"
SEED = 20261120
WECHAT_MCH = "1900000109"
WECHAT_APPID = "wx8888888888888888"

# Same text as examples/make_demo.py (WX_HEADER, WX_SUMMARY); kept literal so the bench
# does not import the examples package.
WX_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
             "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
             "手续费,费率,订单金额,申请退款金额,费率备注")
WX_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
ORDERS_HEADER = "order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id"
GOODS = ["拿铁 Latte", "美式 Americano", "燕麦拿铁 Oat latte", "手冲 Pour-over", "可颂 Croissant", "冷萃 Cold brew"]


@dataclass(frozen=True)
class DayFiles:
    n: int
    folder: Path
    orders: Path
    bill: Path
    planted: dict

    @property
    def orders_rows(self) -> int:
        return self.planted["orders_rows"]

    @property
    def bill_rows(self) -> int:
        return self.planted["bill_rows"]

    @property
    def expected_breaks(self) -> dict[str, int]:
        return self.planted["expected_breaks"]


def folder_for(n: int, seed: int = SEED) -> Path:
    return OUT / f"day-{n}-s{seed}-v{GEN_VERSION}"


def generate(n: int, seed: int = SEED, force: bool = False) -> DayFiles:
    """The day's files for `n` orders, from the cache when already generated."""
    folder = folder_for(n, seed)
    orders, bill, marker = folder / "orders.csv", folder / f"wechatpay_tradebill_ALL_{DAY}.csv", folder / "planted.json"
    if not force and marker.exists() and orders.exists() and bill.exists():
        return DayFiles(n, folder, orders, bill, json.loads(marker.read_text()))
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    planted = _write_day(n, seed, orders, bill)
    marker.write_text(json.dumps(planted, indent=2, ensure_ascii=False) + "\n")  # written last: marks completeness
    return DayFiles(n, folder, orders, bill, planted)


# -- Arrow string helpers (no per-row Python) -------------------------------------------

def _s(values) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _const(text: str, n: int) -> pa.Array:
    return pa.array([text], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64)))


def _pad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(_s(values), width=width, padding="0")


def _join(*cols, sep: str = "") -> pa.Array:
    """Element-wise concatenation with `sep`; str items are constants (adjacent ones merged, broadcast as scalars)."""
    parts: list = []
    for c in cols:
        if isinstance(c, str) and parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1] + sep + c
        else:
            parts.append(c)
    return pc.binary_join_element_wise(*[pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts], sep)


_FRAC: dict[int, pa.Array] = {}


def _frac_lut(decimals: int) -> pa.Array:
    """'.00' .. '.99' (or 5 decimals): taken by index instead of padding per row."""
    if decimals not in _FRAC:
        _FRAC[decimals] = pa.array([f".{i:0{decimals}d}" for i in range(10**decimals)], pa.string())
    return _FRAC[decimals]


def _money(minor: np.ndarray, decimals: int = 2) -> pa.Array:
    """Signed integers in 10^-decimals units -> '12.50', '-0.00060'."""
    scale = 10**decimals
    absv = np.abs(minor)
    text = _join(_s(absv // scale), _frac_lut(decimals).take(pa.array(absv % scale)))
    negative = minor < 0
    if not negative.any():
        return text
    return _join(pc.if_else(pa.array(negative), "-", ""), text)


_CLOCK: dict[str, pa.Array] = {}


def _times(seconds: np.ndarray, fmt: str = "{day} {hms}") -> pa.Array:
    """Seconds after local midnight of DAY -> 'YYYY-MM-DD HH:MM:SS' (naive local time), via a 86400-entry table."""
    if fmt not in _CLOCK:
        _CLOCK[fmt] = pa.array([fmt.format(day=DAY, hms=f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}")
                                for s in range(86400)], pa.string())
    if len(seconds) and (seconds.min() < 0 or seconds.max() >= 86400):
        raise ValueError("a time falls outside the day")
    return _CLOCK[fmt].take(pa.array(seconds))


def _write_lines(fh, lines: pa.Array) -> None:
    """Append the lines' concatenation (they carry their own terminators): no per-row Python."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if not len(lines):
        return
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=width, count=len(lines) + 1, offset=lines.offset * width().itemsize)
    fh.write(memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])])


def _chunks(n: int):
    """Row ranges turned into text one at a time: the text of 10M bill rows (2.5 GB) never
    sits in memory at once, and each chunk's string buffer stays under Arrow's 2 GiB offsets."""
    for lo in range(0, n, CHUNK):
        yield lo, min(n, lo + CHUNK)


# -- the day ----------------------------------------------------------------------------

def _count(n: int, per: int) -> int:
    return max(1, n // per) if n >= 10_000 else max(0, n // per)


# Bill row groups: what the channel writes for each; a row is (group, index), its text is
# built from those only when its chunk is written.
PAY, DUP, LONG, REFUND = 0, 1, 2, 3
TXN_PREFIX = pa.array(["4200001" + DAY_COMPACT, "4200002" + DAY_COMPACT, "4200003" + DAY_COMPACT, "4200001" + DAY_COMPACT])
OID_PREFIX = pa.array(["B", "B", "BX", "B"])
STATE = pa.array(["SUCCESS", "SUCCESS", "SUCCESS", "REFUND"])
REFUND_TYPE = pa.array(["", "", "", "ORIGINAL"])
REFUND_STATUS = pa.array(["", "", "", "SUCCESS"])
LONG_USERS = 90_000_000  # user ids of the payers our books never saw: above any order index


def _write_day(n: int, seed: int, orders_path: Path, bill_path: Path) -> dict:
    rng = np.random.default_rng(seed)
    k = {
        "short": _count(n, 1000), "amount_mismatch": _count(n, 1000), "long": _count(n, 2000),
        "duplicate_charge": _count(n, 5000), "refund_channel_only": _count(n, 2000), "unpaid_collected": _count(n, 5000),
        "refund_full": _count(n, 100), "refund_partial": _count(n, 200), "coupon": _count(n, 100),
        "unpaid_absent": _count(n, 200),
    }

    # Orders in paid-time order: 07:00:00 .. 22:59:59 local, so refunds (+5..60 min) stay on the day.
    paid_s = np.sort(rng.integers(7 * 3600, 23 * 3600, size=n, dtype=np.int64))
    amount = rng.integers(1, 400, size=n, dtype=np.int64) * 50 + rng.choice(np.array([0, 0, 0, 0, 10, 80]), size=n)
    goods = rng.integers(0, len(GOODS), size=n)

    # Disjoint planted sets from one permutation.
    perm = rng.permutation(n)
    sets, at = {}, 0
    for name in ("short", "amount_mismatch", "duplicate_charge", "refund_channel_only", "unpaid_collected",
                 "refund_full", "refund_partial", "coupon", "unpaid_absent"):
        sets[name] = np.sort(perm[at:at + k[name]])
        at += k[name]
    if at > n:
        raise ValueError(f"N={n} is too small for the planted differences")
    del perm

    # shorts end in .87 and longs in .37, amounts no other payment has: the engine's fuzzy pass
    # (same amount, close in time) must find no candidate for them, or they become suggested matches
    amount[sets["short"]] = amount[sets["short"]] // 100 * 100 + 87
    status = np.zeros(n, dtype=np.int8)  # 0 paid, 1 refunded, 2 partially_refunded, 3 unpaid
    refund = np.zeros(n, dtype=np.int64)
    status[sets["refund_full"]] = 1
    refund[sets["refund_full"]] = amount[sets["refund_full"]]
    part = sets["refund_partial"]
    status[part] = 2
    refund[part] = np.maximum(1, (amount[part] // 3) // 10 * 10)
    status[sets["unpaid_collected"]] = 3
    status[sets["unpaid_absent"]] = 3
    refund_s = paid_s + rng.integers(300, 3600, size=n, dtype=np.int64)
    no_txn = np.zeros(n, dtype=bool)
    no_txn[sets["unpaid_collected"]] = True
    no_txn[sets["unpaid_absent"]] = True

    # -- orders.csv -----------------------------------------------------------------------
    status_words = pa.array(["paid", "refunded", "partially_refunded", "unpaid"])
    with open(orders_path, "wb") as fh:
        fh.write((ORDERS_HEADER + "\n").encode("utf-8"))
        for lo, hi in _chunks(n):
            i = np.arange(lo, hi, dtype=np.int64)
            books_txn = pc.if_else(pa.array(no_txn[lo:hi]), "", _join("4200001" + DAY_COMPACT, _pad(i, 13)))
            # the last "column" is the line terminator: the separator before it is dropped by joining it with ""
            _write_lines(fh, _join(_join(
                _join("B", _pad(i, 8)), "wechatpay", _money(amount[lo:hi]), "CNY",
                status_words.take(pa.array(status[lo:hi])), _times(paid_s[lo:hi], "{day}T{hms}+08:00"),
                _money(refund[lo:hi]), books_txn, sep=","), "\n"))

    # -- the bill: which rows, in numbers -------------------------------------------------
    on_channel = np.ones(n, dtype=bool)
    on_channel[sets["short"]] = False
    on_channel[sets["unpaid_absent"]] = False
    pay = np.flatnonzero(on_channel)
    gross = amount.copy()
    gross[sets["amount_mismatch"]] += np.where(rng.random(k["amount_mismatch"]) < 0.5, -100, 100)
    gross = np.maximum(gross, 1)
    coupon = np.zeros(n, dtype=np.int64)
    coupon[sets["coupon"]] = np.minimum(500, gross[sets["coupon"]] // 2)

    rows: list[dict[str, np.ndarray]] = []  # one dict of column arrays per row group, concatenated below

    def group(g, t_s, i, user, settle, coup, refunded, goods_i, fee5, gross_amt, applied):
        rows.append(dict(g=np.full(len(t_s), g, dtype=np.int8), t=t_s, i=i, user=user, settle=settle, coupon=coup,
                         refunded=refunded, goods=goods_i, fee5=fee5, gross=gross_amt, applied=applied))

    zeros = lambda m: np.zeros(m, dtype=np.int64)  # noqa: E731
    settle = gross[pay] - coupon[pay]
    group(PAY, paid_s[pay], pay, pay, settle, coupon[pay], zeros(len(pay)), goods[pay], settle * 6, gross[pay],
          zeros(len(pay)))
    del settle

    # a second charge of the same order, 41 s later, with its own transaction id
    dup = sets["duplicate_charge"]
    group(DUP, paid_s[dup] + 41, dup, dup, gross[dup], zeros(len(dup)), zeros(len(dup)), goods[dup], gross[dup] * 6,
          gross[dup], zeros(len(dup)))

    # payments our books never saw
    nl = k["long"]
    long_i = np.arange(nl, dtype=np.int64)
    long_s = rng.integers(7 * 3600, 23 * 3600, size=nl, dtype=np.int64)
    long_amt = rng.integers(1, 200, size=nl, dtype=np.int64) * 100 + 37
    group(LONG, long_s, long_i, long_i + LONG_USERS, long_amt, zeros(nl), zeros(nl), long_i % len(GOODS), long_amt * 6,
          long_amt, zeros(nl))

    # refunds on the bill: the ones our books agree with, and the ones they do not show
    ref = np.sort(np.concatenate([sets["refund_full"], sets["refund_partial"], sets["refund_channel_only"]]))
    ref_amt = np.where(refund[ref] > 0, refund[ref], amount[ref])
    ref_amt = np.where(np.isin(ref, sets["refund_channel_only"]), np.maximum(1, amount[ref] // 2), ref_amt)
    m = len(ref)
    group(REFUND, refund_s[ref], ref, ref, zeros(m), zeros(m), ref_amt, goods[ref], -ref_amt * 6, zeros(m), ref_amt)
    del paid_s, amount, goods, status, refund, refund_s, no_txn, on_channel, pay, gross, coupon

    order = np.argsort(np.concatenate([g["t"] for g in rows]), kind="stable")
    total = len(order)
    sel = {key: np.concatenate([g[key] for g in rows])[order] for key in rows[0]}
    rows.clear()  # the groups live on in `sel` only
    del order

    # -- the bill: text, a chunk of rows at a time ------------------------------------------
    with open(bill_path, "wb") as fh:
        fh.write(("\ufeff" + WX_HEADER + "\r\n").encode("utf-8"))
        for lo, hi in _chunks(total):
            c = {key: v[lo:hi] for key, v in sel.items()}
            g = pa.array(c["g"])
            oid = _join(OID_PREFIX.take(g), _pad(c["i"], 8))
            is_refund = pa.array(c["g"] == REFUND)
            fields = [
                _times(c["t"], "`{day} {hms}"), WECHAT_APPID, WECHAT_MCH, "0", "",
                _join(TXN_PREFIX.take(g), _pad(c["i"], 13)), oid, _join("oUpF8uMuAJO_M2pxb1Q9z", _pad(c["user"], 8)),
                "JSAPI", STATE.take(g), "OTHERS",
                "CNY", _money(c["settle"]), _money(c["coupon"]),
                pc.if_else(is_refund, _join("5030000" + DAY_COMPACT, _pad(c["i"], 14)), "0"),
                pc.if_else(is_refund, _join("RF", oid), "0"),
                _money(c["refunded"]), "0.00", REFUND_TYPE.take(g), REFUND_STATUS.take(g),
                pa.array(GOODS).take(pa.array(c["goods"])), "", _money(c["fee5"], 5), "0.60%",
                _money(c["gross"]), _money(c["applied"]),
                "\r\n",  # 费率备注 is empty: the separator gives its backtick, then the line ends
            ]
            _write_lines(fh, _join(*fields, sep=",`"))
        sums = [str(total), _fmt(sel["settle"].sum(), 2), _fmt(sel["refunded"].sum(), 2), "0.00",
                _fmt(sel["fee5"].sum(), 5), _fmt(sel["gross"].sum(), 2), _fmt(sel["applied"].sum(), 2)]
        fh.write((WX_SUMMARY + "\r\n" + ",".join("`" + v for v in sums) + "\r\n").encode("utf-8"))

    expected = {
        "short": k["short"],
        "long": k["long"],
        "amount_mismatch": k["amount_mismatch"],
        "status_mismatch": k["refund_channel_only"] + k["unpaid_collected"],
        "duplicate_charge": k["duplicate_charge"],
    }
    return {
        "n": n, "seed": seed, "day": DAY, "generator_version": GEN_VERSION,
        "orders_rows": n, "bill_rows": total,
        "planted": {name: int(v) for name, v in k.items()},
        "expected_breaks": expected,
        "examples": {name: [f"B{int(i):08d}" for i in s[:3]] for name, s in sets.items()},
    }


def _fmt(minor: int, decimals: int) -> str:
    minor = int(minor)
    sign = "-" if minor < 0 else ""
    q, r = divmod(abs(minor), 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"


def main(argv: list[str]) -> None:
    sizes = [int(a.replace("_", "")) for a in argv if not a.startswith("-")] or [100_000]
    for n in sizes:
        t0 = time.perf_counter()
        files = generate(n, force="--force" in argv)
        took = time.perf_counter() - t0
        mib = (files.orders.stat().st_size + files.bill.stat().st_size) / 2**20
        print(f"N={n}: {files.folder} ({files.orders_rows} orders, {files.bill_rows} bill rows, {mib:.0f} MiB) in {took:.2f}s")
        print(f"  expected breaks: {files.expected_breaks}")


if __name__ == "__main__":
    main(sys.argv[1:])

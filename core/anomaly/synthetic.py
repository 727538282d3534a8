"""SYNTHETIC payment traffic, for the benchmark, the tests and the demo's history only.

Nothing here is real data: a merchant's channel payments with a daily cycle (coffee-shop
rush hours, quiet nights), a weekly cycle (busier weekends), a pool of payers each with a
habitual amount, refunds of some payments, fees at the rate card; plus the injected
patterns the model must find (`inject`). Seeded and vectorised (numpy), so a million rows
take about a second. Rows follow `core.sources.base.RECORD_FIELDS` and are written with
`core.store.write_statement` like any statement file (`write`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.sources.base import RECORD_FIELDS

# Share of a day's payments per local hour: morning and lunch peaks, quiet after midnight.
HOUR_WEIGHTS = np.array([0.3, 0.15, 0.08, 0.05, 0.05, 0.2, 1.5, 4.5, 8.0, 7.0, 5.5, 6.5,
                         8.5, 7.5, 5.0, 5.0, 5.5, 6.5, 7.0, 5.5, 4.0, 3.0, 1.8, 0.8])
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
WEEKDAY_VOLUME = np.array([0.9, 0.92, 0.95, 1.0, 1.1, 1.3, 1.25])  # Monday .. Sunday


@dataclass(frozen=True)
class SyntheticMerchant:
    id: str
    per_day: int = 2000  # payments on an average weekday
    payers: int = 0  # 0: ten times the daily payments
    median_minor: int = 3800  # the merchant's median payment (fen)
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    sources: tuple[tuple[str, float], ...] = (("wechatpay", 0.6), ("alipay", 0.4))
    fee_rate: float = 0.006
    refund_rate: float = 0.015


def _utc(day: date, local_seconds: np.ndarray, tz: str) -> np.ndarray:
    """Local seconds after midnight of `day` -> UTC datetime64[us] (one offset per day)."""
    offset = datetime.combine(day, datetime.min.time(), ZoneInfo(tz)).utcoffset()
    midnight = np.datetime64(datetime.combine(day, datetime.min.time()) - offset, "us")
    return midnight + (local_seconds * 1_000_000).astype("timedelta64[us]")


def _table(cols: dict) -> pa.Table:
    n = len(cols["amount"])
    full = {}
    for f in RECORD_FIELDS:
        v = cols.get(f.name)
        full[f.name] = pa.nulls(n, f.type) if v is None else pa.array(v, f.type)
    return pa.table(full, schema=RECORD_FIELDS)


def _payers(m: SyntheticMerchant, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """-> (the merchant's generator, each payer's weight, each payer's habitual amount)."""
    rng = np.random.default_rng([seed, int(hashlib.sha1(m.id.encode()).hexdigest()[:8], 16)])
    payers = m.payers or 10 * m.per_day
    # regulars and passers-by: the busiest payer comes about twice a day
    payer_weight = 1.0 / (np.arange(payers) + m.per_day / 10)
    payer_weight /= payer_weight.sum()
    return rng, payer_weight, m.median_minor * rng.lognormal(0, 0.45, payers)


def _day(m: SyntheticMerchant, day: date, rng: np.random.Generator, payer_weight: np.ndarray,
         payer_habit: np.ndarray) -> tuple:
    n = rng.poisson(m.per_day * WEEKDAY_VOLUME[day.weekday()])
    hour = rng.choice(24, n, p=HOUR_WEIGHTS)
    secs = np.sort(hour * 3600 + rng.uniform(0, 3600, n))
    payer = rng.choice(len(payer_weight), n, p=payer_weight)
    amount = np.maximum(500, np.round(payer_habit[payer] * rng.lognormal(0, 0.2, n) / 50) * 50).astype(np.int64)
    return day, secs, payer, amount, rng.choice(len(m.sources), n, p=[s[1] for s in m.sources])


def normal_traffic(m: SyntheticMerchant, first: date, days: int, seed: int = 1) -> pa.Table:
    """`days` days of ordinary payments and refunds from `first` on."""
    rng, weight, habit = _payers(m, seed)
    return _assemble(m, [_day(m, first + timedelta(days=d), rng, weight, habit) for d in range(days)], rng)


def normal_day(m: SyntheticMerchant, day: date, seed: int = 1) -> pa.Table:
    """One day of ordinary traffic from the same payers, with the same habits, as
    `normal_traffic(m, ..., seed)`, drawn from the day's own generator: days can be made one
    at a time (memory stays that of one day) and still be one merchant's."""
    _rng, weight, habit = _payers(m, seed)
    rng = np.random.default_rng([seed, day.toordinal(), int(hashlib.sha1(m.id.encode()).hexdigest()[:8], 16)])
    return _assemble(m, [_day(m, day, rng, weight, habit)], rng)


def _assemble(m: SyntheticMerchant, parts, rng) -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ("source", "kind", "ref", "txn_id", "order_id", "amount", "fee",
                                            "occurred_at", "business_day", "payer")}
    for day, secs, payer, amount, src in parts:
        n = len(secs)
        stamp = day.strftime("%Y%m%d")
        orders = np.char.add(f"{m.id}-{stamp}-", np.arange(n).astype(str))
        fee = np.round(amount * m.fee_rate).astype(np.int64)
        ts = _utc(day, secs, m.timezone)
        names = np.array([s[0] for s in m.sources])[src]
        payers = np.char.add("payer-", payer.astype(str))
        cols["source"].append(names)
        cols["kind"].append(np.full(n, "payment"))
        cols["ref"].append(np.char.add("T", orders))
        cols["txn_id"].append(np.char.add("T", orders))
        cols["order_id"].append(orders)
        cols["amount"].append(amount)
        cols["fee"].append(fee)
        cols["occurred_at"].append(ts)
        cols["business_day"].append(np.full(n, np.datetime64(day, "D")))
        cols["payer"].append(payers)
        # refunds of some payments, later the same day (those that would pass midnight are not made)
        later_all = rng.uniform(300, 4 * 3600, n)
        r = (rng.random(n) < m.refund_rate) & (secs + later_all < 86400)
        later = later_all[r]
        cols["source"].append(names[r])
        cols["kind"].append(np.full(r.sum(), "refund"))
        cols["ref"].append(np.char.add("R", orders[r]))
        cols["txn_id"].append(np.char.add("T", orders[r]))
        cols["order_id"].append(orders[r])
        cols["amount"].append(-amount[r])
        cols["fee"].append(-fee[r])
        cols["occurred_at"].append(ts[r] + (later * 1_000_000).astype("timedelta64[us]"))
        cols["business_day"].append(np.full(r.sum(), np.datetime64(day, "D")))
        cols["payer"].append(payers[r])
    out = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(out["amount"])
    out["currency"] = np.full(n, m.currency)
    out["discount"] = np.zeros(n, np.int64)
    out["status"] = np.full(n, "success")
    out["line"] = np.arange(2, n + 2)
    return _table(out)


def orders_for(records: pa.Table, seed: int = 1) -> pa.Table:
    """Our own order records (the internal side) for the channel payments in `records`: one
    per order id, placed a few seconds to minutes before the channel's payment (the time a
    customer takes to pay), on the same business day."""
    pays = records.filter(pc.equal(records["kind"], "payment"))
    _, first = np.unique(pays["order_id"].to_numpy(zero_copy_only=False), return_index=True)
    pays = pays.take(np.sort(first))
    rng = np.random.default_rng(seed)
    delay = (rng.lognormal(np.log(40), 0.8, pays.num_rows) * 1_000_000).astype("timedelta64[us]")
    at = pays["occurred_at"].to_numpy() - delay
    cols = {name: pays[name] for name in ("source", "kind", "order_id", "amount", "currency", "business_day")}
    cols.update(ref=pays["order_id"], occurred_at=at, fee=np.zeros(pays.num_rows, np.int64),
                discount=np.zeros(pays.num_rows, np.int64), status=np.full(pays.num_rows, "paid"),
                line=np.arange(2, pays.num_rows + 2))
    return _table({k: v.to_numpy(zero_copy_only=False) if isinstance(v, pa.ChunkedArray) else v
                   for k, v in cols.items()})


def regular(m: SyntheticMerchant, payer: str, source: str, amount_minor: int, first: date, days: int,
            every: int = 3, hour: float = 8.5) -> pa.Table:
    """One named payer's habit: the same small amount every few days, in the morning."""
    n = len(range(0, days, every))
    cols = {"source": [source] * n, "kind": ["payment"] * n, "amount": [amount_minor] * n,
            "fee": [round(amount_minor * m.fee_rate)] * n, "payer": [payer] * n, "currency": [m.currency] * n,
            "discount": [0] * n, "status": ["success"] * n, "line": list(range(2, n + 2))}
    days_ = [first + timedelta(days=d) for d in range(0, days, every)]
    cols["business_day"] = days_
    cols["occurred_at"] = [_local(m, d, hour * 3600 + 60 * i) for i, d in enumerate(days_)]
    cols["ref"] = cols["txn_id"] = cols["order_id"] = [f"regular-{payer[-6:]}-{d:%Y%m%d}" for d in days_]
    return _table(cols)


# -- injected patterns ------------------------------------------------------------------

PATTERNS = ("card_testing", "refund_spike", "duplicate_charge", "odd_hour_large", "fee_drift", "payer_20x")


def inject(m: SyntheticMerchant, normal: pa.Table, day: date, pattern: str, seed: int) -> pa.Table:
    """Rows of one injected `pattern` on `day`, built from that merchant's normal rows."""
    rng = np.random.default_rng([seed, PATTERNS.index(pattern), day.toordinal(),
                                 int(hashlib.sha1(m.id.encode()).hexdigest()[:8], 16)])
    rows = normal.filter(pc.equal(normal["business_day"], pa.scalar(day, pa.date32()))).to_pydict()
    pays = [i for i, k in enumerate(rows["kind"]) if k == "payment"]
    tag = f"{pattern}-{day:%Y%m%d}-{seed}"
    src0 = m.sources[0][0]
    out: list[dict] = []

    def add(i: int, **kw):
        base = ({k: rows[k][i] for k in rows} if i is not None
                else {"currency": m.currency, "status": "success", "discount": 0})
        out.append({**base, "line": 1_000_000 + len(out), **kw})

    if pattern == "card_testing":  # one new card, many tiny payments in a few minutes
        start = _local(m, day, rng.uniform(9, 21) * 3600)
        for j in range(int(rng.integers(10, 16))):
            ref = f"{tag}-{j}"
            add(None, source=src0, kind="payment", ref=ref, txn_id=ref, order_id=ref,
                amount=int(rng.integers(1, 200)), fee=0, occurred_at=start + timedelta(seconds=int(rng.uniform(5, 25)) * j),
                business_day=day, payer=f"card-{tag}")
    elif pattern == "refund_spike":  # many refunds of today's payments within a quarter of an hour
        start = _local(m, day, rng.uniform(10, 20) * 3600)
        for j, i in enumerate(rng.choice(pays, int(rng.integers(12, 18)), replace=False)):
            add(int(i), kind="refund", ref=f"R{tag}-{j}", amount=-rows["amount"][i], fee=-rows["fee"][i],
                occurred_at=start + timedelta(seconds=int(rng.uniform(0, 900))))
    elif pattern == "duplicate_charge":  # the same order charged again a minute later
        for j, i in enumerate(rng.choice(pays, 3, replace=False)):
            add(int(i), ref=f"{tag}-{j}", txn_id=f"{tag}-{j}",
                occurred_at=rows["occurred_at"][i] + timedelta(seconds=int(rng.uniform(20, 120))))
    elif pattern == "odd_hour_large":  # a large payment in the dead of night
        for j, i in enumerate(rng.choice(pays, 2, replace=False)):
            amount = int(m.median_minor * rng.uniform(8, 15) // 100 * 100)
            add(int(i), ref=f"{tag}-{j}", txn_id=f"{tag}-{j}", order_id=f"{tag}-{j}", amount=amount,
                fee=round(amount * m.fee_rate), occurred_at=_local(m, day, rng.uniform(2, 4.5) * 3600))
    elif pattern == "fee_drift":  # the channel charges well above its rate card
        for j, i in enumerate(rng.choice(pays, 3, replace=False)):
            amount = rows["amount"][i]
            add(int(i), ref=f"{tag}-{j}", txn_id=f"{tag}-{j}", order_id=f"{tag}-{j}",
                fee=round(amount * (m.fee_rate + rng.uniform(0.006, 0.012))),
                occurred_at=rows["occurred_at"][i] + timedelta(seconds=30))
    elif pattern == "payer_20x":  # a regular payer suddenly paying twenty times the usual
        regulars = [i for i in pays if int(rows["payer"][i].split("-")[1]) < 200]
        for j, i in enumerate(rng.choice(regulars, 2, replace=False)):
            amount = int(rows["amount"][i] * 20)
            add(int(i), ref=f"{tag}-{j}", txn_id=f"{tag}-{j}", order_id=f"{tag}-{j}", amount=amount,
                fee=round(amount * m.fee_rate), occurred_at=rows["occurred_at"][i] + timedelta(seconds=45))
    else:
        raise ValueError(f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})")
    return pa.Table.from_pylist(out, schema=RECORD_FIELDS)


def _local(m: SyntheticMerchant, day: date, seconds: float) -> datetime:
    """Local time `seconds` after midnight of `day`, as naive UTC."""
    local = datetime.combine(day, datetime.min.time(), ZoneInfo(m.timezone)) + timedelta(seconds=seconds)
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


# -- into the record store --------------------------------------------------------------

def write(url: str, m: SyntheticMerchant, records: pa.Table, label: str, side: str = "channel") -> None:
    """Store `records` as one synthetic statement per (source, business day), on `side`."""
    from core import store
    from core.config import MerchantConfig

    if not store.find_ledgers(url, m.id):  # a real merchant (the demo's) keeps its own name
        store.ensure_merchant(url, MerchantConfig(id=m.id, name=f"{m.id} (synthetic)", timezone=m.timezone,
                                                  currency=m.currency))
    sources = sorted(pc.unique(records["source"]).to_pylist())
    ledgers = store.ledger_ids(url, m.id, {(s, side) for s in sources})
    for s in sources:
        mine = records.filter(pc.equal(records["source"], s))
        for day in sorted(pc.unique(mine["business_day"]).to_pylist()):
            part = mine.filter(pc.equal(mine["business_day"], pa.scalar(day, pa.date32())))
            part = part.append_column("ledger_id", pa.array([ledgers[(s, side)]] * part.num_rows, pa.int64()))
            name = f"{m.id}/{s}/{day}" if side == "channel" else f"{m.id}/{side}/{s}/{day}"
            sha = hashlib.sha256(f"{name.replace('/', '|')}|{label}|{part.num_rows}".encode()).hexdigest()
            store.write_statement(url, merchant_id=m.id, source=s, side=side, fmt="synthetic",
                                  path=f"synthetic:{label}/{name}", sha256=sha, business_day=day,
                                  control_totals={}, records=part)

"""Real-time checks: a payment notification is recorded, and a large one is checked at once.

The HTTP side (signatures, parsing) is bot/payments.py; this is what a verified
notification does, free of any chat platform.

- **Recorded** as one statement of its own (`core.store.write_few`): identity
  "notice/<source>/<event id>", so a redelivered notification changes nothing. Its record
  goes into the source's `notified` ledger, not the `channel` ledger the statements fill:
  a notification is not the channel's statement. The day's statement stays what the day is
  reconciled against (a payment is never counted twice, once notified and once stated), and
  a notification never makes a day's statement count as arrived.
- **Checked at once** when its amount is at or above `tolerance.large_transaction` (in the
  merchant's currency; another currency is converted with `fx.rates`, and checked when no
  rate is known): against our order (found by the channel's transaction id, else our order
  id, in the internal ledger of that source), amount within `tolerance`, currency, status.
  What does not add up becomes an urgent break (rule `realtime`, key
  "realtime:<source>:<type>:<kind>:<ref>"), which the caller alerts. A notification about an
  order our books cannot know yet (the orders statement does not reach its day) is
  recorded and not judged. A later notification of the same transaction that agrees
  clears an open real-time break of it. Runs leave real-time breaks alone (core/runs.py):
  a person resolves them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlmodel import Session

from core import store
from core.completeness import INTERNAL_KINDS
from core.config import Config, MerchantConfig
from core.money import display, to_major, to_minor
from models.db import get_engine
from models.tables import AuditEvent, Break, Ledger, ReconRun, Record, StatementFile

NOTIFIED = "notified"  # the ledger side of notification records
RULE = "realtime"
PAID = ("paid", "refunded", "partially_refunded")  # our order statuses that mean "the money came"


@dataclass(frozen=True)
class Notice:
    """One payment notification, as the channel stated it."""

    source: str  # a configured source of the merchant
    event_id: str  # the notification's own id: its redelivery changes nothing
    format: str  # "stripe.webhook" | "payments.webhook"
    kind: str  # payment | refund
    ref: str  # the transaction's identity in the notified ledger
    txn_id: str | None
    order_id: str | None
    amount: int  # signed minor units: a refund is negative
    currency: str
    status: str  # success | authorized | failed | ...
    occurred_at: datetime  # aware
    payer: str | None = None
    memo: str | None = None


@dataclass(frozen=True)
class Checked:
    recorded: bool  # False: this notification was stored before (a redelivery)
    status: str  # small | agrees | mismatch | not_known_yet
    reason: str
    break_id: int | None = None

    def as_json(self) -> dict:
        return {"recorded": self.recorded, "check": self.status, "reason": self.reason, "break": self.break_id}


def receive(cfg: Config, merchant: MerchantConfig, n: Notice) -> Checked:
    """Record the notification; check it at once when it is large."""
    src = merchant.source(n.source)
    if src is None or src.kind in INTERNAL_KINDS:
        raise ValueError(f"merchant {merchant.id} has no channel source {n.source!r}")
    day = n.occurred_at.astimezone(ZoneInfo(src.timezone)).date()
    store.ensure_merchant(cfg.database.url, merchant)
    stored = store.write_few(
        cfg.database.url, merchant_id=merchant.id, source=n.source, side=NOTIFIED, fmt=n.format, path=label(n),
        sha256=hashlib.sha256(f"notice\0{n.source}\0{n.event_id}".encode()).hexdigest(),
        control_totals={"event": n.event_id, "amount": n.amount, "currency": n.currency},
        records=[dict(kind=n.kind, ref=n.ref, txn_id=n.txn_id, order_id=n.order_id, amount=n.amount,
                      currency=n.currency, fee=0, discount=0, status=n.status,
                      occurred_at=n.occurred_at.astimezone(timezone.utc), business_day=day, payer=n.payer,
                      memo=n.memo)])
    recorded = not stored.already_ingested
    if not is_large(cfg, merchant, n):
        return Checked(recorded, "small", "below tolerance.large_transaction: recorded, checked with the day")
    return check(cfg, merchant, n, day, recorded)


def label(n: Notice) -> str:
    return f"{n.format}:{n.source}/{n.event_id}"


def is_large(cfg: Config, merchant: MerchantConfig, n: Notice) -> bool:
    if n.currency == merchant.currency:
        return abs(n.amount) >= to_minor(cfg.tolerance.large_transaction, merchant.currency)
    rate = cfg.fx.rates.get(f"{n.currency}/{merchant.currency}")
    if rate is None:
        return True  # its size in our currency is unknown: check it
    return abs(Decimal(to_major(n.amount, n.currency))) * rate >= cfg.tolerance.large_transaction


def check(cfg: Config, merchant: MerchantConfig, n: Notice, day: date, recorded: bool = True) -> Checked:
    url = cfg.database.url
    ours = _our_record(url, merchant.id, n)
    if ours is None:
        through = _books_through(url, merchant.id)
        if through is None or through < day:
            return Checked(recorded, "not_known_yet", f"no order of ours matches it, and our books reach only "
                                                      f"{through or 'no day yet'}: checked with the day's run")
        finding = _finding(n, None, "long" if n.kind == "payment" else "status_mismatch",
                           f"{_what(n)} {display(n.amount, n.currency)} was notified by {n.source}, "
                           f"but our books (complete through {through}) have no such order.")
        return _store(cfg, merchant, n, day, finding, recorded)
    file_path, line, amount, currency, status = ours
    problem = None
    if currency != n.currency:
        problem = ("amount_mismatch", f"{_what(n)} was notified in {n.currency}, our order is in {currency}.")
    else:
        diff = n.amount - amount
        tol = _tolerance(cfg, abs(amount), currency)
        if abs(diff) > tol:
            problem = ("amount_mismatch", f"{_what(n)} of {display(n.amount, n.currency)} was notified by {n.source}; "
                                          f"our books say {display(amount, currency)} (difference "
                                          f"{display(diff, currency)}).")
        elif n.kind == "payment" and (n.status == "success") != (status in PAID):
            problem = ("status_mismatch", f"{n.source} says the payment is {n.status}; our books say the order "
                                          f"is {status}.")
    if problem is None:
        cleared = _clear(url, merchant.id, n)
        return Checked(recorded, "agrees", "matches our order (amount, currency, status)"
                       + (f"; {cleared} earlier real-time break(s) cleared" if cleared else ""))
    finding = _finding(n, (file_path, line, amount), problem[0], problem[1])
    return _store(cfg, merchant, n, day, finding, recorded)


def _what(n: Notice) -> str:
    ids = " / ".join(x for x in (n.order_id, n.txn_id) if x)
    return f"{'Payment' if n.kind == 'payment' else 'Refund'} {ids}".strip()


def _tolerance(cfg: Config, amount: int, currency: str) -> int:
    absolute = to_minor(cfg.tolerance.absolute, currency)
    return max(absolute, int(Decimal(amount) * cfg.tolerance.percent / 100))


def _our_record(url: str, merchant_id: str, n: Notice):
    """(file, line, amount, currency, status) of our record of this transaction, or None."""
    base = (select(StatementFile.path, Record.line, Record.amount, Record.currency, Record.status)
            .join(Ledger, Ledger.id == Record.ledger_id).join(StatementFile, StatementFile.id == Record.file_id)
            .where(Ledger.merchant_id == merchant_id, Ledger.source == n.source, Ledger.side == "internal",
                   Record.kind == n.kind))
    with Session(get_engine(url)) as s:
        for key, value in ((Record.txn_id, n.txn_id), (Record.ref, n.order_id)):
            if value:
                row = s.execute(base.where(key == value).order_by(Record.id.desc()).limit(1)).first()
                if row is not None:
                    return tuple(row)
    return None


def _books_through(url: str, merchant_id: str) -> date | None:
    """The latest business day our books (internal statements) have been delivered for."""
    with Session(get_engine(url)) as s:
        return s.execute(select(func.max(StatementFile.business_day)).where(
            StatementFile.merchant_id == merchant_id, StatementFile.side == "internal")).scalar()


def _finding(n: Notice, ours, btype: str, explanation: str) -> dict:
    evidence = [{"side": "channel", "file": label(n), "line": 1}]
    internal_amount = None
    if ours is not None:
        evidence.append({"side": "internal", "file": ours[0], "line": ours[1]})
        internal_amount = ours[2]
    return {"type": btype, "internal_amount": internal_amount, "channel_amount": n.amount,
            "difference": n.amount - (internal_amount or 0) if btype != "status_mismatch" else 0,
            "explanation": explanation + " Checked at once: a single transaction at or above the large-"
                                         "transaction threshold.", "evidence": evidence}


def _key(n: Notice, btype: str) -> str:
    return f"{RULE}:{n.source}:{btype}:{n.kind}:{n.ref}"


def _store(cfg: Config, merchant: MerchantConfig, n: Notice, day: date, f: dict, recorded: bool) -> Checked:
    """Insert the break, or refresh it while it is open; one acted on is left as it is."""
    key = _key(n, f["type"])
    now = datetime.now(timezone.utc)
    values = dict(source=n.source, type=f["type"], order_id=n.order_id, txn_id=n.txn_id,
                  internal_amount=f["internal_amount"], channel_amount=f["channel_amount"],
                  difference=f["difference"], currency=n.currency, rule=RULE, tolerance=0, severity="urgent",
                  explanation=f["explanation"], evidence=json.dumps(f["evidence"], ensure_ascii=False))
    with Session(get_engine(cfg.database.url)) as s:
        b = s.execute(select(Break).where(Break.merchant_id == merchant.id, Break.key == key)).scalars().first()
        run = ReconRun(merchant_id=merchant.id, business_day=day, status="realtime", finished_at=now,
                       stats=json.dumps({"notice": label(n), "key": key}, ensure_ascii=False))
        s.add(run)
        s.flush()
        if b is None:
            b = Break(merchant_id=merchant.id, business_day=day, key=key, status="open", first_run_id=run.id,
                      last_run_id=run.id, version=1, created_at=now, updated_at=now, **values)
            s.add(b)
        elif b.status == "open":
            b.revise(values, run.id, now)
        s.commit()
        return Checked(recorded, "mismatch", f["explanation"], b.id)


def _clear(url: str, merchant_id: str, n: Notice) -> int:
    """Open real-time breaks of this transaction are cleared by a notification that agrees."""
    prefix = f"{RULE}:{n.source}:"
    suffix = f":{n.kind}:{n.ref}"
    with Session(get_engine(url)) as s:
        ids = [b.id for b in s.execute(select(Break).where(
            Break.merchant_id == merchant_id, Break.rule == RULE, Break.status == "open",
            Break.key.startswith(prefix), Break.key.endswith(suffix))).scalars()]
        if ids:
            s.execute(update(Break).where(Break.id.in_(ids)).values(
                status="cleared", version=Break.version + 1, updated_at=datetime.now(timezone.utc))
                .execution_options(synchronize_session=False))
            s.execute(insert(AuditEvent), [dict(at=datetime.now(timezone.utc), actor="reconbot", action="cleared",
                                               subject_type="break", subject_id=str(i),
                                               detail=json.dumps({"notice": label(n)}, ensure_ascii=False))
                                          for i in ids])
            s.commit()
        return len(ids)

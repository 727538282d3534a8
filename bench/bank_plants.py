"""Bank transfers for `make accuracy`: orders paid by transfer, and the bank's MT940 statements.

A bank line carries none of our ids in a field of its own (the :61: owner reference is
NONREF, as for most incoming transfers): it is matched by the engine's fuzzy pass (amount
within tolerance, time window, the :86: details scored for our order id and the payer's
name) or, when the details name several orders, by the merged-payment pass. Planted per
day, each with what the engine must make of it:

  memo_id      the details name the order id (four wordings; on half of them the payer is a
               company our books do not know): a confirmed fuzzy match, no break
  payer_only   only the payer's name and a unique amount: confirmed if the engine's score
               reaches `matching.min_score`, else a suggested match (computed from the rules'
               weights below, the way core/engine.py scores a lone candidate)
  same_amount  two orders of the same amount three minutes apart, details with neither id
               nor a name that tells them apart (on odd days both orders are one customer's):
               a suggested match for both, never a confirmed one
  long         money from someone with no order of ours: a `long` break on the bank line
  short        an order our books say was paid by transfer, no money: `short`
  merged       one transfer whose details name two orders that add up: matched, no break
  id_prefix    the details name K-9xxx5 while K-9xxx (its id is a prefix of the named one)
               is open with the same amount and was paid closer to the booking time: only
               the id can tell them apart, so K-9xxx5 is matched and K-9xxx is `short`
  debits       a service charge and a supplier payment (money out): nothing

The statements are written as a bank sends MT940 through SWIFT: blocks 1, 2 and 4, one
statement per day with `:28C:` numbered on, `:60F:` the previous day's closing balance,
`:61:` value and entry date, C/D mark, amount with a decimal comma, NTRF/NCHG, NONREF//bank
reference, `:86:` structured /NAME/ and /REMI/ wrapped at 65 characters, `:62F:` and `:64:`
closing balances that the lines add up to (the parser's control total).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import make_demo as fmt

from core.rules import Rules

SOURCE = "bank"
ACCOUNT = "BKCHCNBJ300/456712345678"
BIC = "BKCHCNBJ"
OPENING = Decimal("1250000.00")
CASES = ["memo_id", "memo_id", "memo_id", "memo_id", "payer_only", "payer_only", "same_amount", "long", "long",
         "short", "merged", "id_prefix"]
CASES_SHOWN = [*dict.fromkeys(CASES), "debits"]  # each case once, in planting order
MEMO_WORDINGS = ["PAYMENT FOR ORDER {id}", "{id}", "PO {id} GOODS NOV 2026 THANK YOU", "REF:{id}/COFFEE BEANS"]
# (the customer as our books know them, as the bank writes the payer)
CUSTOMERS = [("Lianhua Trading", "SHANGHAI LIANHUA TRADING CO LTD"),
             ("Jinjiang Hotels", "JINJIANG HOTELS DEVELOPMENT CO"),
             ("Blue Bottle Studio", "HANGZHOU BLUE BOTTLE STUDIO LTD"),
             ("Dongfang Catering", "DONGFANG CATERING MGMT CO LTD"),
             ("Huamei Office", "HUAMEI OFFICE SERVICES CO LTD"), ("Qingshan Bakery", "QINGSHAN BAKERY CHAIN CO LTD"),
             ("Xinhe Foods", "NINGBO XINHE FOODS CO LTD"), ("Ruixing Events", "SHANGHAI RUIXING EVENTS CO LTD")]
STRANGERS = ["WANG XIAOMING", "LI NA", "ZHOU JIE", "CHEN JING", "GUANGZHOU YUEHAI IMPORT CO",
             "SUZHOU TIANYI TRADING CO"]


@dataclass
class Entry:
    """One :61: line and its :86: details."""
    booked: date
    amount: Decimal  # signed: a credit is positive
    ref: str  # the bank's reference (after //): the record's txn_id
    name: str
    remittance: str
    code: str = "NTRF"
    line: int = 0  # of its :61: in the written file
    file: str = ""


@dataclass
class Expectation:
    """What the fuzzy pass must do with one (order, bank line) pair."""
    order_id: str
    entry: Entry
    status: str  # confirmed | suggested
    why: str


@dataclass
class Instance:
    """One planted case and everything it must produce."""
    case: str
    day: date
    fuzzy: list[Expectation] = field(default_factory=list)
    breaks: dict[tuple[str, str], int] = field(default_factory=dict)  # (order id or bank ref, type) -> difference
    matched: list[str] = field(default_factory=list)  # orders that must have no break
    entries: list[Entry] = field(default_factory=list)  # its bank lines: no break beyond `breaks` on them


@dataclass
class BankPlanter:
    rng: random.Random
    rules: Rules
    orders: list[fmt.Order] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    serial: int = 0

    @property
    def fuzzy(self) -> list[Expectation]:
        return [x for inst in self.instances for x in inst.fuzzy]

    @property
    def breaks(self) -> dict[tuple[str, str], int]:
        return {k: v for inst in self.instances for k, v in inst.breaks.items()}

    @property
    def matched(self) -> dict[str, str]:
        return {o: f"bank {inst.case}" for inst in self.instances for o in inst.matched}

    def __post_init__(self) -> None:
        self.offset = self.rng.randrange(1000)  # the seed moves every amount

    def _amount(self) -> Decimal:
        """A fresh amount: no two bank orders or lines share one unless a case says so (the
        yuan part grows by 137 a call)."""
        self.serial += 1
        return Decimal(3000 + 137 * self.serial + self.offset) + Decimal((self.serial + self.offset) % 97) / 100

    def _ref(self, booked: date) -> str:
        self.serial += 1
        return f"BOC{booked:%y%m%d}{self.serial:07d}"

    def _order(self, order_id: str, amount: Decimal, at: datetime, payer: str) -> fmt.Order:
        o = fmt.Order(order_id, SOURCE, amount, at, payer=payer, goods="咖啡豆 Coffee beans (B2B)",
                      extra={"books_without_txn": True})  # paid by transfer: no channel id in our books
        self.orders.append(o)
        return o

    def _entry(self, booked: date, amount: Decimal, name: str, remittance: str, code: str = "NTRF",
               inst: Instance | None = None) -> Entry:
        e = Entry(booked, amount, self._ref(booked), name, remittance, code)
        self.entries.append(e)
        if inst is not None:
            inst.entries.append(e)
        return e

    def score(self, order: fmt.Order, e: Entry, id_in_memo: bool) -> Decimal:
        """The engine's score for a lone candidate (core/engine.py, fuzzy): order id in the
        details, payer in the payer or details, equal amount, time apart (the bank line's time
        is the start of its booking day: MT940 gives dates only)."""
        r = self.rules
        window = r.fuzzy_window_days * 86400
        gap = abs(Decimal((datetime.combine(e.booked, datetime.min.time()) - order.paid_at).total_seconds()))
        text = f"{e.name} {e.remittance}".upper()
        payer_seen = bool(order.payer) and len(order.payer) >= 2 and order.payer.upper() in text
        return ((r.fuzzy_weight_order_id if id_in_memo else 0) + (r.fuzzy_weight_payer if payer_seen else 0)
                + r.fuzzy_weight_amount + r.fuzzy_weight_time * (1 - min(gap, window) / window))

    def _expect(self, inst: Instance, o: fmt.Order, e: Entry, why: str, status: str | None = None) -> None:
        """A pair for the fuzzy pass; without `status`, whatever the engine's score makes it."""
        if status is None:
            score = self.score(o, e, id_in_memo=o.order_id in e.remittance)
            status = "confirmed" if score >= self.rules.fuzzy_min_score else "suggested"
            why += f" (score {score:.3f}, threshold {self.rules.fuzzy_min_score})"
        inst.fuzzy.append(Expectation(o.order_id, e, status, why))
        if status == "confirmed":
            inst.matched.append(o.order_id)
        else:
            inst.breaks[(o.order_id, "suggested_match")] = 0

    def plant_day(self, day: datetime, k: int) -> None:
        r = self.rng
        for i, case in enumerate(CASES):
            inst = Instance(case, day.date())
            self.instances.append(inst)
            at = day.replace(hour=9) + timedelta(minutes=40 * i + r.randint(0, 25), seconds=r.randint(0, 59))
            oid = f"K-{70000 + 100 * k + i}"
            booked = (day + timedelta(days=(i + k) % 2)).date()  # a transfer books the same day or the next
            payer, bank_name = CUSTOMERS[(i + k) % len(CUSTOMERS)]
            if case == "memo_id":
                o = self._order(oid, self._amount(), at, payer)
                wording = MEMO_WORDINGS[(i + k) % len(MEMO_WORDINGS)]
                name = bank_name if (i + k) % 2 == 0 else r.choice(STRANGERS)  # a parent company may pay
                self._expect(inst, o, self._entry(booked, o.amount, name, wording.format(id=oid), inst=inst),
                             "the details name the order")
            elif case == "payer_only":
                o = self._order(oid, self._amount(), at, payer)
                e = self._entry(booked, o.amount, bank_name, r.choice(["GOODS PAYMENT", "PAYMENT", "HUO KUAN"]),
                                inst=inst)
                self._expect(inst, o, e, "only the payer and a unique amount")
            elif case == "same_amount":
                amount = self._amount()
                same_customer = k % 2 == 1
                first = self._order(oid, amount, at, payer)
                twin = self._order(f"{oid}-T", amount, at + timedelta(minutes=3),
                                   payer if same_customer else CUSTOMERS[(i + k + 3) % len(CUSTOMERS)][0])
                name = bank_name if same_customer else r.choice(STRANGERS)
                e = self._entry(booked, amount, name, "PAYMENT", inst=inst)
                for o in (first, twin):
                    self._expect(inst, o, e, "two orders, one amount, nothing in the details to choose", "suggested")
            elif case == "long":
                # booked on the planted day: a line on the trailing day is never reconciled as its own day
                e = self._entry(day.date(), self._amount(), r.choice(STRANGERS),
                                r.choice(["DEPOSIT", "TRANSFER", "TOP UP"]), inst=inst)
                inst.breaks[(e.ref, "long")] = _cents(e.amount)
            elif case == "short":
                o = self._order(oid, self._amount(), at, payer)
                inst.breaks[(oid, "short")] = -_cents(o.amount)
            elif case == "merged":
                a = self._order(oid, self._amount(), at, payer)
                b = self._order(f"{oid}-M", self._amount(), at + timedelta(minutes=5), payer)
                self._entry(booked, a.amount + b.amount, bank_name, f"ORDERS {a.order_id} {b.order_id}", inst=inst)
                inst.matched += [a.order_id, b.order_id]
            elif case == "id_prefix":
                short_id = f"K-9{k}{i:02d}"
                amount = self._amount()
                # paid closer to the booking time (the line's 00:00) than the named order, so the
                # time signal points at the wrong one and only the id can decide
                prefix = self._order(short_id, amount, day.replace(hour=8, minute=5), payer)
                named = self._order(short_id + "5", amount, day.replace(hour=16, minute=45), payer)
                e = self._entry(day.date(), amount, bank_name, f"PAYMENT FOR ORDER {named.order_id}", inst=inst)
                self._expect(inst, named, e, f"the details name {named.order_id}; {prefix.order_id} (same amount, "
                                             "paid closer to the booking) is a prefix of that id", "confirmed")
                inst.breaks[(prefix.order_id, "short")] = -_cents(prefix.amount)
        # what every business account also has: money going out, which must raise nothing
        inst = Instance("debits", day.date())
        self.instances.append(inst)
        self._entry(day.date(), Decimal("-25.00"), "BANK OF CHINA", "SERVICE CHARGE NOV", code="NCHG", inst=inst)
        self._entry(day.date(), -Decimal(8000 + 100 * k), "HANGZHOU COFFEE ROASTERS CO LTD", f"INV 2026-{1187 + k}",
                    inst=inst)

    def write_statements(self, folder: Path, days: list[datetime]) -> list[Path]:
        """One MT940 statement a day, balances carried from day to day."""
        balance = OPENING
        paths = []
        for number, day in enumerate(days, start=301):
            todays = [e for e in self.entries if e.booked == day.date()]
            prev = (day - timedelta(days=1)).date()
            path = folder / f"mt940_{BIC}_{day:%Y%m%d}.sta"
            lines = ["{1:F01" + BIC + "A3000000000000}{2:O940" + BIC + "XXXXN}{3:}{4:",
                     f":20:940S{day:%y%m%d}", f":25:{ACCOUNT}", f":28C:{number:05d}/1",
                     f":60F:{_balance(balance, prev)}"]
            for e in todays:
                e.line, e.file = len(lines) + 1, path.name
                mark = "C" if e.amount >= 0 else "D"
                # value date, entry date (the booking), mark, amount, type, owner reference//bank reference
                lines.append(f":61:{e.booked:%y%m%d}{e.booked:%m%d}{mark}{_amount(abs(e.amount))}{e.code}"
                             f"NONREF//{e.ref}")
                lines += _details(f"/NAME/{e.name}/REMI/{e.remittance}")
                balance += e.amount
            lines += [f":62F:{_balance(balance, day.date())}", f":64:{_balance(balance, day.date())}", "-}{5:}"]
            path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
            paths.append(path)
        return paths


def _cents(d: Decimal) -> int:
    return int(d * 100)


def _amount(d: Decimal) -> str:
    return f"{d:.2f}".replace(".", ",")


def _balance(amount: Decimal, day: date) -> str:
    return f"{'C' if amount >= 0 else 'D'}{day:%y%m%d}CNY{_amount(abs(amount))}"


def _details(text: str, width: int = 65) -> list[str]:
    """A :86: field as SWIFT carries it: at most 65 characters a line after the tag, cut
    where the width ends (a reader joins a full line to the next without a space)."""
    chunks = [text[i:i + width] for i in range(0, len(text), width)]
    return [":86:" + chunks[0], *chunks[1:]]

"""SWIFT MT940 customer statements (one file may hold many), read with the `mt-940` package.

A statement is `:20:` reference, optional `:21:`, `:25:` account, `:28C:` statement
number, `:60F:`/`:60M:` opening balance, `:61:` statement lines each followed by
`:86:` details, `:62F:`/`:62M:` closing balance, optional `:64:`/`:65:` and a final
`:86:`. Files may wrap statements in SWIFT blocks (`{1:..}{2:..}{4:` ... `-}`) or bank
headers (`ABNANL2A`/`940`, `:940:`), and end them with `-`.

What the library does: the grammar of the `:61:` statement line (value and entry date
with the entry date's year, debit/credit mark, funds code, amount, type, references,
supplementary details). What this module adds around it, and why:
- *Splitting and line numbers.* `mt940.parse` merges every statement of a file into one
  collection (keeping only the last statement's balances) and knows no line numbers. We
  split the file into statements and tags ourselves (recognising tags exactly as the
  library does, so a wrapped `:86:` line that starts `:12:` stays text), and feed the
  library one `:61:` at a time, so every error names its line.
- *Strictness.* The library accepts tags out of order, a `:25:` where `:86:` belongs, a
  currency of `105`, fragments without `:20:`, and its grammar stops reading an amount
  after 15-16 characters without complaint (`0000000000001234,56` would be 1234). Each
  of those is rejected here with the line and the reason, and balances are read here: a
  bank file is ingested whole or not at all.
- *Control totals.* Opening balance + the lines = closing balance, per statement, in the
  statement's currency, or the file is refused (`ControlTotalError`).
- *`:86:` text* (memo, payer) is read here: the library appends a statement-level `:86:`
  to the last line's details and truncates long details unless told otherwise.
- *ASN Bank* (`{2:O940ASNB...}`) puts a 34-character IBAN where the 16-character owner
  reference belongs; for files it sends, the library's own `StatementASNB` grammar reads
  `:61:`.
- *MT942* interim reports (`:34F:` floor limit, `:13D:` time, `:90D:`/`:90C:`, no opening
  balance) are refused with that explanation: their lines come again in the day's MT940,
  and reconciling both would count every line twice.

Records (conventions in `core/sources/bank.py`): the sign is the debit/credit mark (`C`,
`RD` in, `D`, `RC` out); the booking date is the entry date when given, else the value
date (a value date of 30 February, used by some German banks for period-end interest,
is read as the month's last day, as the library does); `txn_id` is the bank reference
after `//`, `order_id` the owner reference (`NONREF` means none), `payer` the
counterparty name from structured `:86:` (`?32`/`?33`, or `/NAME/`), `memo` the `:86:` text.
`ref` = account : statement number : opening-balance date # position of the line in its
statement: stable when the bank delivers the same statement again (the `:20:` message
reference is not: it may change per transmission).

Text is UTF-8, else code page 852 (what the mt-940 package falls back to as well).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import mt940
from mt940.tags import StatementASNB

from core.sources import bank
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed

# A tag line, recognised exactly as mt940.models.Transactions.parse does (plus the check
# that the library knows the two-digit id), so our split and the library's agree.
TAG_RE = re.compile(r"^:(?P<full>(?P<id>[0-9]{2}|NS)[A-Z]?):")
LIBRARY_IDS = {str(k) for k in mt940.tags.TAG_BY_ID}
SWIFT_BLOCK2 = re.compile(r"\{2:[IO]94[02](?:\d{10})?(?P<bank>[A-Z]{4})[A-Z]{2}[A-Z0-9]{2}")
# End of a statement: '-', '-}' (end of SWIFT block 4), with trailing control characters (ETX).
TERMINATOR = re.compile(r"-(\}.*)?[\s\x00-\x1f]*")
BALANCE_RE = re.compile(r"(?P<mark>[CD])(?P<date>\d{6})(?P<currency>[A-Z]{3})(?P<amount>\d[\d,]*)")

OPENING, CLOSING = {"60F", "60M", "60"}, {"62F", "62M", "62"}
MT942_ONLY = {"34F", "13D", "13", "90D", "90C"}
NAMES = {
    "20": "transaction reference", "21": "related reference", "25": "account identification",
    "28C": "statement number", "28": "statement number", "60F": "opening balance",
    "60M": "intermediate opening balance", "60": "opening balance", "61": "statement line",
    "86": "information to account owner", "62F": "closing balance", "62M": "intermediate closing balance",
    "62": "closing balance", "64": "closing available balance", "65": "forward available balance",
    "NS": "non-SWIFT bank field",
}
# Statement grammar: state -> {tag group: next state}. Groups: 28C/28 -> 28, 60x -> 60, 62x -> 62.
ORDER: dict[str, dict[str, str]] = {
    "20": {"21": "21", "25": "25"},
    "21": {"25": "25"},
    "25": {"28": "28"},
    "28": {"60": "60"},
    "60": {"61": "61", "62": "62"},
    "61": {"61": "61", "86": "86line", "62": "62"},
    "86line": {"61": "61", "86": "86line", "62": "62"},
    "62": {"64": "64", "65": "65", "86": "86end"},
    "64": {"65": "65", "86": "86end"},
    "65": {"65": "65", "86": "86end"},
    "86end": {"86": "86end"},
}
SHOWN = {"28": "28C", "60": "60F", "62": "62F"}  # a tag group as the error message names it
FINAL_STATES = {"62", "64", "65", "86end"}
# Library switches: sign reversals (RC is money out), accept lowercase marks, keep long details.
OPTIONS = mt940.Options(reversal_sign=True, case_insensitive_marks=True, unbounded_details=True,
                        strip_bom=True, applicant_iban=True)
# Words banks put in the :61: owner-reference field that say "no reference" or "see :86:".
NO_REFERENCE = {"NONREF", "EREF", "KREF", "MREF", "MARF", "PREF"}


@dataclass(frozen=True)
class Dialect:
    tags: dict  # tag id -> library tag, replacing the library's default grammar
    counterparty_in_61: bool = False  # owner reference = counterparty account, supplementary = name


# Bank dialects, by the sender's bank code in SWIFT block 2.
DIALECTS = {"ASNB": Dialect(tags={61: StatementASNB()}, counterparty_in_61=True)}
STANDARD = Dialect(tags={})


@dataclass
class Tag:
    line: int
    full: str  # '61', '60F', 'NS'
    lines: list[str] = field(default_factory=list)  # first line's value, then continuation lines

    @property
    def group(self) -> str:
        return {"28C": "28", "60F": "60", "60M": "60", "62F": "62", "62M": "62"}.get(self.full, self.full)

    @property
    def shown(self) -> str:
        return self.lines[0].strip()[:60] if self.lines else ""


@dataclass
class Statement:
    line: int
    tags: list[Tag] = field(default_factory=list)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp852")


def _strip_line(line: str) -> str:
    """Only the line end goes: trailing spaces can be part of a wrapped :86: field."""
    return line.rstrip("\r\x00\x01\x02\x03\x04")


class Mt940Statement(ChannelSource):
    format = "bank.mt940"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        head = file.head()
        if head.lstrip().startswith("<"):
            return False  # XML (camt, OFX 2) may quote anything
        for line in head.split("\n")[:200]:
            m = TAG_RE.match(line)
            if m and m.group("id") in LIBRARY_IDS:
                return True
        return False

    # -- split -----------------------------------------------------------------------------

    def _split(self, path, text: str) -> list[Statement]:
        statements: list[Statement] = []
        current: Statement | None = None
        ended = 0  # line of the last '-' that closed a statement
        for no, raw in enumerate(text.split("\n"), start=1):
            line = _strip_line(raw)
            m = TAG_RE.match(line)
            if m and m.group("id") in LIBRARY_IDS:
                full = m.group("full")
                if full not in NAMES and full not in MT942_ONLY:
                    raise ParseError(path, "unknown MT940 tag", line=no, field="tag", value=f":{full}:")
                if full == "20":
                    current = Statement(no)
                    statements.append(current)
                elif current is None and ended:
                    raise ParseError(path, f"tag :{full}: after the end of the statement ('-' on line {ended}) and "
                                           "before the next :20:", line=no)
                elif current is None:
                    raise ParseError(path, f"tag :{full}: before any :20: (transaction reference): an MT940 "
                                           "statement starts with :20:, so this is a fragment, not a statement",
                                     line=no)
                current.tags.append(Tag(no, full, [line[m.end():]]))
                continue
            if current is None:
                continue  # envelope: SWIFT blocks, bank headers, SOH/ETX, blank lines
            if TERMINATOR.fullmatch(line.strip()):
                current, ended = None, no
                continue
            if not line.strip():
                continue  # blank lines inside a statement mean nothing
            if line.strip() == ":":
                raise ParseError(path, "a line holding only ':' (a tag split over two lines?)", line=no)
            current.tags[-1].lines.append(line)
        return statements

    def _check_order(self, path, st: Statement) -> None:
        state = None
        for tag in st.tags:
            if tag.full in MT942_ONLY:
                raise ParseError(
                    path, f"MT942 interim transaction report (tag :{tag.full}:): its lines come again in the "
                          "day's MT940 statement, so reconbot reads MT940 only; ingest the MT940 for this account",
                    line=tag.line)
            if tag.full == "NS":
                continue  # bank-specific, allowed anywhere
            if state is None:
                state = "20"
                continue
            nxt = ORDER[state].get(tag.group)
            if nxt is None:
                expected = " or ".join(f":{SHOWN.get(t, t)}:" for t in ORDER[state])
                raise ParseError(path, f"tag :{tag.full}: ({NAMES[tag.full]}) is out of place: after "
                                       f":{_last_tag(st, tag)}: the statement needs {expected}", line=tag.line)
            state = nxt
        if state not in FINAL_STATES:
            expected = " or ".join(f":{SHOWN.get(t, t)}:" for t in ORDER[state])
            raise ParseError(path, f"the statement that starts on line {st.line} ends where {expected} was expected: "
                                   "it has no closing balance (:62F:), so the file is incomplete",
                             line=st.tags[-1].line)

    # -- parse -----------------------------------------------------------------------------

    def parse(self, file: InputFile) -> Parsed:
        path = file.path
        text = _decode(file.raw)
        statements = self._split(path, text)
        if not statements:
            raise ParseError(path, "no :20: statement in the file")
        m = SWIFT_BLOCK2.search(text)
        dialect = DIALECTS.get(m.group("bank"), STANDARD) if m else STANDARD
        lines: list[bank.BankLine] = []
        totals = []
        closing_days: list[date] = []
        for st in statements:
            self._check_order(path, st)
            got, summary, closing_day = self._statement(path, st, dialect)
            lines += got
            totals.append(summary)
            closing_days.append(closing_day)
        records = bank.records(path, lines, self.tz)
        return Parsed(self.format, self.side, records, max(closing_days), {"statements": totals})

    def _statement(self, path, st: Statement, dialect: Dialect) -> tuple[list[bank.BankLine], dict, date]:
        lib = mt940.models.Transactions(tags=dialect.tags or None, options=OPTIONS)
        header: dict[str, str] = {}
        balances: dict[str, Balance] = {}
        entries: list[tuple[Tag, dict, list[Tag]]] = []
        details: list[Tag] | None = None  # the :86: tags after a :61: belong to it
        for tag in st.tags:
            if tag.full in ("NS", "21"):
                continue
            if tag.full == "86":
                if details is not None:
                    details.append(tag)
                continue  # a statement-level :86: (after the closing balance) is information only
            details = None
            if tag.full in OPENING | CLOSING | {"64", "65"}:
                balances[tag.group] = _balance(path, tag)
            elif tag.full == "61":
                details = []
                entries.append((tag, self._statement_line(path, lib, tag), details))
            else:
                header[tag.full] = "\n".join(tag.lines).strip()

        opening, closing = balances["60"], balances["62"]
        open_tag, close_tag = opening.tag, closing.tag
        currency = opening.currency
        if closing.currency != currency:
            raise ControlTotalError(path, f"closing balance is in {closing.currency}, the opening balance "
                                          f"in {currency}", line=close_tag.line, field=f":{close_tag.full}:",
                                    value=close_tag.shown)
        account = header.get("25", "")
        number = header.get("28C", header.get("28", ""))
        if not account:
            line = next(t.line for t in st.tags if t.full == "25")
            raise ParseError(path, "account identification is empty", line=line, field=":25:", value="")
        out: list[bank.BankLine] = []
        total = Decimal(0)
        for index, (tag, data, details) in enumerate(entries, start=1):
            line = self._line(path, tag, data, details, currency, dialect)
            line.ref = f"{account}:{number}:{opening.date:%Y%m%d}#{index}"
            total += data["amount"].amount
            out.append(line)
        if opening.amount + total != closing.amount:
            raise ControlTotalError(
                path, f"opening balance {opening.amount} {currency} (line {open_tag.line}) plus the "
                      f"{len(entries)} statement lines ({total:+}) is {opening.amount + total}, but the "
                      f"closing balance says {closing.amount}",
                line=close_tag.line, field=f":{close_tag.full}:", value=close_tag.shown)
        summary = {"line": st.line, "reference": header.get("20", ""), "account": account, "number": number,
                   "currency": currency, "opening": str(opening.amount), "closing": str(closing.amount),
                   "opening_date": opening.date.isoformat(), "closing_date": closing.date.isoformat(),
                   "lines": len(entries)}
        return out, summary, closing.date

    def _statement_line(self, path, lib, tag: Tag) -> dict:
        """One :61: through the library's grammar, checked where the grammar is lenient."""
        value = "\n".join(tag.lines)
        before = len(lib.transactions)
        try:
            lib.parse(":61:" + value)
        except (RuntimeError, ValueError, ArithmeticError) as exc:
            reason = str(exc.args[0]) if isinstance(exc, RuntimeError) and exc.args else str(exc)
            raise ParseError(path, f"statement line does not parse ({reason[:120]})", line=tag.line,
                             field=":61:", value=tag.shown) from None
        if len(lib.transactions) != before + 1:
            raise ParseError(path, "the mt940 parser did not read this statement line", line=tag.line,
                             field=":61:", value=tag.shown)
        # The grammar stops the amount after 15 characters and reads on: refuse a longer amount
        # rather than keep a truncated one.
        seen = "\n".join(t for t in (line.rstrip() for line in tag.lines) if t).strip()  # as the library sees it
        m = lib.tags[61].re.match(seen)
        after = seen[m.end("amount"):m.end("amount") + 1] if m else ""
        if m is None or m.group("amount").count(",") > 1 or (after and after in "0123456789,"):
            raise ParseError(path, "statement line amount is malformed or longer than 15 characters", line=tag.line,
                             field=":61:", value=tag.shown)
        return dict(lib.transactions[-1].data)

    def _line(self, path, tag: Tag, data: dict, details: list[Tag], currency: str, dialect: Dialect) -> bank.BankLine:
        mark = (data.get("status") or "").upper()
        amount = bank.minor(path, data["amount"].amount, currency, line=tag.line, field=":61:")
        booked = data.get("entry_date") or data["date"]
        memo, payer = _details(details)
        customer_ref = (data.get("customer_reference") or "").strip()
        if dialect.counterparty_in_61:
            payer = payer or bank.clean(data.get("extra_details"))
            customer_ref = ""
        return bank.BankLine(
            line=tag.line, ref="", amount=amount, currency=currency,
            booked=date(booked.year, booked.month, booked.day),
            kind=bank.kind_for(amount, reversal=mark.startswith("R")),
            txn_id=(data.get("bank_reference") or "").strip() or None,
            order_id=customer_ref if customer_ref.rstrip("+").upper() not in NO_REFERENCE | {""} else None,
            payer=payer, memo=memo,
        )


@dataclass
class Balance:
    tag: Tag
    date: date
    currency: str
    amount: Decimal  # signed: D is negative


def _balance(path, tag: Tag) -> Balance:
    """A balance, read here rather than by the library: its grammar stops an amount after 16
    characters without complaint (`0000000000001234,56` would become 1234)."""
    value = "".join(tag.lines).strip()
    m = BALANCE_RE.fullmatch(value)
    if not m or m.group("amount").count(",") > 1:
        raise ParseError(path, f"{NAMES[tag.full]} is malformed (expected C or D, YYMMDD, a three-letter "
                               "currency code, an amount)", line=tag.line, field=f":{tag.full}:", value=tag.shown)
    yy, mm, dd = (int(m.group("date")[i:i + 2]) for i in (0, 2, 4))
    try:
        day = date(2000 + yy, mm, dd)
    except ValueError:
        raise ParseError(path, f"{NAMES[tag.full]} date is not a calendar date", line=tag.line,
                         field=f":{tag.full}:", value=tag.shown) from None
    amount = bank.decimal(path, m.group("amount"), line=tag.line, field=f":{tag.full}:")
    return Balance(tag, day, m.group("currency"), -amount if m.group("mark") == "D" else amount)


def _last_tag(st: Statement, tag: Tag) -> str:
    i = st.tags.index(tag)
    prior = [t for t in st.tags[:i] if t.full != "NS"]
    return prior[-1].full if prior else "20"


def _details(tags: list[Tag]) -> tuple[str | None, str | None]:
    """(memo, payer) from the :86: tag(s) of one statement line."""
    if not tags:
        return None, None
    first = "".join(tags[0].lines).strip()
    m = re.match(r"\d{3}([?>])\d{2}", first)  # German GVC layout ('>' at Triodos)
    if m and len(tags) == 1:
        return _structured(first, m.group(1))
    texts = [_unwrap(t.lines) for t in tags]
    memo = bank.clean(" ".join(texts))
    name = re.search(r"/NAME/(.*?)(?:/[A-Z]{2,4}/|$)", "".join(texts))
    return memo, bank.clean(name.group(1)) if name else None


def _structured(text: str, sep: str) -> tuple[str | None, str | None]:
    """German GVC layout: '166?00GUTSCHRIFT?100399?20...' -> posting text | purpose; payer ?32+?33."""
    parts = re.split(re.escape(sep) + r"(\d{2})", text)
    fields: dict[str, str] = {}
    for key, value in zip(parts[1::2], parts[2::2]):
        fields[key] = value
    purpose = _join_slots(fields, [*range(20, 30), *range(60, 64)])  # ?60-?63 continue ?20-?29
    memo = " | ".join(p for p in (bank.clean(fields.get("00")), bank.clean(purpose)) if p)
    payer = bank.clean(_join_slots(fields, (32, 33)))
    return memo or None, payer


def _join_slots(fields: dict[str, str], keys) -> str:
    """GVC text slots hold 27 characters; a full slot was cut mid-word and continues in the next."""
    out, prev = "", None
    for k in keys:
        value = fields.get(f"{k:02d}")
        if value is None:
            continue
        if prev is not None and len(prev) < 27:
            out += " "
        out += value
        prev = value
    return out


def _unwrap(lines: list[str]) -> str:
    """Physical lines of one free-text :86: -> one text. A line filled to the 64-65 character
    width was wrapped mid-word by the bank and continues without a space."""
    out = ""
    for i, line in enumerate(lines):
        prev = lines[i - 1]
        if i and not (len(prev) >= 64 and not prev.endswith(" ")):
            out += " "
        out += line
    return out

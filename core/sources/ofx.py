"""OFX bank and credit-card statements, SGML (OFX 1.x) and XML (OFX 2.x), read with ofxparse.

Why ofxparse: of the two maintained readers it is the one that reads the real-bank samples.
ofxtools validates against the specification and refuses four of them (two transaction
lists in one statement, a 10-digit bank id, an SGML file without its header, a file with
several accounts); ofxparse reads them all and refuses the deliberately broken ones.

What this module adds around it:
- *Line numbers and strict fields.* ofxparse knows no lines, and its errors name no place
  ("Missing Transaction Amount"). Before handing the file over, we walk its statements
  (`STMTRS`, `CCSTMTRS`) and transactions (`STMTTRN`) in the text, with comments taken
  out, and refuse with file, line and field: a statement without currency (`CURDEF`) or
  account (`ACCTID`), a transaction without `DTPOSTED`, `TRNAMT` or `FITID`, an amount
  that is not a plain decimal (`$120`), a date that is not a date, an empty balance.
  ofxparse's results are then matched to those transactions (same account, same FITID,
  same amount) so every record points at its line.
- *Dates.* ofxparse turns a `DTPOSTED` with an offset into UTC and cannot tell it from one
  without; we read `DTPOSTED` ourselves. A date alone is the booking date. A date-time
  with an offset (`[-5:EST]`) is that instant. A date-time without one is taken as local
  to the statement's time zone (the source's config): the OFX specification says GMT, but
  banks write local time; configure `timezone = "UTC"` for a bank that follows the letter.

Records (`core/sources/bank.py`): the sign of `TRNAMT` decides the direction (`payment`
in, `payout` out); `ref` = account : FITID (the bank's transaction id is unique per
account, and a file may hold several accounts); `txn_id` = FITID; `order_id` = the cheque
number when there is one; `payer` = `NAME`; `memo` = `MEMO`. A transaction in another
currency than the statement's carries `CURRENCY/CURSYM`.

OFX carries a closing (`LEDGERBAL`) but no opening balance, so there is no balance to
check the transactions against; the ledger balance is kept in the control totals.
"""

from __future__ import annotations

import html
import io
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from core.sources import bank
from core.sources.base import ChannelSource, InputFile, ParseError, Parsed

SIGNATURE = re.compile(r"OFXHEADER|<OFX>", re.IGNORECASE)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
STATEMENT = re.compile(r"<(STMTRS|CCSTMTRS)>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
TRNRS = re.compile(r"<(STMTTRNRS|CCSTMTTRNRS)>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
TRANSACTION = re.compile(r"<STMTTRN>(.*?)</STMTTRN>", re.IGNORECASE | re.DOTALL)
ELEMENT = re.compile(r"<(?P<tag>[A-Za-z0-9.]+)>(?P<value>[^<]*)")
OFX_TIME = re.compile(
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"
    r"(?:(?P<H>\d{2})(?P<M>\d{2})(?:(?P<S>\d{2})(?:[.:]\d{1,6})?)?)?"
    r"\s*(?:\[\s*(?P<off>[+-]?\d{1,2}(?:\.\d+)?)\s*(?::\s*[A-Za-z]*\s*)?\])?")


@dataclass
class Txn:
    line: int
    fields: dict[str, tuple[str, int]]  # TAG -> (value, line)


@dataclass
class Block:
    kind: str  # STMTRS or CCSTMTRS
    line: int
    account: str
    currency: str
    transactions: list[Txn] = field(default_factory=list)
    fields: dict[str, tuple[str, int]] = field(default_factory=dict)  # statement-level, first occurrence


class OfxStatement(ChannelSource):
    format = "bank.ofx"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            return False
        return bool(SIGNATURE.search(file.head(2048)))

    def parse(self, file: InputFile) -> Parsed:
        path = file.path
        text = _scan_text(file.raw)
        self._check_status(path, text)
        blocks = [self._block(path, text, m) for m in STATEMENT.finditer(text)]
        if not blocks:
            if re.search(r"<INVSTMTRS>", text, re.IGNORECASE):
                raise ParseError(path, "an investment statement (INVSTMTRS): not a bank statement")
            raise ParseError(path, "no bank or credit-card statement (STMTRS or CCSTMTRS) in the file")
        accounts = self._ofxparse(path, file.raw)
        lines: list[bank.BankLine] = []
        totals = []
        days: list[date] = []
        for block, account in self._align(path, blocks, accounts):
            got = [self._line(path, block, txn, parsed) for txn, parsed in zip(block.transactions,
                                                                              account.statement.transactions)]
            lines += got
            ledger = block.fields.get("BALAMT")
            end = block.fields.get("DTEND") or block.fields.get("DTASOF")
            day = (self._time(path, *end)[0] if end else None) or max((bl.booked for bl in got), default=None)
            if day is not None:
                days.append(day)
            totals.append({"account": block.account, "type": "creditcard" if block.kind == "CCSTMTRS" else "bank",
                           "currency": block.currency, "line": block.line, "transactions": len(got),
                           "ledger_balance": ledger[0] if ledger else None})
        records = bank.records(path, lines, self.tz)
        return Parsed(self.format, self.side, records, max(days) if days else None, {"statements": totals})

    # -- our own walk over the text: places and strict fields --------------------------------

    def _check_status(self, path, text: str) -> None:
        for m in TRNRS.finditer(text):
            code = _first(m.group(2), "CODE", _line_at(text, m.start(2)))
            if code and code[0] not in ("0", ""):
                raise ParseError(path, f"the bank answered this request with an error (STATUS CODE {code[0]}), "
                                       "not a statement", line=code[1], field="CODE", value=code[0])

    def _block(self, path, text: str, m: re.Match) -> Block:
        kind, body = m.group(1).upper(), m.group(2)
        start = _line_at(text, m.start())
        body_line = _line_at(text, m.start(2))
        head = TRANSACTION.sub(lambda t: "\n" * t.group(0).count("\n"), body)  # statement-level fields only
        fields: dict[str, tuple[str, int]] = {}
        for tag, value, line in _elements(head, body_line):
            fields.setdefault(tag, (value, line))
        if "CURDEF" not in fields:
            raise ParseError(path, f"{kind} has no CURDEF: the statement names no currency", line=start)
        currency = fields["CURDEF"]
        if not currency[0]:
            raise ParseError(path, "CURDEF is empty: the statement names no currency", line=currency[1],
                             field="CURDEF", value="")
        bank.check_currency(path, currency[0].upper(), line=currency[1], field="CURDEF")
        account = fields.get("ACCTID")
        if account is None or not account[0]:
            raise ParseError(path, f"{kind} names no account (ACCTID)", line=account[1] if account else start,
                             field="ACCTID", value="")
        for tag in ("BALAMT",):
            if tag in fields:
                value, line = fields[tag]
                if not value:
                    raise ParseError(path, "balance amount is empty", line=line, field=tag, value="")
                bank.decimal(path, value, line=line, field=tag)
        for tag in ("DTEND", "DTASOF", "DTSTART"):
            if tag in fields and fields[tag][0]:
                self._time(path, *fields[tag], field=tag)
        block = Block(kind, start, account[0], currency[0].upper(), fields=fields)
        for t in TRANSACTION.finditer(body):
            tline = body_line + body[:t.start()].count("\n")
            tfields: dict[str, tuple[str, int]] = {}
            for tag, value, line in _elements(t.group(1), body_line + body[:t.start(1)].count("\n")):
                tfields.setdefault(tag, (value, line))
                if tag == "DTPOSTED":
                    self._time(path, value, line, field=tag)
                elif tag == "TRNAMT":
                    bank.decimal(path, value, line=line, field=tag)
            for tag in ("DTPOSTED", "TRNAMT", "FITID"):
                if not tfields.get(tag, ("", 0))[0]:
                    raise ParseError(path, "transaction lacks a required field", line=tfields.get(tag, ("", tline))[1],
                                     field=tag, value="")
            block.transactions.append(Txn(tline, tfields))
        return block

    def _time(self, path, value: str, line: int, field: str = "date") -> tuple[date, datetime | None]:
        """(booking date, instant or None for a date alone) from an OFX date-time."""
        m = OFX_TIME.fullmatch(value.strip())
        try:
            if not m:
                raise ValueError
            day = date(int(m["y"]), int(m["m"]), int(m["d"]))
            if m["H"] is None:
                return day, None
            at = datetime(day.year, day.month, day.day, int(m["H"]), int(m["M"]), int(m["S"] or 0))
        except ValueError:
            raise ParseError(path, "not an OFX date (YYYYMMDD[HHMMSS[.XXX]][[offset:TZ]])", line=line,
                             field=field, value=value) from None
        if m["off"] is not None:
            at = at.replace(tzinfo=timezone(timedelta(hours=float(m["off"]))))
            return bank.utc_and_day(day, at, self.tz)[1], at
        return day, at

    # -- ofxparse, and matching its results to our walk --------------------------------------

    def _ofxparse(self, path, raw: bytes) -> list:
        from ofxparse import OfxParser

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return OfxParser.parse(io.BytesIO(raw)).accounts
        except Exception as exc:  # ofxparse raises bare IndexError/AttributeError as well as its own
            reason = f"{exc.__class__.__name__}: {str(exc).strip()[:160]}"
            raise ParseError(path, f"ofxparse cannot read the file ({reason})") from None

    def _align(self, path, blocks: list[Block], accounts: list) -> list[tuple[Block, object]]:
        from ofxparse.ofxparse import AccountType

        # ofxparse lists bank statements first, then credit-card ones, each in file order.
        ordered = [b for b in blocks if b.kind == "STMTRS"] + [b for b in blocks if b.kind == "CCSTMTRS"]
        if len(ordered) != len(accounts):
            raise ParseError(path, f"ofxparse read {len(accounts)} statements, the file has {len(ordered)}")
        pairs = []
        for block, account in zip(ordered, accounts):
            expected = AccountType.Bank if block.kind == "STMTRS" else AccountType.CreditCard
            txns = account.statement.transactions
            same = account.account_id.strip() == block.account and len(txns) == len(block.transactions)
            if account.type != expected or not same:
                raise ParseError(path, f"ofxparse's reading of account {account.account_id} does not match the "
                                       "file's statement", line=block.line)
            for txn, parsed in zip(block.transactions, txns):
                if html.unescape(txn.fields["FITID"][0]) != (parsed.id or "").strip():
                    raise ParseError(path, "ofxparse's transaction order does not match the file", line=txn.line,
                                     field="FITID", value=txn.fields["FITID"][0])
            pairs.append((block, account))
        return sorted(pairs, key=lambda p: p[0].line)

    def _line(self, path, block: Block, txn: Txn, parsed) -> bank.BankLine:
        value, vline = txn.fields["TRNAMT"]
        amount = bank.decimal(path, value, line=vline, field="TRNAMT")
        if parsed.amount != amount:
            raise ParseError(path, f"ofxparse reads the amount as {parsed.amount}", line=vline, field="TRNAMT",
                             value=value)
        currency = block.currency
        cursym = txn.fields.get("CURSYM")
        if cursym and cursym[0] and "CURRENCY" in txn.fields:
            currency = bank.check_currency(path, cursym[0].upper(), line=cursym[1], field="CURSYM")
        minor = bank.minor(path, amount, currency, line=vline, field="TRNAMT")
        booked, at = self._time(path, *txn.fields["DTPOSTED"], field="DTPOSTED")
        fitid = html.unescape(txn.fields["FITID"][0])
        check = (parsed.checknum or "").strip() if hasattr(parsed, "checknum") else ""
        return bank.BankLine(
            line=txn.line, ref=f"{block.account}:{fitid}", amount=minor, currency=currency, booked=booked, at=at,
            kind=bank.kind_for(minor), txn_id=fitid, order_id=check if check.strip("0") else None,
            payer=bank.clean(parsed.payee), memo=bank.clean(parsed.memo))


def _scan_text(raw: bytes) -> str:
    """The file as text for our walk: comments blanked (keeping their line breaks), CDATA opened."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    text = COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CDATA.sub(lambda m: m.group(1).replace("<", "&lt;"), text)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _elements(body: str, first_line: int):
    """(TAG, value, line) for every opening tag in `body`; SGML values end at the next tag."""
    for m in ELEMENT.finditer(body):
        yield m.group("tag").upper(), m.group("value").strip(), first_line + body.count("\n", 0, m.start())


def _first(body: str, tag: str, first_line: int) -> tuple[str, int] | None:
    return next(((v, line) for t, v, line in _elements(body, first_line) if t == tag), None)

"""ISO 20022 bank-to-customer cash management: camt.053 statements and camt.054 debit/credit
notifications, any version (.001.02 to .001.08 and later), read with lxml.

Elements are found by local name, so one reader serves every version's namespace (and
documents that carry a prefix or none). The parts that differ between versions are read
in each form: `Sts` as text (v2-v7) or `Sts/Cd` (v8+); a party as `Dbtr/Nm` (up to v7)
or `Dbtr/Pty/Nm` (v8+); a transaction's amount as `TxDtls/Amt` (v3+) or
`TxDtls/AmtDtls/TxAmt/Amt` (v2); dates as `Dt` or `DtTm`.

pycamt (1.1) reads the camt.053 samples but refuses camt.054 and cannot report line
numbers, so the reading is done here with lxml (entities are not resolved, nothing is
fetched from the network).

One record per entry (`Ntry`); an entry that batches several transactions (`TxDtls`)
whose own amounts add up to the entry becomes one record per transaction (they must add
up: otherwise the file is refused). Records follow `core/sources/bank.py`: `CdtDbtInd`
gives the sign, `RvslInd` makes a reversal an `adjustment`; the business day is the
booking date (`BookgDt`, a date or a date-time), else the value date (`ValDt`), else,
for a notification that carries neither, the date the message was created (`CreDtTm`).
`txn_id` is the bank's reference (`AcctSvcrRef`, else `TxId`, else `UETR`), `order_id`
the creditor reference (`CdtrRefInf/Ref`) or else the end-to-end id, `payer` the
counterparty (debtor of a credit, creditor of a debit), `memo` the remittance text.
`ref` = account : statement id # entry position [. transaction position].

Control totals, per statement: opening booked balance (`OPBD`, else `PRCD`) + booked
entries = closing booked balance (`CLBD`) where both are present, in one currency; and
the transaction summary (`TxsSummry`) where present: number of entries and net amount.

A zip is read member by member; it may hold one camt document (the store keeps one
file and line per record, so several documents in one zip are refused after checking).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from lxml import etree

from core.sources import bank
from core.sources.base import ChannelSource, ControlTotalError, InputFile, ParseError, Parsed, sniff_text

SIGNATURE = re.compile(r"camt\.05[34]\.\d{3}\.\d{2}|<(\w+:)?BkToCstmr(Stmt|DbtCdtNtfctn)\b")
MESSAGES = {"BkToCstmrStmt": ("camt.053", "Stmt", "statement"),
            "BkToCstmrDbtCdtNtfctn": ("camt.054", "Ntfctn", "notification")}
STATUS = {"BOOK": "success", "PDNG": "pending", "INFO": "info"}
AMOUNT = re.compile(r"\d+(\.\d+)?")
NOT_PROVIDED = {"NOTPROVIDED", "NONREF", ""}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True)


# -- namespace-agnostic navigation ---------------------------------------------------------

def _kids(el, name: str) -> list:
    return [c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _kid(el, *path: str):
    """The first element at `path` below `el` (local names), or None."""
    for name in path:
        if el is None:
            return None
        found = _kids(el, name)
        el = found[0] if found else None
    return el


def _text(el, *path: str) -> str | None:
    node = _kid(el, *path)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


@dataclass
class Amount:
    value: Decimal  # signed by CdtDbtInd
    currency: str


class CamtStatement(ChannelSource):
    format = "bank.camt"

    def identify(self, file: InputFile) -> bool:
        if file.is_zip:
            try:
                return bool(self._documents(file))
            except ParseError:
                return any("camt" in n.lower() for n in file.member_names)
        return _is_camt(file.raw)

    def _documents(self, file: InputFile) -> list[tuple[str, bytes]]:
        if not file.is_zip:
            return [(str(file.path), file.raw)]
        return [(f"{file.path}!{name}", data) for name, data in sorted(file.members.items()) if _is_camt(data)]

    def parse(self, file: InputFile) -> Parsed:
        docs = self._documents(file)
        if not docs:
            raise ParseError(file.path, "zip holds no camt.053 or camt.054 document")
        parsed = [self._document(path, raw) for path, raw in docs]
        if len(parsed) > 1:
            names = ", ".join(p.split("!", 1)[1] for p, _ in docs)
            raise ParseError(file.path, f"zip holds {len(parsed)} camt documents ({names}); each checks out, but "
                                        "reconbot keeps one document per file: unzip it and ingest each document")
        records, day, totals = parsed[0]
        member = docs[0][0].split("!", 1)[1] if file.is_zip else None
        return Parsed(self.format, self.side, records, day, totals, member)

    # -- one document ---------------------------------------------------------------------

    def _document(self, path: str, raw: bytes):
        try:
            root = etree.fromstring(raw, _parser())
        except etree.XMLSyntaxError as exc:
            raise ParseError(path, f"not well-formed XML ({exc.msg})", line=exc.lineno or None) from None
        message = next((c for c in root if isinstance(c.tag, str) and etree.QName(c).localname in MESSAGES), None)
        if message is None:
            raise ParseError(path, "no BkToCstmrStmt (camt.053) or BkToCstmrDbtCdtNtfctn (camt.054) in the document",
                             line=root.sourceline)
        kind, child, what = MESSAGES[etree.QName(message).localname]
        statements = _kids(message, child)
        if not statements:
            raise ParseError(path, f"{etree.QName(message).localname} holds no {child} ({what}): not a complete "
                                   f"{kind} (the schema requires at least one)", line=message.sourceline)
        created = _datetime(path, _kid(message, "GrpHdr", "CreDtTm"))
        lines: list[bank.BankLine] = []
        totals = []
        days: list[date] = []
        for st in statements:
            got, summary, day = self._statement(path, st, child, created)
            lines += got
            totals.append(summary)
            days.append(day)
        records = bank.records(path, lines, self.tz)
        version = etree.QName(root).namespace or ""
        return records, max(days), {"message": kind, "namespace": version, "statements": totals}

    def _statement(self, path, st, child: str, created: datetime | None):
        st_id = _text(st, "Id")
        if not st_id:
            raise ParseError(path, f"{child} has no Id", line=st.sourceline, field="Id", value="")
        acct = _kid(st, "Acct")
        account = _text(acct, "Id", "IBAN") or _text(acct, "Id", "Othr", "Id")
        if not account:
            raise ParseError(path, f"{child} {st_id} names no account (Acct/Id/IBAN or Acct/Id/Othr/Id)",
                             line=(acct if acct is not None else st).sourceline)
        st_created = _datetime(path, _kid(st, "CreDtTm")) or created
        balances: dict[str, tuple[object, Amount, date | None]] = {}
        for bal in _kids(st, "Bal"):
            code = _text(bal, "Tp", "CdOrPrtry", "Cd") or _text(bal, "Tp", "CdOrPrtry", "Prtry")
            if code and code not in balances:
                balances[code] = (bal, self._amount(path, bal), _when(path, _kid(bal, "Dt")))
        self._balance_currencies(path, balances)
        out: list[bank.BankLine] = []
        booked_total = Decimal(0)
        entries = _kids(st, "Ntry")
        for n, ntry in enumerate(entries, start=1):
            got, signed, status = self._entry(path, ntry, f"{account}:{st_id}#{n}", st_created)
            out += got
            if status == "BOOK":
                booked_total += signed.value
                self._same_currency(path, ntry, signed, balances)
        self._check_balances(path, st, st_id, balances, booked_total, len(entries))
        self._check_summary(path, st, entries)
        closing = balances.get("CLBD")
        to = _datetime(path, _kid(st, "FrToDt", "ToDtTm"))
        # The statement's own day: its closing balance date, else the end of its period as
        # written (banks stamp local end-of-day as 23:59:59Z), else its latest booking.
        day = ((closing[2] if closing else None) or (to.date() if to else None)
               or max((bl.booked for bl in out), default=None)
               or (bank.utc_and_day(st_created.date(), st_created, self.tz)[1] if st_created else None))
        if day is None:
            raise ParseError(path, f"{child} {st_id} has no date at all (no balance, entry or CreDtTm)",
                             line=st.sourceline)
        summary = {"id": st_id, "account": account, "line": st.sourceline, "entries": len(entries),
                   "balances": {code: str(a.value) + " " + a.currency for code, (_, a, _) in balances.items()
                                if code in ("OPBD", "PRCD", "CLBD")}}
        return out, summary, day

    def _amount(self, path, el) -> Amount:
        amt = _kid(el, "Amt")
        if amt is None:
            raise ParseError(path, f"{etree.QName(el).localname} has no Amt", line=el.sourceline)
        text = (amt.text or "").strip()
        if not AMOUNT.fullmatch(text):
            raise ParseError(path, "not an amount (digits, optional decimal point, no sign)", line=amt.sourceline,
                             field="Amt", value=text)
        currency = bank.check_currency(path, amt.get("Ccy"), line=amt.sourceline, field="Amt/@Ccy")
        ind = _text(el, "CdtDbtInd")
        if ind not in ("CRDT", "DBIT"):
            node = _kid(el, "CdtDbtInd")
            raise ParseError(path, "credit/debit indicator must be CRDT or DBIT", line=(node if node is not None
                             else el).sourceline, field="CdtDbtInd", value=ind or "")
        value = Decimal(text)
        return Amount(value if ind == "CRDT" else -value, currency)

    def _entry(self, path, ntry, ref: str, created: datetime | None):
        signed = self._amount(path, ntry)
        status = _text(ntry, "Sts", "Cd") or _text(ntry, "Sts")
        if status not in STATUS:
            node = _kid(ntry, "Sts")
            raise ParseError(path, "entry status must be BOOK, PDNG or INFO", line=(node if node is not None
                             else ntry).sourceline, field="Sts", value=status or "")
        reversal = (_text(ntry, "RvslInd") or "false").lower() in ("true", "1")
        booked, at = self._booking(path, ntry, created)
        txs = [t for d in _kids(ntry, "NtryDtls") for t in _kids(d, "TxDtls")]
        split = self._split(path, ntry, signed, txs)
        common = {"currency": signed.currency, "booked": booked, "at": at, "status": STATUS[status]}
        entry_text = _text(ntry, "AddtlNtryInf")
        entry_ref = _text(ntry, "AcctSvcrRef")
        if split is None:
            amount = bank.minor(path, abs(signed.value), signed.currency, line=ntry.sourceline, field="Amt")
            amount = amount if signed.value >= 0 else -amount
            memo = " | ".join(m for m in dict.fromkeys(_memo(t) for t in txs) if m) or None
            first = txs[0] if txs else None
            line = bank.BankLine(
                line=ntry.sourceline, ref=ref, amount=amount, kind=bank.kind_for(amount, reversal), **common,
                txn_id=_txn_id(first, entry_ref), order_id=_order_id(first), payer=_counterparty(first, signed.value),
                memo=bank.clean(" | ".join(p for p in (memo, entry_text) if p)) if memo or entry_text else None)
            return [line], signed, status
        out = []
        for k, (tx, tx_amount) in enumerate(split, start=1):
            amount = bank.minor(path, abs(tx_amount.value), tx_amount.currency, line=tx.sourceline, field="Amt")
            amount = amount if tx_amount.value >= 0 else -amount
            out.append(bank.BankLine(
                line=tx.sourceline, ref=f"{ref}.{k}", amount=amount, kind=bank.kind_for(amount, reversal), **common,
                txn_id=_txn_id(tx, entry_ref), order_id=_order_id(tx), payer=_counterparty(tx, tx_amount.value),
                memo=bank.clean(_memo(tx) or entry_text)))
        return out, signed, status

    def _split(self, path, ntry, signed: Amount, txs: list):
        """[(TxDtls, signed amount)] when a batch entry's transactions carry amounts that add up."""
        if len(txs) < 2:
            return None
        amounts = []
        for tx in txs:
            holder = tx if _kid(tx, "Amt") is not None else _kid(tx, "AmtDtls", "TxAmt")
            if holder is None:
                return None  # no per-transaction amounts: one record for the entry
            amt = _kid(holder, "Amt")
            text = (amt.text or "").strip()
            if not AMOUNT.fullmatch(text):
                raise ParseError(path, "not an amount", line=amt.sourceline, field="Amt", value=text)
            currency = bank.check_currency(path, amt.get("Ccy"), line=amt.sourceline, field="Amt/@Ccy")
            if currency != signed.currency:
                return None  # original-currency amounts: the entry's own amount is the booked one
            ind = _text(tx, "CdtDbtInd") or ("CRDT" if signed.value >= 0 else "DBIT")
            amounts.append((tx, Amount(Decimal(text) if ind == "CRDT" else -Decimal(text), currency)))
        total = sum((a.value for _, a in amounts), Decimal(0))
        if total != signed.value:
            raise ControlTotalError(path, f"the entry's {len(txs)} transactions add up to {total} "
                                          f"{signed.currency}, the entry says {signed.value}",
                                    line=ntry.sourceline, field="Ntry/Amt", value=str(abs(signed.value)))
        return amounts

    def _booking(self, path, ntry, created: datetime | None) -> tuple[date, datetime | None]:
        for name in ("BookgDt", "ValDt"):
            node = _kid(ntry, name)
            if node is not None and len(node):
                when = _kid(node, "DtTm")
                if when is not None:
                    at = _datetime(path, when)
                    return bank.utc_and_day(at.date(), at, self.tz)[1], at
                day = _when(path, node)
                if day is not None:
                    return day, None
        if created is not None:  # the day only: the message time is not the booking time
            return bank.utc_and_day(created.date(), created, self.tz)[1], None
        raise ParseError(path, "entry has no booking date (BookgDt), value date (ValDt) or message date (CreDtTm)",
                         line=ntry.sourceline)

    def _same_currency(self, path, ntry, signed: Amount, balances) -> None:
        for code in ("OPBD", "PRCD", "CLBD"):
            if code in balances and balances[code][1].currency != signed.currency:
                raise ControlTotalError(path, f"entry is in {signed.currency}, the {code} balance in "
                                              f"{balances[code][1].currency}", line=ntry.sourceline, field="Amt/@Ccy",
                                        value=signed.currency)

    def _balance_currencies(self, path, balances) -> None:
        opening = balances.get("OPBD") or balances.get("PRCD")
        closing = balances.get("CLBD")
        if opening is not None and closing is not None and opening[1].currency != closing[1].currency:
            o_code = "OPBD" if "OPBD" in balances else "PRCD"
            raise ControlTotalError(path, f"closing balance CLBD is in {closing[1].currency}, the opening balance "
                                          f"{o_code} in {opening[1].currency}", line=_kid(closing[0], "Amt").sourceline,
                                    field="Bal/Amt/@Ccy", value=closing[1].currency)

    def _check_balances(self, path, st, st_id, balances, booked_total: Decimal, count: int) -> None:
        opening = balances.get("OPBD") or balances.get("PRCD")
        closing = balances.get("CLBD")
        if opening is None or closing is None:
            return
        (o_bal, o, _), (c_bal, c, _) = opening, closing
        o_el, c_el = _kid(o_bal, "Amt"), _kid(c_bal, "Amt")  # name the amounts' lines
        o_code = "OPBD" if "OPBD" in balances else "PRCD"
        if o.value + booked_total != c.value:
            raise ControlTotalError(
                path, f"statement {st_id}: opening balance {o_code} {o.value} {o.currency} (line {o_el.sourceline}) "
                      f"plus the booked entries ({booked_total:+}) is {o.value + booked_total}, but the closing "
                      f"balance CLBD says {c.value}", line=c_el.sourceline, field="CLBD", value=str(c.value))

    def _check_summary(self, path, st, entries) -> None:
        summary = _kid(st, "TxsSummry")
        if summary is None:
            return
        stated = _text(summary, "TtlNtries", "NbOfNtries")
        if stated is not None and stated != str(len(entries)):
            raise ControlTotalError(path, f"transaction summary counts {stated} entries, the statement has "
                                          f"{len(entries)}", line=summary.sourceline, field="TtlNtries/NbOfNtries",
                                    value=stated)
        net = _kid(summary, "TtlNtries", "TtlNetNtry")
        if net is not None:
            text = _text(net, "Amt") or ""
            if not AMOUNT.fullmatch(text):
                raise ParseError(path, "not an amount", line=net.sourceline, field="TtlNetNtry/Amt", value=text)
            value = Decimal(text) if _text(net, "CdtDbtInd") != "DBIT" else -Decimal(text)
            actual = sum((self._amount(path, e).value for e in entries), Decimal(0))
            if value != actual:
                raise ControlTotalError(path, f"transaction summary says a net {value}, the entries add up to {actual}",
                                        line=net.sourceline, field="TtlNetNtry", value=text)


# -- helpers ---------------------------------------------------------------------------------

def _is_camt(raw: bytes) -> bool:
    head = sniff_text(raw[:4096])
    return head.lstrip().startswith("<") and bool(SIGNATURE.search(head))


def _datetime(path, node) -> datetime | None:
    if node is None or not (node.text or "").strip():
        return None
    text = node.text.strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ParseError(path, "not an ISO 8601 date-time", line=node.sourceline,
                         field=etree.QName(node).localname, value=text) from None


def _when(path, node) -> date | None:
    """A DateAndDateTimeChoice (`Dt` or `DtTm`) as a date (a date-time's own calendar date)."""
    if node is None:
        return None
    dt = _kid(node, "Dt")
    if dt is not None and (dt.text or "").strip():
        try:
            return date.fromisoformat(dt.text.strip()[:10])
        except ValueError:
            raise ParseError(path, "not an ISO 8601 date", line=dt.sourceline, field="Dt",
                             value=dt.text.strip()) from None
    at = _datetime(path, _kid(node, "DtTm"))
    return at.date() if at else None


def _txn_id(tx, entry_ref: str | None) -> str | None:
    if tx is not None:
        for name in ("AcctSvcrRef", "TxId", "UETR"):
            value = _text(tx, "Refs", name)
            if value:
                return value
    return entry_ref


def _order_id(tx) -> str | None:
    if tx is None:
        return None
    for strd in (s for r in _kids(tx, "RmtInf") for s in _kids(r, "Strd")):
        ref = _text(strd, "CdtrRefInf", "Ref")
        if ref:
            return ref
    e2e = _text(tx, "Refs", "EndToEndId")
    return e2e if e2e and e2e.upper() not in NOT_PROVIDED else None


def _counterparty(tx, signed: Decimal) -> str | None:
    """The other side: who paid us (debtor) for a credit, whom we paid (creditor) for a debit."""
    if tx is None:
        return None
    parties = _kid(tx, "RltdPties")
    roles = ("Dbtr", "UltmtDbtr") if signed >= 0 else ("Cdtr", "UltmtCdtr")
    for role in roles:
        for path in (("Nm",), ("Pty", "Nm"), ("Agt", "FinInstnId", "Nm")):
            name = _text(parties, role, *path)
            if name:
                return bank.clean(name)
    return None


def _memo(tx) -> str | None:
    if tx is None:
        return None
    parts: list[str] = []
    for rmt in _kids(tx, "RmtInf"):
        parts += [u.text.strip() for u in _kids(rmt, "Ustrd") if u.text and u.text.strip()]
        for strd in _kids(rmt, "Strd"):
            parts += [a.text.strip() for a in _kids(strd, "AddtlRmtInf") if a.text and a.text.strip()]
    info = _text(tx, "AddtlTxInf")
    if info:
        parts.append(info)
    return bank.clean(" | ".join(dict.fromkeys(parts))) if parts else None

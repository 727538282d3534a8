"""Digest cards: many small breaks of one merchant, source and day as one card, with one
button that approves the auto-adjustable ones (each through the normal workflow).

The button carries only the id of an `alert_digest` row, which lists the breaks the card
showed and the version of each, so a click approves exactly what was on the card: a break
that changed since (approved elsewhere, re-run) is not approved by it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.cards import ALERT_WORDS, TITLES, TITLES_ZH, Button, Card
from core.config import Config
from core.money import display, to_minor
from models.tables import AlertDigest, Break


@dataclass(frozen=True, order=True)
class DigestKey:
    merchant_id: str
    source: str
    day: date

    @property
    def card_key(self) -> str:
        return f"digest:{self.merchant_id}:{self.source}:{self.day.isoformat()}"


def auto_adjustable(cfg: Config, b: Break) -> bool:
    """What the policy would adjust by itself: an auto type, a difference below the
    auto-adjust threshold, one approver enough, nothing muted."""
    limit = to_minor(cfg.tolerance.auto_adjust_below, b.currency)
    two = to_minor(cfg.chat.two_approvers_from, b.currency)
    return (b.status == "open" and b.severity != "muted" and b.type in cfg.policy.auto_types
            and 0 < abs(b.difference) < min(limit, two))


def _members_row(s: Session, key: DigestKey, members: list[tuple[int, int]]) -> AlertDigest:
    text = json.dumps(members)
    digest = hashlib.sha256(text.encode()).hexdigest()
    q = select(AlertDigest).where(AlertDigest.card_key == key.card_key, AlertDigest.members_hash == digest)
    row = s.execute(q).scalars().first()
    if row is None:
        row = AlertDigest(card_key=key.card_key, merchant_id=key.merchant_id, members=text, members_hash=digest)
        s.add(row)
        try:
            s.commit()
        except IntegrityError:  # written by a concurrent pass a moment ago
            s.rollback()
            row = s.execute(q).scalars().one()
    return row


def digest_card(cfg: Config, s: Session, key: DigestKey, breaks: list[Break], lang: str, top: int) -> Card:
    """The card for `breaks` (open, small) of one merchant, source and day; with none, the
    card's final state ("nothing open")."""
    w = ALERT_WORDS[lang]
    titles = TITLES_ZH if lang == "zh" else TITLES
    fmt = dict(merchant=key.merchant_id, source=key.source, day=key.day.isoformat())
    if not breaks:
        return Card(key=key.card_key, title=w["digest_done"].format(**fmt), severity="info", fields=[],
                    text=w["nothing"], evidence=[])
    by_type: dict[str, list[Break]] = defaultdict(list)
    for b in breaks:
        by_type[b.type].append(b)
    currency = breaks[0].currency
    fields = [(titles.get(t, t), w["digest_line"].format(n=len(bs), total=display(sum(b.difference for b in bs),
                                                                                   currency)))
              for t, bs in sorted(by_type.items())]
    largest = sorted(breaks, key=lambda b: (-abs(b.difference), b.id))
    lines = [w["largest"]] + [f"#{b.id} {titles.get(b.type, b.type)} {b.order_id or b.txn_id or ''} "
                              f"{display(b.difference, b.currency)}" for b in largest[:top]]
    if len(largest) > top:
        lines.append(w["more"].format(n=len(largest) - top))
    auto = sorted((b for b in breaks if auto_adjustable(cfg, b)), key=lambda b: b.id)
    buttons = []
    if auto:
        row = _members_row(s, key, [[b.id, b.version] for b in auto])
        total = display(sum(abs(b.difference) for b in auto), currency)
        buttons.append(Button("approve_all", w["approve_all"].format(n=len(auto)), f"{row.id}:{len(auto)}",
                              confirm=w["approve_all_ask"].format(n=len(auto), total=total), style="primary"))
    return Card(key=key.card_key, title=w["digest"].format(n=len(breaks), **fmt), severity="warning",
                fields=fields, text="\n".join(lines), evidence=[], buttons=buttons)


def members(s: Session, digest_id: int) -> tuple[AlertDigest | None, list[tuple[int, int]]]:
    row = s.get(AlertDigest, digest_id)
    return row, ([tuple(m) for m in json.loads(row.members)] if row is not None else [])

"""Users, their chat identities, and what each may do.

A user has a role (viewer < reviewer < approver < admin), a merchant scope ("*" or a list
of merchant ids) and an optional approval limit (decimal major units of the break's
currency). A platform account (platform + its user id) maps to one user; the mapping is
made by `recon users link` or by the user typing `/recon link CODE` in the chat.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from models.db import get_engine
from models.tables import ChatIdentity, LinkCode, User

ROLES = ("viewer", "reviewer", "approver", "admin")
PLATFORMS = ("console", "slack", "telegram", "wecom")


class UserError(Exception):
    """A user-management request that cannot be done, phrased for the person asking."""


@dataclass(frozen=True)
class Actor:
    """A user as the workflow sees them (detached from any session)."""

    id: int
    name: str
    role: str
    merchants: tuple[str, ...]  # ("*",) = every merchant
    approval_limit: Decimal | None

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_see(self, merchant_id: str) -> bool:
        return "*" in self.merchants or merchant_id in self.merchants

    def scope(self, configured: list[str]) -> list[str]:
        return [m for m in configured if self.may_see(m)]


def _actor(u: User) -> Actor:
    limit = Decimal(u.approval_limit) if u.approval_limit is not None else None
    return Actor(u.id, u.name, u.role, tuple(x for x in u.merchants.split(",") if x), limit)


def _limit(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise UserError(f"approval limit {value!r} is not a decimal amount (e.g. 5000.00)") from None
    if d < 0 or not d.is_finite():
        raise UserError(f"approval limit {value!r} must be zero or more")
    return str(d)


def add_user(url: str, name: str, role: str, merchants: str = "*", approval_limit: str | None = None) -> Actor:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    scope = ",".join(sorted({m.strip() for m in merchants.split(",") if m.strip()})) or "*"
    with Session(get_engine(url)) as s:
        u = User(name=name, role=role, merchants=scope, approval_limit=_limit(approval_limit))
        s.add(u)
        try:
            s.commit()
        except IntegrityError:
            raise UserError(f"user {name!r} exists already") from None
        s.refresh(u)
        return _actor(u)


def list_users(url: str) -> list[tuple[Actor, list[str]]]:
    """Every user with their linked identities ("platform:id")."""
    with Session(get_engine(url)) as s:
        users = list(s.execute(select(User).order_by(User.name)).scalars())
        ids = s.execute(select(ChatIdentity).order_by(ChatIdentity.platform, ChatIdentity.platform_user_id)).scalars()
        linked: dict[int, list[str]] = {}
        for i in ids:
            linked.setdefault(i.user_id, []).append(f"{i.platform}:{i.platform_user_id}")
        return [(_actor(u), linked.get(u.id, [])) for u in users]


def get_user(url: str, name: str) -> Actor:
    with Session(get_engine(url)) as s:
        u = s.execute(select(User).where(User.name == name)).scalars().first()
        if u is None:
            raise UserError(f"no user {name!r} (add one with: recon users add {name} --role reviewer)")
        return _actor(u)


def user_by_id(url: str, user_id: int) -> Actor | None:
    with Session(get_engine(url)) as s:
        u = s.get(User, user_id)
        return _actor(u) if u else None


def identify(url: str, platform: str, platform_user_id: str) -> Actor | None:
    """The reconbot user behind a platform account, or None when it is not linked."""
    with Session(get_engine(url)) as s:
        u = s.execute(select(User).join(ChatIdentity, ChatIdentity.user_id == User.id).where(
            ChatIdentity.platform == platform, ChatIdentity.platform_user_id == platform_user_id)).scalars().first()
        return _actor(u) if u else None


def link_identity(url: str, name: str, platform: str, platform_user_id: str) -> None:
    if platform not in PLATFORMS:
        raise UserError(f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
    user = get_user(url, name)
    with Session(get_engine(url)) as s:
        s.add(ChatIdentity(platform=platform, platform_user_id=platform_user_id, user_id=user.id))
        try:
            s.commit()
        except IntegrityError:
            raise UserError(f"{platform}:{platform_user_id} is linked to a user already") from None


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def new_link_code(url: str, name: str, minutes: int) -> str:
    """A one-time code the user types as `/recon link CODE`; only its hash is stored."""
    user = get_user(url, name)
    code = secrets.token_hex(4).upper()  # 8 hex digits: easy to type, 2^32 guesses within minutes
    with Session(get_engine(url)) as s:
        s.add(LinkCode(code_hash=_hash(code), user_id=user.id,
                       expires_at=datetime.now(timezone.utc) + timedelta(minutes=minutes)))
        s.commit()
    return code


def redeem_link_code(url: str, code: str, platform: str, platform_user_id: str) -> Actor:
    """Link the platform account to the code's user; a code works once, before it expires."""
    now = datetime.now(timezone.utc)
    with Session(get_engine(url)) as s:
        # compare-and-set on used_at: two redemptions of one code, one wins
        won = s.execute(update(LinkCode).where(LinkCode.code_hash == _hash(code), LinkCode.used_at.is_(None),
                                               LinkCode.expires_at > now).values(used_at=now)).rowcount
        if won != 1:
            raise UserError("that code is unknown, used or expired: ask an admin for a new one")
        user_id = s.execute(select(LinkCode.user_id).where(LinkCode.code_hash == _hash(code))).scalar_one()
        existing = s.execute(select(ChatIdentity).where(
            ChatIdentity.platform == platform, ChatIdentity.platform_user_id == platform_user_id)).scalars().first()
        if existing is not None:
            s.rollback()
            raise UserError("this account is linked to a user already")
        s.add(ChatIdentity(platform=platform, platform_user_id=platform_user_id, user_id=user_id))
        s.commit()
        return _actor(s.get(User, user_id))

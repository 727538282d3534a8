"""The record store: every table reconbot keeps, as SQLModel classes.

Money is integer minor units (fen, cents) beside an ISO currency code; every timestamp
is stored in UTC; every record keeps the file and line it came from.
Schema changes go through Alembic (`models/migrations`), never `create_all` in production.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc_column(**kw) -> Column:
    return Column(DateTime(timezone=True), **kw)


class Merchant(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str
    timezone: str = Field(max_length=64)
    currency: str = Field(max_length=3)


class Ledger(SQLModel, table=True):
    """One side (internal books or channel statement) of one source of one merchant.

    Records point at a ledger instead of repeating three text columns on every row,
    which keeps the bulk insert of a million rows narrow.
    """

    __table_args__ = (UniqueConstraint("merchant_id", "source", "side", name="uq_ledger"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(foreign_key="merchant.id", max_length=64)
    source: str = Field(max_length=64)
    side: str = Field(max_length=16)  # internal | channel


class StatementFile(SQLModel, table=True):
    __tablename__ = "statement_file"
    __table_args__ = (UniqueConstraint("merchant_id", "sha256", name="uq_statement_file_sha"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(foreign_key="merchant.id", max_length=64)
    source: str = Field(max_length=64)  # the configured source name, e.g. "wechatpay"
    side: str = Field(max_length=16)
    format: str = Field(max_length=64)  # e.g. "wechatpay.trade_bill"
    path: str
    sha256: str = Field(max_length=64)
    business_day: Optional[date] = None
    row_count: int
    new_rows: int
    control_totals: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    # rows this file delivered again (already stored from another row): JSON list, for the
    # duplicate_record data-quality notes
    duplicates: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    ingested_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class Record(SQLModel, table=True):
    """One normalised statement row; both sides share this schema.

    Written in bulk by `core.store` (ADBC), read back as Arrow tables by the engine.
    `ref` is the row's identity inside its ledger (channel txn / refund id, or the
    merchant order id on the internal side): the same transaction in two overlapping
    files is stored once.
    """

    __table_args__ = (
        UniqueConstraint("ledger_id", "kind", "ref", name="uq_record_identity"),
        Index("ix_record_ledger_day", "ledger_id", "business_day"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    ledger_id: int = Field(foreign_key="ledger.id")
    file_id: int = Field(foreign_key="statement_file.id")
    line: int
    kind: str = Field(max_length=16)  # payment | refund | fee | payout | adjustment
    ref: str
    txn_id: Optional[str] = None
    order_id: Optional[str] = None
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))  # signed minor units
    currency: str = Field(max_length=3)
    fee: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    discount: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=32)
    occurred_at: datetime = Field(sa_column=_utc_column(nullable=False))
    business_day: date
    payer: Optional[str] = None
    memo: Optional[str] = None


class ReconRun(SQLModel, table=True):
    __tablename__ = "recon_run"
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(foreign_key="merchant.id", max_length=64)
    business_day: date
    started_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    finished_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))
    status: str = Field(default="running", max_length=16)  # running | done | failed
    stats: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON


class Break(SQLModel, table=True):
    """A typed difference between the two sides, with the evidence for it.

    `key` is stable across re-runs (source, type, kind and the anchoring record's ref),
    so re-running a day updates a break instead of adding one.
    """

    __table_args__ = (
        UniqueConstraint("merchant_id", "key", name="uq_break_key"),
        Index("ix_break_day", "merchant_id", "business_day"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(foreign_key="merchant.id", max_length=64)
    business_day: date
    source: str = Field(max_length=64)
    type: str = Field(max_length=32)
    status: str = Field(max_length=16)  # open | in_transit | note | cleared | adjusted | resolved
    severity: str = Field(default="normal", max_length=16)  # note | normal | urgent
    key: str
    order_id: Optional[str] = None
    txn_id: Optional[str] = None
    internal_amount: Optional[int] = Field(default=None, sa_column=Column(BigInteger))
    channel_amount: Optional[int] = Field(default=None, sa_column=Column(BigInteger))
    difference: int = Field(sa_column=Column(BigInteger, nullable=False))  # channel - internal
    currency: str = Field(max_length=3)
    rule: str = Field(max_length=64)
    tolerance: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))  # minor units allowed
    explanation: str
    score: Optional[float] = None  # fuzzy score of a suggested match
    anomaly_score: Optional[float] = None  # Isolation Forest score (0..1) of its records, see core/anomaly
    evidence: str = Field(sa_column=Column(Text, nullable=False))  # JSON [{side, file, line}]
    first_run_id: int = Field(foreign_key="recon_run.id")
    last_run_id: int = Field(foreign_key="recon_run.id")
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class Adjustment(SQLModel, table=True):
    """A balanced two-leg entry that books a break's difference (one per break)."""

    __table_args__ = (UniqueConstraint("break_id", name="uq_adjustment_break"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    break_id: int = Field(foreign_key="break.id")
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))  # positive; the legs carry the sign
    currency: str = Field(max_length=3)
    debit_account: str = Field(max_length=128)
    credit_account: str = Field(max_length=128)
    reason: str
    status: str = Field(max_length=16)  # proposed | applied | approved | rejected
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class AuditEvent(SQLModel, table=True):
    """Append-only: who did what to which object, when."""

    __tablename__ = "audit_event"
    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    subject_type: str = Field(max_length=32)
    subject_id: str = Field(max_length=128)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON


class AnomalyModel(SQLModel, table=True):
    """One trained Isolation Forest: the file it lives in and what it was trained on.

    `scope` is a merchant id, or "*" for the pooled model used by merchants with little
    history. The newest version of a scope is the one in use.
    """

    __tablename__ = "anomaly_model"
    __table_args__ = (UniqueConstraint("scope", "version", name="uq_anomaly_model_version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    scope: str = Field(max_length=64)
    version: int
    path: str
    sha256: str = Field(max_length=64)
    window_first: date
    window_last: date
    rows: int
    features: str = Field(sa_column=Column(Text, nullable=False))  # JSON list, in column order
    threshold: float  # alert at or above this score
    urgent_threshold: float  # and urgent at or above this one
    target_alert_rate: float
    trained_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class AnomalyScore(SQLModel, table=True):
    """The anomaly score of a channel record (written in bulk after each run)."""

    __tablename__ = "anomaly_score"
    record_id: int = Field(primary_key=True, foreign_key="record.id")
    model_id: int = Field(foreign_key="anomaly_model.id")
    score: float

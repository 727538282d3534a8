"""The record store: every table reconbot keeps, as SQLModel classes.

Money is integer minor units (fen, cents) beside an ISO currency code; every timestamp
is stored in UTC; every record keeps the file and line it came from.
Schema changes go through Alembic (`models/migrations`), never `create_all` in production.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Text, UniqueConstraint
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
    """One statement as delivered, and where its records are.

    A file's new records are one run of record ids, [first_record_id, last_record_id]
    (exactly its rows on SQLite, which has one writer; on PostgreSQL other files' rows may
    fall inside, hence every reader also says `record.file_id = statement_file.id`), and their
    business days lie in [first_day, last_day]. Readers find a ledger's day through these
    (`core.store.records_of_days`) instead of an index on record by day, which cost the
    bulk insert a third of its time. NULL ids: the file stored no new row.
    """

    __tablename__ = "statement_file"
    __table_args__ = (UniqueConstraint("merchant_id", "sha256", name="uq_statement_file_sha"),
                      Index("ix_statement_file_days", "merchant_id", "side", "last_day"))
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
    first_record_id: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_record_id: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    first_day: Optional[date] = None
    last_day: Optional[date] = None


class Record(SQLModel, table=True):
    """One normalised statement row; both sides share this schema.

    Written in bulk by `core.store` (ADBC), read back as Arrow tables by the engine.
    `ref` is the row's identity inside its ledger (channel txn / refund id, or the
    merchant order id on the internal side): the same transaction in two overlapping
    files is stored once.
    """

    __table_args__ = (
        UniqueConstraint("ledger_id", "kind", "ref", name="uq_record_identity"),
        # no index by day: a day's records are found through statement_file's id ranges
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
    status: str = Field(default="running", max_length=16)  # running | done | failed | realtime (a notification check)
    stats: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON


# Optimistic locking: every ORM update of a break says WHERE version = <the version read>,
# so a run and a chat action racing on one break cannot overwrite each other (the loser
# gets StaleDataError). The code sets the new version itself (version_id_generator=False).
_break_version = Column("version", Integer, nullable=False, default=1)


class Break(SQLModel, table=True):
    """A typed difference between the two sides, with the evidence for it.

    `key` is stable across re-runs (source, type, kind and the anchoring record's ref),
    so re-running a day updates a break instead of adding one.
    """

    __table_args__ = (
        UniqueConstraint("merchant_id", "key", name="uq_break_key"),
        Index("ix_break_day", "merchant_id", "business_day"),
    )
    __mapper_args__ = {"version_id_col": _break_version, "version_id_generator": False}
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
    version: int = Field(default=1, sa_column=_break_version)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    # the chat workflow (bot/actions.py): who looks at it, and until when it is snoozed
    assignee_id: Optional[int] = Field(default=None, foreign_key="app_user.id")
    snoozed_until: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))

    def revise(self, values: dict, run_id: int, now: datetime) -> bool:
        """What a run (the engine's, the anomaly scoring, a real-time check) now says about this
        break: the fields of `values` that differ are set, and any change is a new version (the
        version a click's compare-and-set checks, bot/actions.py). -> whether anything changed."""
        changed = {k: v for k, v in values.items() if getattr(self, k) != v}
        for k, v in changed.items():
            setattr(self, k, v)
        if changed:
            self.version += 1
            self.updated_at, self.last_run_id = now, run_id
        return bool(changed)


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
    # chat actions: where the click came from, the amount acted on (minor units) and the
    # SHA-256 of the exact inbound request (ties the event to the signed delivery)
    platform: Optional[str] = Field(default=None, max_length=16)
    amount: Optional[int] = Field(default=None, sa_column=Column(BigInteger))
    request_hash: Optional[str] = Field(default=None, max_length=64)


class User(SQLModel, table=True):
    """A person who may act on breaks ("user" is a reserved word in PostgreSQL)."""

    __tablename__ = "app_user"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    role: str = Field(max_length=16)  # viewer | reviewer | approver | admin
    merchants: str = Field(default="*", max_length=1024)  # "*" or comma-separated merchant ids
    # largest adjustment this user may approve, decimal major units of the break's currency;
    # None: no limit
    approval_limit: Optional[str] = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class ChatIdentity(SQLModel, table=True):
    """A platform account (Slack user id, Telegram user id, WeCom userid) -> a reconbot user."""

    __tablename__ = "chat_identity"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", name="uq_chat_identity"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    platform_user_id: str = Field(max_length=128)
    user_id: int = Field(foreign_key="app_user.id")
    linked_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class LinkCode(SQLModel, table=True):
    """A one-time code for `/recon link CODE`; only its SHA-256 is kept."""

    __tablename__ = "link_code"
    code_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="app_user.id")
    expires_at: datetime = Field(sa_column=_utc_column(nullable=False))
    used_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))


class BreakApproval(SQLModel, table=True):
    """One approver's approval of a break's adjustment (two distinct ones above the threshold)."""

    __tablename__ = "break_approval"
    __table_args__ = (UniqueConstraint("break_id", "user_id", name="uq_break_approval"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    break_id: int = Field(foreign_key="break.id")
    user_id: int = Field(foreign_key="app_user.id")
    at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class AlertCard(SQLModel, table=True):
    """One live card per (logical card, route): a break's card, a digest, a late-statement
    notice. The alert pipeline's dedupe stage compares `shown_hash` with the card it would
    send now and queues an edit only when they differ; `message_id` is the platform's id of
    the message, set in the same transaction that marks its outbox row sent."""

    __tablename__ = "alert_card"
    __table_args__ = (UniqueConstraint("card_key", "channel", "target", name="uq_alert_card"),
                      Index("ix_alert_card_break", "break_id"))
    id: Optional[int] = Field(default=None, primary_key=True)
    card_key: str = Field(max_length=160)  # break:12 | digest:<merchant>:<source>:<day> | ...
    channel: str = Field(max_length=16)  # registry kind
    target: str = Field(max_length=256)  # the route's stored target (a robot's URL only as a hash)
    merchant_id: str = Field(max_length=64)
    break_id: Optional[int] = Field(default=None, foreign_key="break.id")
    lang: str = Field(default="en", max_length=8)
    message_id: Optional[str] = Field(default=None, max_length=256)  # None until the send is recorded
    shown_hash: str = Field(max_length=64)  # SHA-256 of the card last queued for this message
    state: str = Field(default="live", max_length=16)  # live | closed (final state shown)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class Outbox(SQLModel, table=True):
    """Every message to send (a new card or an edit), written and committed before it is
    sent; bot/outbox.py claims, sends and records each row once."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("idem_key", name="uq_outbox_idem_key"),
                      Index("ix_outbox_due", "state", "next_attempt_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    idem_key: str = Field(max_length=255)
    op: str = Field(max_length=8)  # send | update
    channel: str = Field(max_length=16)
    target: str = Field(max_length=256)  # stored target, as in alert_card
    card_key: str = Field(max_length=160)
    break_id: Optional[int] = Field(default=None, foreign_key="break.id")
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the card, JSON
    state: str = Field(default="pending", max_length=16)  # pending | sending | sent | failed | superseded
    attempts: int = 0
    # claimed by a process that vanished mid-send: the platform may or may not have the
    # message, so the next try looks for it first where the platform allows (Slack)
    in_doubt: bool = False
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    last_error: Optional[str] = Field(default=None, sa_column=Column(Text))
    claimed_by: Optional[str] = Field(default=None, max_length=64)
    claimed_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))
    message_id: Optional[str] = Field(default=None, max_length=256)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    sent_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))


class AlertRoute(SQLModel, table=True):
    """A route the outbox disabled after a permanent error (bot removed, chat not found)."""

    __tablename__ = "alert_route"
    channel: str = Field(primary_key=True, max_length=16)
    target: str = Field(primary_key=True, max_length=256)
    disabled_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class AlertDigest(SQLModel, table=True):
    """What a digest card's bulk-approval button stands for: the auto-adjustable breaks it
    listed, each at the version the card showed (the button carries only this row's id)."""

    __tablename__ = "alert_digest"
    __table_args__ = (UniqueConstraint("card_key", "members_hash", name="uq_alert_digest"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    card_key: str = Field(max_length=160)
    merchant_id: str = Field(max_length=64)
    members: str = Field(sa_column=Column(Text, nullable=False))  # JSON [[break id, version], ...]
    members_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class Silence(SQLModel, table=True):
    """A time-boxed silence: matching breaks get no new card (and no escalation) until it ends."""

    __tablename__ = "silence"
    __table_args__ = (Index("ix_silence_merchant", "merchant_id", "ends_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(max_length=64)
    source: Optional[str] = Field(default=None, max_length=64)  # None: every source
    type: Optional[str] = Field(default=None, max_length=32)  # None: every break type
    business_day: Optional[date] = None  # None: every day
    starts_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    ends_at: datetime = Field(sa_column=_utc_column(nullable=False))
    author: str = Field(max_length=128)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    ended_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))  # ended early
    ended_by: Optional[str] = Field(default=None, max_length=128)


class Escalation(SQLModel, table=True):
    """One escalation level of one break, due at a time; kept as a row so a restart keeps it."""

    __tablename__ = "escalation"
    __table_args__ = (UniqueConstraint("break_id", "level", name="uq_escalation"),
                      Index("ix_escalation_due", "state", "due_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    break_id: int = Field(foreign_key="break.id")
    level: int  # 1, 2, ... (alerts.escalation[level - 1])
    due_at: datetime = Field(sa_column=_utc_column(nullable=False))
    state: str = Field(default="pending", max_length=16)  # pending | sent | cancelled
    done_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))
    reason: Optional[str] = Field(default=None, max_length=128)  # why it was cancelled


class InboundSeen(SQLModel, table=True):
    """Replay protection: the identity of every accepted inbound request, for a while."""

    __tablename__ = "inbound_seen"
    platform: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=64)
    seen_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class RejectedFile(SQLModel, table=True):
    """A statement file that failed ingest (or a pulled download that failed its hash).

    Kept so that completeness can say "rejected: <reason>" instead of "not arrived": a
    rejected file counts as not arrived. One row per file content (re-rejecting updates it).
    A log like `audit_event`: no foreign key, so a rejection never creates a merchant row.
    """

    __tablename__ = "rejected_file"
    __table_args__ = (
        UniqueConstraint("merchant_id", "sha256", name="uq_rejected_file_sha"),
        Index("ix_rejected_file_day", "merchant_id", "source", "business_day"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    merchant_id: str = Field(max_length=64)
    source: Optional[str] = Field(default=None, max_length=64)  # None: no configured source claimed it
    business_day: Optional[date] = None  # None: the day was neither given nor readable
    path: str
    sha256: str = Field(max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    rejected_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


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


class JobRun(SQLModel, table=True):
    """One run of a scheduled job, claimed before any work (core/schedule.py).

    The unique (job_id, scheduled_for) key is the claim: every `recon serve` / `recon
    scheduler` process on one database may fire the same job at the same moment, and only
    the one whose INSERT succeeds does the work. The row then says how it went.
    """

    __tablename__ = "job_run"
    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for", name="uq_job_run_claim"),
        Index("ix_job_run_started", "started_at"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=191)  # the APScheduler job id, e.g. "pull:demo-shop:wechatpay"
    scheduled_for: datetime = Field(sa_column=_utc_column(nullable=False))  # the run time it was fired for
    kind: str = Field(max_length=16)  # pull | reconcile | hourly | digest | retrain | escalate | drain
    attempt: int = 0  # 0 = the scheduled run; 1.. = retries
    claimed_by: str = Field(max_length=128)  # host:pid of the process that does the work
    started_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    finished_at: Optional[datetime] = Field(default=None, sa_column=_utc_column(nullable=True))
    status: str = Field(default="running", max_length=16)  # running | done | waiting | late | failed
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))

"""Tables, the database session and migrations. Depends on nothing else in reconbot."""

from models.tables import (  # noqa: F401
    Adjustment,
    AlertCard,
    AlertDigest,
    AlertRoute,
    AuditEvent,
    Break,
    BreakApproval,
    ChatIdentity,
    Escalation,
    InboundSeen,
    Ledger,
    LinkCode,
    Merchant,
    Outbox,
    ReconRun,
    RejectedFile,
    Record,
    Silence,
    StatementFile,
    User,
)

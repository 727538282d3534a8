"""Tables, the database session and migrations. Depends on nothing else in reconbot."""

from models.tables import (  # noqa: F401
    Adjustment,
    AuditEvent,
    Break,
    BreakApproval,
    ChatIdentity,
    ChatMessage,
    InboundSeen,
    Ledger,
    LinkCode,
    Merchant,
    ReconRun,
    RejectedFile,
    Record,
    StatementFile,
    User,
)

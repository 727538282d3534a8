"""A reviewer's verdict on an anomaly alert: `expected` (ordinary after all).

The break becomes `expected` (runs never touch it again, so the same transaction is not
alerted twice), the decision is an audit event, and the next training keeps the record
among the ordinary rows instead of leaving it out with the anomalies (see `training.flagged`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlmodel import Session

from models.db import get_engine
from models.tables import AuditEvent, Break


class FeedbackError(Exception):
    pass


def mark_expected(url: str, break_id: int, actor: str, note: str = "") -> Break:
    with Session(get_engine(url)) as s:
        b = s.get(Break, break_id)
        if b is None:
            raise FeedbackError(f"break #{break_id} does not exist")
        if b.type != "anomaly":
            raise FeedbackError(f"break #{break_id} is a {b.type}, not an anomaly alert")
        if b.status == "expected":
            return b  # the same click twice applies once
        if b.status != "open":
            raise FeedbackError(f"break #{break_id} is {b.status}, only an open alert can be marked expected")
        b.status = "expected"
        b.version += 1
        b.updated_at = datetime.now(timezone.utc)
        s.add(AuditEvent(actor=actor, action="anomaly_expected", subject_type="break", subject_id=str(b.id),
                         detail=json.dumps({"key": b.key, "score": b.anomaly_score, "note": note,
                                            "version": b.version}, ensure_ascii=False)))
        s.commit()
        s.refresh(b)
        return b

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, new_id, utcnow
from app.events.recorder import track


class ChangeState(StrEnum):
    PENDING = "pending"  # waiting for an approver
    APPROVED = "approved"  # approved, being applied (within the approval's transaction)
    REJECTED = "rejected"
    EXPIRED = "expired"  # no answer within BERTH_CHANGE_REQUEST_TTL_SECONDS
    WAITING_WINDOW = "waiting_window"  # approved outside the project's windows: `not_before`
    APPLIED = "applied"
    FAILED = "failed"  # approved, but the change itself was refused (`error` says why)


class ChangeRequest(Base):
    """A write to a protected project's services, stacks or secrets, held until another
    principal approves it. `payload` is the request as submitted (a secret's value is kept
    apart, encrypted, in `value_encrypted`); `plan` is what it would start, stop and roll when
    submitted. Once approved it is applied as `author`, through the kind's one code path
    (app/changes/kinds.py)."""

    __tablename__ = "change_requests"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    # What it changes: `services/<id>`; for a create, the type and the name asked for.
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[str | None] = mapped_column(String(26))
    target_name: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    value_encrypted: Mapped[str | None] = mapped_column(Text)
    # The If-Match the author sent, checked again when the change is applied: an approver
    # approves a plan made against that version, not whatever the target became since.
    if_match: Mapped[str | None] = mapped_column(String(200))
    plan: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True, default=ChangeState.PENDING)
    author_token_id: Mapped[str] = mapped_column(String(26))
    author: Mapped[str] = mapped_column(String(200))
    approver_token_id: Mapped[str | None] = mapped_column(String(26))
    approver: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)  # the rejection's
    break_glass: Mapped[str | None] = mapped_column(Text)  # the reason a window was bypassed
    error: Mapped[str | None] = mapped_column(Text)
    # The operations the applied change queued (a rotated secret rolls several services).
    operations: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    decided_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)


track(ChangeRequest, "change", "kind", "state", "target_id", "version", state="state")

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


class Operation(Base):
    """A durable unit of work on a Docker host.

    Claimed with a lease (`lease_owner`, `lease_expires_at`); `lease_epoch` grows with every
    claim and fences writes: a worker whose lease was taken over can no longer change the row.
    A `running` operation whose handler waits on something else holds no lease: it is due
    again at `deferred_until`, when any worker claims it.
    """

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_claim", "status", "run_after"),
        Index("ix_operations_lease", "status", "lease_expires_at"),
        Index("ix_operations_target", "target_type", "target_id"),
        project_page_index("operations"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    host_id: Mapped[str | None] = mapped_column(String(26), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)

    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    progress: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]

    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    lease_epoch: Mapped[int] = mapped_column(default=0)
    # Not indexed: it changes on every round of a wait, and the running rows it is looked for
    # among are few (found through ix_operations_lease's `status`).
    deferred_until: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(200))
    # An operation's history goes with its project (which is deleted only once empty).
    project_id: Mapped[str] = project_id_column(ondelete="CASCADE")
    version: Mapped[int] = mapped_column(default=1)


track(
    Operation,
    "operation",
    "kind",
    "status",
    "target_type",
    "target_id",
    "host_id",
    "error",
    "cancel_requested",
    "version",
    state="status",
)


class OperationLog(Base):
    """One line of an operation's own log (pull progress, build output, retries)."""

    __tablename__ = "operation_logs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("operations.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)

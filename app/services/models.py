from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, new_id, utcnow
from app.events.recorder import track


class Service(Base):
    """A replicated, declarative workload. `spec` is the spec of revision `revision`; the
    reconciler makes the hosts run `replicas` tasks of it and records how that goes."""

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    stack_id: Mapped[str | None] = mapped_column(String(26), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    revision: Mapped[int] = mapped_column(default=1)
    # Kept apart from the revisions: scaling is not a new revision and rolls nothing.
    replicas: Mapped[int] = mapped_column(default=1)
    removing: Mapped[bool] = mapped_column(default=False)

    status: Mapped[str] = mapped_column(String(16), default="converging")
    status_detail: Mapped[str | None] = mapped_column(Text)
    # A rollout in progress: {"phase": "updating"|"rolling_back"|"paused", "from": n, "to": n,
    # "started_at": ..., "failures": n, "next_batch_at": ...}; None when settled.
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Per slot: {"failures": n, "retry_at": iso} — restart backoff for tasks that keep dying.
    slots: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


track(
    Service,
    "service",
    "name",
    "stack_id",
    "revision",
    "replicas",
    "status",
    "status_detail",
    "removing",
    "version",
)


class ServiceRevision(Base):
    __tablename__ = "service_revisions"
    __table_args__ = (UniqueConstraint("service_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    revision: Mapped[int]
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))

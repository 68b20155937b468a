from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Dialect, ForeignKey, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from app.core.db import Base, JSONType, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track
from app.projects.quotas import Usage, count_usage_with, replicas_usage

E = TypeVar("E", bound=StrEnum)


class ServiceStatus(StrEnum):
    """Where a service stands, as the reconciler last found it (stored and shown as is)."""

    CONVERGING = "converging"
    RUNNING = "running"
    UPDATING = "updating"
    ROLLING_BACK = "rolling_back"
    PAUSED = "paused"
    DEGRADED = "degraded"
    REMOVING = "removing"


class RolloutPhase(StrEnum):
    UPDATING = "updating"
    ROLLING_BACK = "rolling_back"
    PAUSED = "paused"


class RolloutOutcome(StrEnum):
    """How the last rollout ended, kept while `status_detail` still reports it."""

    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"


class _EnumString(TypeDecorator[E]):
    """A plain string column (no schema change, no CHECK constraint) read back as an enum."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Service(Base):
    """A replicated, declarative workload. `spec` is the spec of revision `revision`; the
    reconciler makes the hosts run `replicas` tasks of it and records how that goes."""

    __tablename__ = "services"
    __table_args__ = (project_page_index("services"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    stack_id: Mapped[str | None] = mapped_column(String(26), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    revision: Mapped[int] = mapped_column(default=1)
    # Kept apart from the revisions: scaling is not a new revision and rolls nothing.
    replicas: Mapped[int] = mapped_column(default=1)
    removing: Mapped[bool] = mapped_column(default=False)

    status: Mapped[ServiceStatus] = mapped_column(
        _EnumString(ServiceStatus), default=ServiceStatus.CONVERGING
    )
    status_detail: Mapped[str | None] = mapped_column(Text)
    # Set with the detail that reports a finished rollout, so a caller asks this and never
    # parses the detail's text.
    outcome: Mapped[RolloutOutcome | None] = mapped_column(_EnumString(RolloutOutcome))
    # A rollout in progress: {"phase": "updating"|"rolling_back"|"paused", "from": n, "to": n,
    # "started_at": ..., "failures": n, "next_batch_at": ...}; None when settled.
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Per slot: {"failures": n, "retry_at": iso} — restart backoff for tasks that keep dying.
    slots: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    project_id: Mapped[str] = project_id_column()
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


def _replicas_usage(session: Session, project_id: str, except_services: frozenset[str]) -> Usage:
    """What a project's services take: each its desired replicas (placed or not yet)."""
    statement = select(Service.replicas, Service.spec["resources"]).where(
        Service.project_id == project_id, Service.removing.is_(False)
    )
    if except_services:
        statement = statement.where(Service.id.not_in(sorted(except_services)))
    used = Usage()
    for replicas, resources in session.execute(statement):
        used = used + replicas_usage(replicas, resources or {})
    return used


count_usage_with(_replicas_usage)


class ServiceRevision(Base):
    __tablename__ = "service_revisions"
    __table_args__ = (UniqueConstraint("service_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    revision: Mapped[int]
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The image as resolved when the revision was deployed (`repo@sha256:...`, or the image id
    # of one Berth built): replicas are created from it, so a moved tag changes nothing that
    # runs. None until resolved (a stack deploy before its replicas, a service's own converge on
    # its first pass: app/services/image_pin.py), and when it could not be: then the tag is
    # resolved where each replica pulls it.
    image_digest: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.db import Base, JSONType, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track
from app.projects.quotas import Usage, count_usage_with, set_aside


class Container(Base):
    """A container: its spec and desired state (Berth's), and its observed state (the host's).

    `managed` is False for containers Berth found on a host but did not create; those are
    listed, followed, and never changed.
    """

    __tablename__ = "containers"
    __table_args__ = (
        UniqueConstraint("host_id", "name"),
        Index("ix_containers_host_docker_id", "host_id", "docker_id"),
        # The list's filters, each with the key its pages are read in (`GET /containers?state=`,
        # `host_id=`, `service_id=`): a page is then read in index order, 51 rows, instead of
        # every row the filter matches sorted by id (a filter on `state` alone sorted all
        # 50,000 running containers for each page). Lookups by the column alone use them too.
        Index("ix_containers_host_id_id", "host_id", "id"),
        Index("ix_containers_service_id_id", "service_id", "id"),
        Index("ix_containers_state_id", "state", "id"),
        project_page_index("containers"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    host_id: Mapped[str] = mapped_column(String(26), ForeignKey("hosts.id", ondelete="CASCADE"))
    service_id: Mapped[str | None] = mapped_column(String(26))
    # For a service's task: which replica it is and which revision of the spec it runs.
    slot: Mapped[int | None]
    revision: Mapped[int | None]
    # When the reconciler first saw it running (and healthy, with a health check).
    ready_at: Mapped[datetime | None]
    # The whole ContainerSpec as given (validated), so handlers can act on exactly that.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    image: Mapped[str] = mapped_column(String(512))
    managed: Mapped[bool] = mapped_column(default=True)

    desired_state: Mapped[str] = mapped_column(String(16), default="running")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    health: Mapped[str | None] = mapped_column(String(16))
    exit_code: Mapped[int | None]
    docker_id: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    labels: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    observed_at: Mapped[datetime | None]
    project_id: Mapped[str] = project_id_column()
    version: Mapped[int] = mapped_column(default=1)


track(
    Container,
    "container",
    "name",
    "host_id",
    "service_id",
    "slot",
    "managed",
    "desired_state",
    "state",
    "health",
    "exit_code",
    "version",
)


def _standalone_usage(session: Session, project_id: str, _services: frozenset[str]) -> Usage:
    """What a project's standalone containers take (its services count their replicas)."""
    used = Usage()
    for resources in session.execute(
        select(Container.spec["resources"]).where(
            Container.project_id == project_id,
            Container.service_id.is_(None),
            Container.desired_state != "removed",
        )
    ).scalars():
        cpus, memory = set_aside(resources or {})
        used = used + Usage(containers=1, cpus=cpus, memory_bytes=memory)
    return used


count_usage_with(_standalone_usage)


class PortClaim(Base):
    """A host port a managed container publishes. The unique key makes two containers that
    want the same port on the same host a conflict the database refuses, not a race."""

    __tablename__ = "port_claims"
    __table_args__ = (UniqueConstraint("host_id", "host_ip", "host_port", "protocol"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    container_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("containers.id", ondelete="CASCADE"), index=True
    )
    host_id: Mapped[str] = mapped_column(String(26))
    host_ip: Mapped[str] = mapped_column(String(45))
    host_port: Mapped[int]
    protocol: Mapped[str] = mapped_column(String(8))

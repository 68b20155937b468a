from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, new_id, utcnow
from app.events.recorder import track


class Project(Base):
    """A set of workloads with its own members, quotas and policy relaxations. Services,
    stacks, containers, secrets, registry credentials and operations each name theirs by
    `project_id`; the `default` project (app.security.roles.DEFAULT_PROJECT_ID) holds what
    was made before projects existed."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # A protected project's changes need a second principal's approval (docs/approvals.md).
    protected: Mapped[bool] = mapped_column(default=False, server_default=false())
    # {"containers": n, "replicas": n, "cpus": x, "memory": bytes}; a missing key is no limit.
    quotas: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Names of app.containers.policy rules that this project's containers may break.
    relaxations: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # A protected project's change windows (app/projects/windows.py `Window`, as JSON) and what
    # an approval outside them does: "wait" for the next, or "refuse" (docs/changes.md).
    windows: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
    outside_window: Mapped[str] = mapped_column(String(8), default="wait", server_default="wait")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=1)


track(
    Project,
    "project",
    "name",
    "protected",
    "quotas",
    "relaxations",
    "version",
    project_of=lambda project: project.id,  # a project's events are its own
)


class HostProject(Base):
    """A host dedicated to a project: only the projects it is dedicated to place containers
    there. A host with no row here is shared by every project."""

    __tablename__ = "host_projects"

    host_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )

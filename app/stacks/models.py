from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track


class Stack(Base):
    """A Compose project: the file as given and what it became (one service per Compose
    service, all on one host, on the networks and volumes it declares).

    `plan` is the parsed file, fixed when the request is accepted: the `stack.deploy` operation
    of `generation` carries it out (builds, then services in `depends_on` order).
    """

    __tablename__ = "stacks"
    __table_args__ = (project_page_index("stacks"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(41), unique=True)
    compose: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    host_id: Mapped[str] = mapped_column(String(26), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    generation: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default="deploying")
    status_detail: Mapped[str | None] = mapped_column(Text)
    removing: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    project_id: Mapped[str] = project_id_column()
    version: Mapped[int] = mapped_column(default=1)


track(Stack, "stack", "name", "host_id", "generation", "status", "status_detail", "version")


class StackRelease(Base):
    """What one generation of a stack deployed: the Compose file, its variables (secret-bearing
    ones masked), the plan it carried out and the digest each service's image resolved to.
    A rollback deploys a release's plan and digests again, as a new generation."""

    __tablename__ = "stack_releases"
    __table_args__ = (UniqueConstraint("stack_id", "release"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    stack_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("stacks.id", ondelete="CASCADE"), index=True
    )
    release: Mapped[int]  # the stack's generation that deployed it
    compose: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    plan: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # By Compose service name; filled by the deploy once each image is resolved on the host.
    digests: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    rollback_of: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))

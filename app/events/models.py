from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, utcnow


class Event(Base):
    """One change of one resource. `seq` is the stream's cursor, given by the sequencer
    (app/events/sequencer.py) to committed events only, one sequencer at a time: so `seq` values
    become visible in increasing order, and a reader resuming after N misses nothing — while
    writers insert their events without waiting on each other."""

    __tablename__ = "events"
    __table_args__ = (
        # What the sequencer looks for: committed events without a place in the stream yet.
        Index(
            "ix_events_unsequenced",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        # SQLite must never reuse an id, even after every event has been pruned.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    type: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The project of the resource, so that a reader sees only the projects it may read; NULL
    # for resources outside projects (hosts, images, tokens). No foreign key: events outlive it.
    project_id: Mapped[str | None] = mapped_column(String(26), index=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

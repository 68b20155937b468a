from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, utcnow
from app.events.recorder import track


class Host(Base):
    """A Docker engine under management: what the user set, and what the last probe saw."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    schedulable: Mapped[bool] = mapped_column(default=True)
    draining: Mapped[bool] = mapped_column(default=False)
    # The TLS client material as one encrypted JSON document; never leaves the engine layer.
    tls_encrypted: Mapped[str | None] = mapped_column(Text)
    # Reached without verifying the engine: plain tcp://, or TLS without a certificate check.
    insecure: Mapped[bool] = mapped_column(default=False, server_default=false())

    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    engine_version: Mapped[str | None] = mapped_column(String(50))
    api_version: Mapped[str | None] = mapped_column(String(20))
    os: Mapped[str | None] = mapped_column(String(100))
    arch: Mapped[str | None] = mapped_column(String(50))
    cpus: Mapped[int | None]
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    containers_running: Mapped[int | None]
    last_seen_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(default=0)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Counts changes to what the user set (name, labels, schedulable, ...), which is what
    # If-Match protects; probe results update the row without bumping it.
    version: Mapped[int] = mapped_column(default=1)


track(
    Host,
    "host",
    "name",
    "status",
    "error",
    "schedulable",
    "draining",
    "labels",
    "insecure",
    "version",
)

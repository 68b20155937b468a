from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, utcnow


class IdempotencyRecord(Base):
    """The first response to a POST with an Idempotency-Key, replayed for retries of it."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    # The caller: the SHA-256 of its bearer token, so one client never sees another's replay.
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1000))
    body_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The response carried a secret (a new token): only this marker is kept, and a retry is
    # answered 409 instead of a replay, so the table never holds a secret.
    secret_withheld: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track


class Secret(Base):
    """A named secret. Only the ciphertext is stored; `version` counts rotations."""

    __tablename__ = "secrets"
    __table_args__ = (project_page_index("secrets"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    value_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    project_id: Mapped[str] = project_id_column()
    version: Mapped[int] = mapped_column(default=1)


track(Secret, "secret", "name", "version")

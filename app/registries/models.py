from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, project_id_column, project_page_index, utcnow
from app.events.recorder import track


class Registry(Base):
    """Credentials for one image registry. The password is stored encrypted, never returned."""

    __tablename__ = "registries"
    __table_args__ = (project_page_index("registries"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    # host[:port] as image references name it ("docker.io" for Docker Hub): how a pull of
    # `10.0.0.5:5000/team/app` finds its credentials.
    host: Mapped[str] = mapped_column(String(300), index=True)
    username: Mapped[str | None] = mapped_column(String(300))
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    project_id: Mapped[str] = project_id_column()
    version: Mapped[int] = mapped_column(default=1)


track(Registry, "registry", "name", "url", "username", "version")

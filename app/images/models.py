from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, new_id, utcnow
from app.events.recorder import track


class Image(Base):
    """An image as a host really holds it, kept in sync by the inventory loop."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("host_id", "docker_id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    host_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("hosts.id", ondelete="CASCADE"), index=True
    )
    docker_id: Mapped[str] = mapped_column(String(80))
    repo_tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    repo_digests: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Tags and digests as "\n<ref>\n<ref>\n", so that a reference filter is a portable LIKE.
    references: Mapped[str] = mapped_column(Text, default="\n")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    layers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    containers: Mapped[int] = mapped_column(default=0)
    image_created_at: Mapped[datetime | None]
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


track(Image, "image", "host_id", "repo_tags", "version")


class Blob(Base):
    """Uploaded bytes waiting for a worker (a build context); deleted once the work is done.
    A stack's project files (`stack_id`) are kept until the stack is removed: the worker fills
    a volume with them whenever the host lacks it."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    stack_id: Mapped[str | None] = mapped_column(String(26), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageTag(Base):
    """What a registry last said a tag that services run names: its digest, and the ETag to
    ask again conditionally. Written by the image check (services.image_updates)."""

    __tablename__ = "image_tags"

    # The tag, normalised as `reference.ImageReference` prints it (`host/repo:tag`).
    reference: Mapped[str] = mapped_column(String(600), primary_key=True)
    registry_host: Mapped[str] = mapped_column(String(300), index=True)
    digest: Mapped[str | None] = mapped_column(String(200))
    etag: Mapped[str | None] = mapped_column(String(300))
    # When the registry first answered with `digest` (a new digest's detection time).
    detected_at: Mapped[datetime | None]
    checked_at: Mapped[datetime | None]
    # Why the last check failed (the digest stays what it was); None after an answer.
    error: Mapped[str | None] = mapped_column(Text)


class RegistryCheckCount(Base):
    """Per registry host, the image check's requests as /metrics counts them (kept in the
    database: the check runs in whichever process holds its lease, /metrics in every one)."""

    __tablename__ = "registry_check_counts"

    registry_host: Mapped[str] = mapped_column(String(300), primary_key=True)
    checks: Mapped[int] = mapped_column(BigInteger, default=0)
    not_modified: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, new_id, utcnow


class AuditEntry(Base):
    """One mutating request. `seq` is gap-free and `hash` covers the entry and `prev_hash`,
    so an edited, removed or reordered row breaks the chain; `mac` (an HMAC of `hash` with a
    key kept outside the database) makes a chain rewritten with fresh hashes show too. Entries
    older than the key (`seq` below its `keyed_from`) have no `mac` and a shorter `hash`
    (app/audit/chain.py)."""

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(26), unique=True, default=new_id)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(100), index=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    resource: Mapped[str | None] = mapped_column(String(300), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[int]
    # The fields PCI DSS 10.2.2 asks for beyond the above (NULL on entries older than the key):
    # the token by id, success or failure, the resource by type and id, and its version.
    token_id: Mapped[str | None] = mapped_column(String(26))
    success: Mapped[bool | None]
    resource_type: Mapped[str | None] = mapped_column(String(100))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    version_before: Mapped[int | None]
    version_after: Mapped[int | None]
    # The project of the affected resource, for filtering the audit to readable projects; NULL
    # outside projects. Not part of the hash: it decides who sees an entry, not what it says.
    project_id: Mapped[str | None] = mapped_column(String(26), index=True)
    # Set only where they apply (app/audit/chain.py OPTIONAL_FIELDS): the author an approved
    # change ran as, and the reason of a global admin who broke glass.
    author: Mapped[str | None] = mapped_column(String(200))
    break_glass: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip (one row). Appends lock it, which serialises them on every backend, and
    verification compares against it, so dropping the newest entries is detected too."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointIssued(Base):
    """A signed checkpoint Berth handed out (`GET /audit/checkpoint`, the end of an export).
    Retention prunes only up to one of these: entries leave the database only once a signed
    head covering them may be kept outside it."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditPrune(Base):
    """Entries up to `through_seq` were pruned; `hash` is that entry's hash, where
    verification picks the chain up. `mac` keys the record with the audit key, so someone who
    can only write to the database cannot claim a later prune to hide the entries they
    removed."""

    __tablename__ = "audit_prunes"

    through_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    mac: Mapped[str] = mapped_column(String(64))

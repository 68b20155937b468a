"""Named leases: one holder at a time across every Berth process sharing the database.

Rows of holders that went away without releasing stay expired; housekeeping removes them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import Database, utcnow
from app.workers.models import Lease


def acquire(db: Database, name: str, *, holder: str, ttl_seconds: float) -> int | None:
    """Take or renew the lease; returns its epoch, or None while someone else holds it.

    The epoch changes only when the holder changes, so a holder can fence its own writes.
    """
    now = utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    with db.session() as session:
        renewed = session.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=expires)
            .returning(Lease.epoch)
        ).scalar_one_or_none()
        if renewed is not None:
            return renewed
        taken = session.execute(
            update(Lease)
            .where(Lease.name == name, Lease.expires_at < now)
            .values(holder=holder, expires_at=expires, epoch=Lease.epoch + 1)
            .returning(Lease.epoch)
        ).scalar_one_or_none()
        if taken is not None:
            return taken
    try:
        with db.session() as session:
            session.add(Lease(name=name, holder=holder, epoch=1, expires_at=expires))
    except IntegrityError:
        return None
    return 1


def held(session: Session, name: str, *, holder: str, epoch: int) -> bool:
    """Inside the caller's write transaction: lock the lease and check `holder` still holds it,
    unexpired, with `epoch` — the fence for the writes of a holder that may have stalled."""
    row = session.execute(
        select(Lease.holder, Lease.epoch, Lease.expires_at)
        .where(Lease.name == name)
        .with_for_update()
    ).first()
    return (
        row is not None
        and row.holder == holder
        and row.epoch == epoch
        and row.expires_at > utcnow()
    )


def release(db: Database, name: str, *, holder: str) -> None:
    """Give the lease up, so another process takes it at its next round, not after the TTL."""
    _expire(db, Lease.name == name, Lease.holder == holder)


def release_all(db: Database, *, holder: str) -> None:
    """Give up every lease `holder` has (a loop with a lease per object, when it stops)."""
    _expire(db, Lease.holder == holder)


def _expire(db: Database, *conditions: Any) -> None:
    with db.session() as session:
        session.execute(
            update(Lease).where(*conditions).values(expires_at=utcnow() - timedelta(seconds=1))
        )

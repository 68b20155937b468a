"""Named leases: one holder at a time across every Berth process sharing the database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

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


def release(db: Database, name: str, *, holder: str) -> None:
    with db.session() as session:
        session.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

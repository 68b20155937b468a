"""Named leases: one holder at a time across every Berth process sharing the database.

Rows of holders that went away without releasing stay expired; housekeeping removes them.

The loops of one process name their holders with `member_holder`, and such holders take only
this process's fair share of the leases: with M processes alive (each keeps a `member.<id>`
lease while its loops run), a process takes a new lease while it holds fewer than
ceil(leases / M), and gives one up at renewal while it holds more, so the loops of several
`berth worker`s spread across them instead of all going to the first one to start. A process
that dies stops renewing; its leases and its presence expire together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import Database, new_id, utcnow
from app.workers.models import Lease

# This process among those sharing the database (one id for every loop it runs); its pid
# first, so that an operator reading the leases table sees which process holds what.
_MEMBER = f"{os.getpid()}-{new_id()[-10:]}"
_PRESENCE = "member."


def member_holder(loop: str) -> str:
    """A holder name for one loop of this process: its leases count toward this process's share."""
    return f"{_MEMBER}.{loop}-{new_id()[-8:]}"


def acquire(db: Database, name: str, *, holder: str, ttl_seconds: float) -> int | None:
    """Take or renew the lease; returns its epoch, or None while someone else holds it (or,
    for a `member_holder`, while this process holds its share: a lease over the share is given
    up at renewal).

    The epoch changes only when the holder changes, so a holder can fence its own writes.
    """
    return acquire_many(db, [name], holder=holder, ttl_seconds=ttl_seconds).get(name)


def acquire_many(
    db: Database, names: Sequence[str], *, holder: str, ttl_seconds: float
) -> dict[str, int]:
    """`acquire` for many leases of one holder in one transaction (a loop with a lease per
    host renews them all in a few statements a round, not a transaction per host). Returns
    the epochs of the leases of `names` it holds now; the others are held by someone else,
    or over this process's share (given up, those it held, from the end of `names`)."""
    wanted = list(dict.fromkeys(names))
    now = utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    shared = holder.startswith(f"{_MEMBER}.")
    with db.session() as session:
        if shared:
            _present(session, expires=expires)
        held: dict[str, int] = dict(
            session.execute(
                update(Lease)
                .where(Lease.name.in_(wanted), Lease.holder == holder)
                .values(expires_at=expires)
                .returning(Lease.name, Lease.epoch)
                .execution_options(synchronize_session=False)
            ).all()
        )
        others = [name for name in wanted if name not in held]
        known = set(session.execute(select(Lease.name).where(Lease.name.in_(others))).scalars())
        fresh = [name for name in others if name not in known]
        room = len(others)
        if shared:
            mine = _held_by_me(session, now)
            surplus = [name for name in reversed(wanted) if name in held]
            surplus = surplus[: max(mine - _share(session, now), 0)]
            if surplus:
                _expire_in(session, Lease.name.in_(surplus), Lease.holder == holder)
                for name in surplus:
                    del held[name]
                return held
            room = _share(session, now, adding=len(fresh)) - mine
        if room <= 0:
            return held
        # Expired leases first (a process that died), then those no process has had yet.
        expired = set(
            session.execute(
                select(Lease.name).where(Lease.name.in_(list(known)), Lease.expires_at < now)
            ).scalars()
        )
        lapsed = [name for name in others if name in expired]
        if lapsed[:room]:
            held.update(
                session.execute(
                    update(Lease)
                    .where(Lease.name.in_(lapsed[:room]), Lease.expires_at < now)
                    .values(holder=holder, expires_at=expires, epoch=Lease.epoch + 1)
                    .returning(Lease.name, Lease.epoch)
                    .execution_options(synchronize_session=False)
                ).all()
            )
        for name in fresh[: max(room - len(lapsed), 0)]:
            try:
                # A savepoint: another process may take the same new lease at the same moment.
                with session.begin_nested():
                    session.add(Lease(name=name, holder=holder, epoch=1, expires_at=expires))
            except IntegrityError:
                continue
            held[name] = 1
    return held


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


@dataclass(frozen=True)
class Fence:
    """A lease as its holder took it (`acquire_many` gave `epoch`), carried to the writes it
    guards: a holder that renews many leases in one round checks each where it writes."""

    name: str
    holder: str
    epoch: int

    def holds(self, session: Session) -> bool:
        """`held` for this lease, inside the caller's write transaction."""
        return held(session, self.name, holder=self.holder, epoch=self.epoch)


def release(db: Database, name: str, *, holder: str) -> None:
    """Give the lease up, so another process takes it at its next round, not after the TTL."""
    _expire(db, Lease.name == name, Lease.holder == holder)


def release_all(db: Database, *, holder: str) -> None:
    """Give up every lease `holder` has (a loop with a lease per object, when it stops)."""
    _expire(db, Lease.holder == holder)


def _expire(db: Database, *conditions: Any) -> None:
    with db.session() as session:
        _expire_in(session, *conditions)


def _expire_in(session: Session, *conditions: Any) -> None:
    session.execute(
        update(Lease).where(*conditions).values(expires_at=utcnow() - timedelta(seconds=1))
    )


def _present(session: Session, *, expires: datetime) -> None:
    """Keep this process's presence: the processes alive are those whose presence is current."""
    name = _PRESENCE + _MEMBER
    kept = session.execute(
        update(Lease).where(Lease.name == name).values(expires_at=expires).returning(Lease.name)
    ).scalar_one_or_none()
    if kept is None:
        try:
            # A savepoint: two loops of this process may announce it at the same moment.
            with session.begin_nested():
                session.add(
                    Lease(name=name, holder=f"{_MEMBER}.presence", epoch=1, expires_at=expires)
                )
        except IntegrityError:
            pass


def _share(session: Session, now: datetime, *, adding: int = 0) -> int:
    """ceil(leases / processes alive): what one process may hold; `adding` counts leases no
    process has had yet (no row), about to be taken for the first time."""
    members = session.execute(
        select(func.count())
        .select_from(Lease)
        .where(Lease.name.startswith(_PRESENCE), Lease.expires_at > now)
    ).scalar_one()
    leases = session.execute(
        select(func.count()).select_from(Lease).where(~Lease.name.startswith(_PRESENCE))
    ).scalar_one()
    return math.ceil((leases + adding) / max(members, 1))


def _held_by_me(session: Session, now: datetime) -> int:
    held: int = session.execute(
        select(func.count())
        .select_from(Lease)
        .where(
            Lease.holder.startswith(f"{_MEMBER}."),
            ~Lease.name.startswith(_PRESENCE),
            Lease.expires_at > now,
        )
    ).scalar_one()
    return held

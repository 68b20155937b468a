"""Gives committed events their place in the stream.

Writers insert events without a cursor and without waiting for each other. The sequencer reads
the committed events that have none, in id order, and numbers them after the highest cursor
given so far — inside a transaction that only one sequencer at a time may run (a PostgreSQL
advisory lock; SQLite has one writer). A transaction that commits late is simply numbered late:
no reader can have passed its place, because that place did not exist until now.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, update

from app.core.db import Database
from app.events.models import Event

_LOCK = 0x62657274685F7371  # "berth_sq"
_BATCH = 5000

_PENDING = select(Event.id).where(Event.seq.is_(None)).order_by(Event.id).limit(_BATCH)
_TOP = select(func.max(Event.seq))
_NUMBER = (
    update(Event)
    .where(Event.id == bindparam("b_id"))
    .values(seq=bindparam("b_seq"))
    .execution_options(synchronize_session=False)
)


def sequence(db: Database) -> int:
    """Number the committed events that have no cursor yet; returns how many."""
    # Looked for first with a read: on SQLite a write transaction would queue behind writers.
    with db.session(write=False) as session:
        if session.execute(_PENDING.limit(1)).first() is None:
            return 0
    with db.transaction() as connection:
        db.lock_transaction(connection, _LOCK)
        pending = list(connection.execute(_PENDING).scalars())
        if not pending:
            return 0
        top = int(connection.execute(_TOP).scalar_one() or 0)
        connection.execute(
            _NUMBER,
            [{"b_id": event_id, "b_seq": top + n} for n, event_id in enumerate(pending, 1)],
        )
    return len(pending)

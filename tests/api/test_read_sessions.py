"""Read sessions (`Database.session(write=False)`, every GET's): rolled back rather than
committed, and kept from writing by SQLite itself. No engine involved."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.db import Database
from app.hosts.models import Host


def test_a_read_session_runs_no_commit_hooks(db: Database) -> None:
    # The commit hooks (audit, events, queue wake-ups) are per-transaction Python that a read
    # has no use for; closing the session ends its transaction.
    commits: list[Session] = []

    def commit(session: Session) -> None:
        commits.append(session)

    event.listen(Session, "before_commit", commit)
    try:
        with db.session(write=False) as session:
            session.execute(select(Host.id)).all()
        assert commits == []
        with db.session() as session:
            session.execute(select(Host.id)).all()
        assert commits == [session]
    finally:
        event.remove(Session, "before_commit", commit)


def test_a_read_session_sees_one_snapshot(db: Database) -> None:
    # A page and its related rows are read in two statements: a write committed between them
    # must not show in the second (the read's BEGIN opens a transaction).
    with db.session() as session:
        session.add(Host(name="before", url="tcp://127.0.0.1:1"))
    with db.session(write=False) as session:
        first = session.execute(select(Host.name)).scalars().all()
        with db.session() as writer:
            writer.add(Host(name="between", url="tcp://127.0.0.1:1"))
        assert session.execute(select(Host.name)).scalars().all() == first == ["before"]
    with db.session(write=False) as session:
        assert sorted(session.execute(select(Host.name)).scalars()) == ["before", "between"]


def test_a_write_in_a_read_session_fails_instead_of_being_dropped(db: Database) -> None:
    # SQLite's query_only guards the read engine; PostgreSQL's read sessions are READ ONLY.
    refused = "readonly" if db.is_sqlite else "read-only transaction"
    with pytest.raises(DBAPIError, match=refused), db.session(write=False) as session:
        session.add(Host(name="lost", url="tcp://127.0.0.1:1"))
        session.flush()
    with db.session(write=False) as session:
        names = list(session.execute(select(Host.name)).scalars())
    assert names == []

"""Engines, sessions and column types: the one place that knows SQLite from PostgreSQL.

SQLite gets WAL, foreign keys and a busy timeout, and every writing transaction starts with
`BEGIN IMMEDIATE` so that two writers queue on the lock instead of failing mid-transaction
when one upgrades a read lock. Reads use a second engine with plain deferred `BEGIN`, so they
never wait for a writer, on connections that SQLite itself keeps from writing (`query_only`).
PostgreSQL uses one engine for both.

A read session (`session(write=False)`) is rolled back, not committed: it has nothing to keep,
and a commit runs the flush and every `before_commit`/`after_commit` hook (audit, events) for
nothing, on every GET.

The few statements that differ between the two are methods of `Database` (`insert_ignore`,
`lock_transaction`, `locked_connection`, `notify`/`listen`), so no other module asks which
database it runs on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Insert,
    MetaData,
    String,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, MappedColumn, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.security.roles import DEFAULT_PROJECT_ID

log = logging.getLogger("berth.db")

WAKEUP_CHANNEL = "berth_wakeups"
"""The PostgreSQL channel of every wake-up; the payload names the sender and the topic."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on both backends (SQLite drops the offset on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def project_id_column(*, ondelete: str | None = None) -> MappedColumn[str]:
    """The `project_id` of a row that belongs to a project (docs/projects.md): rows written
    without one, by code or by an older process, land in the default project. Its index is the
    table's `project_page_index`."""
    return mapped_column(
        String(26),
        ForeignKey("projects.id", ondelete=ondelete),
        default=DEFAULT_PROJECT_ID,
        server_default=DEFAULT_PROJECT_ID,
    )


def project_page_index(table: str) -> Index:
    """(project_id, id): a list narrowed to a caller's projects is read in page order from it.
    On `project_id` alone, SQLite read every row of the project and sorted them for each page
    (a viewer's page of 50 containers cost 3-4 times an admin's with 10,000 rows)."""
    return Index(f"ix_{table}_project_id_id", "project_id", "id")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


def utcnow() -> datetime:
    return datetime.now(UTC)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """A 26-character, time-ordered id (ULID layout, lower case): list order is creation order."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        # JSON columns (specs, labels) are decoded for every row a list reads; orjson does it
        # several times faster than the standard library.
        json_deserializer=orjson.loads,
    )

    path = make_url(url).database

    @event.listens_for(engine, "do_connect")
    def _private_file(*_args: Any) -> None:
        # The file holds token hashes, ciphertexts and the audit trail: a new one is made
        # 0600 (like the key file) before SQLite opens it, and SQLite gives its -wal and -shm
        # files the database file's mode. An existing file keeps the mode its owner chose.
        if path and path != ":memory:" and not path.startswith("file:"):
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself, instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if not immediate:
            # A read session must not write: on the read engine a write would take SQLite's
            # lock past the writers' queue (`_write_lock`), and its rollback would drop it.
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if immediate:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            # Straight to the driver: a read's BEGIN needs none of the statement machinery
            # (compilation cache, cursor events, a result), which cost more than SQLite's work.
            # It still opens a transaction, so a page and its related rows are one snapshot.
            connection.connection.driver_connection.execute("BEGIN")

    return engine


_SQLITE_READERS = 3


class Database:
    """Engines and session factories for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.engine = create_engine(
                url,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                pool_recycle=1800,
                json_deserializer=orjson.loads,
            )
            self.read_engine = self.engine
        # A session knows its database, so services given only a session reach the helpers.
        info = {"database": self}
        self._writer = sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False, info=info)
        # Marks this object's wake-ups: its own listener skips them, since whoever notified
        # here has already woken the subscribers of this process.
        self._origin = new_id()
        # SQLite has one writer at a time. Threads of this process queue here, in Python, rather
        # than in SQLite's busy handler, which sleeps in steps of up to 100 ms.
        self._write_lock: AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        # SQLite lets go of the GIL for every row it steps; many reader threads at once then
        # spend their time handing the GIL around. A few at a time read faster in total.
        self._read_gate: AbstractContextManager[Any] = (
            threading.BoundedSemaphore(_SQLITE_READERS) if self.is_sqlite else nullcontext()
        )

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One ORM transaction: committed when the block ends, rolled back if it raises. A read
        (`write=False`) is always rolled back: see the module's docstring."""
        if not write:
            # Closing the session ends its transaction with a rollback.
            with self._read_gate, self._reader() as session:
                if not self.is_sqlite:
                    # One snapshot for the whole read, as SQLite's deferred BEGIN gives (a page
                    # and its related rows agree), and no write can slip into it.
                    session.execute(
                        text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    )
                yield session
            return
        with self._write_lock, self._writer() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self, connection: Connection | None = None) -> Iterator[Connection]:
        """One Core write transaction, for hot paths where the ORM's overhead shows. A loop that
        commits many times a second may keep a `connection` of its own (`engine.connect()`) and
        pass it: no pool checkout, and no pre-ping round trip, for each transaction."""
        if connection is not None:
            with self._write_lock, connection.begin():
                yield connection
            return
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    @staticmethod
    def of(session: Session) -> Database:
        """The database whose `session()` made `session`."""
        database = session.info["database"]
        assert isinstance(database, Database)
        return database

    def insert_ignore(self, table: Any) -> Insert:
        """`INSERT ... ON CONFLICT DO NOTHING`: a row that would break a unique key is skipped.
        Both databases speak it; SQLAlchemy builds it with each dialect's own construct."""
        insert = sqlite.insert if self.is_sqlite else postgresql.insert
        return insert(table).on_conflict_do_nothing()

    def lock_transaction(self, bind: Connection | Session, key: int) -> None:
        """Let one transaction at a time past this point, until it ends. SQLite's write
        transactions already run one at a time (`BEGIN IMMEDIATE`); PostgreSQL takes a
        transaction-scoped advisory lock on `key`."""
        if not self.is_sqlite:
            bind.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    @contextmanager
    def locked_connection(self, key: int) -> Iterator[Connection]:
        """A connection that holds `key` while the block runs, across its transactions: one
        process at a time runs the block (a PostgreSQL session advisory lock; on SQLite,
        nothing, as it always was)."""
        with self.engine.connect() as connection:
            if self.is_sqlite:
                yield connection
                return
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()  # whatever the block left open, so the unlock can run
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()

    def notify(self, topic: str, *, within: Connection | Session | None = None) -> None:
        """Wake the listeners of `topic` in other processes: when `within` commits, or now.

        PostgreSQL NOTIFY. Nothing on SQLite, whose processes find new work by polling.
        """
        if self.is_sqlite:
            return
        statement = select(func.pg_notify(WAKEUP_CHANNEL, f"{self._origin} {topic}"))
        if within is not None:
            within.execute(statement)
            return
        with self.engine.begin() as connection:
            connection.execute(statement)

    def listen(
        self,
        on_topic: Callable[[str], None],
        *,
        stop: threading.Event,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        """Call `on_topic` for every wake-up another process (or Database) notifies, until
        `stop` is set; a lost connection is opened again, and then `on_reconnect` runs, since
        what was notified while no one listened is gone. On SQLite it only waits for `stop`."""
        if self.is_sqlite:
            stop.wait()
            return
        # Imported here, on PostgreSQL only: the driver and its bundled libpq are about 9 MB of
        # every process's RSS, which a process on SQLite never uses.
        import psycopg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        lost = False
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {WAKEUP_CHANNEL}")
                    if lost and on_reconnect is not None:
                        on_reconnect()
                    while not stop.is_set():
                        # A short timeout: how long `stop` may go unnoticed.
                        for notice in connection.notifies(timeout=1.0, stop_after=1):
                            origin, _, topic = notice.payload.partition(" ")
                            if origin != self._origin:
                                on_topic(topic)
            except Exception:
                # Whatever broke (the connection, a payload, a subscriber), the listener must
                # outlive it: without it this process only learns of others' work by polling.
                log.warning("the wake-up listener failed; listening again", exc_info=True)
                lost = True
                stop.wait(1.0)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

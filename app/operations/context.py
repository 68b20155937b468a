"""What an operation handler gets: its parameters, its host, a log, progress, and safe points."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Row, Select
from sqlalchemy.orm import Session

from app.core.context import AppContext
from app.engine.protocol import Engine
from app.operations import queue
from app.operations.models import Operation
from app.operations.queue import Claim


class TransientError(Exception):
    """Worth trying again later (the executor retries with exponential backoff)."""


class PermanentError(Exception):
    """Trying again cannot help: the operation fails with this message."""


class Cancelled(Exception):
    """The operation was cancelled by request; raised at a safe point."""


class LeaseLost(Exception):
    """Another worker owns the operation now; stop without writing anything."""


class Deferred(Exception):
    """Not done, nothing to do now: look again after `seconds`, without holding a worker slot.
    The operation stays `running`; its attempt is not counted."""

    def __init__(self, seconds: float, note: str = "") -> None:
        super().__init__(note)
        self.seconds = seconds


class Interrupted(Exception):
    """This worker is shutting down; hand the operation back for another worker."""


class OperationContext:
    """Passed to each handler. Thread-confined: one per running operation."""

    def __init__(self, app: AppContext, claim: Claim) -> None:
        self.app = app
        self.claim = claim
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.shutting_down = threading.Event()
        if claim.cancel_requested:
            self.cancel_requested.set()
        self._last_progress_write = 0.0
        self._progress = claim.progress

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def params(self) -> dict[str, Any]:
        return self.claim.params

    @property
    def attempt(self) -> int:
        return self.claim.attempts

    def log(self, message: str, level: str = "info") -> None:
        queue.append_logs(self.app.db, self.claim.id, self.claim.attempts, [(level, message)])

    def log_lines(self, lines: list[tuple[str, str]]) -> None:
        queue.append_logs(self.app.db, self.claim.id, self.claim.attempts, lines)

    def progress(self, progress: dict[str, Any], *, force: bool = False) -> None:
        """Record progress; throttled to a few writes a second unless `force`. What is stored
        already is not written again (a waiting handler reports the same every round)."""
        now = time.monotonic()
        if progress == self._progress or (not force and now - self._last_progress_write < 0.25):
            return
        self._last_progress_write = now
        if not queue.set_progress(self.app.db, self.claim, progress):
            self.lease_lost.set()
            raise LeaseLost(self.claim.id)
        self._progress = dict(progress)

    def checkpoint(self) -> None:
        """A safe point: stop here if the operation was cancelled, taken over, or interrupted."""
        if self.lease_lost.is_set():
            raise LeaseLost(self.claim.id)
        if self.cancel_requested.is_set():
            raise Cancelled(self.claim.id)
        if self.shutting_down.is_set():
            raise Interrupted(self.claim.id)

    def sleep(self, seconds: float) -> None:
        """Wait, but return to a safe point at once when cancelled or interrupted."""
        deadline = time.monotonic() + seconds
        while True:
            self.checkpoint()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.cancel_requested.wait(min(left, 0.1))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction that commits only while this worker still holds the lease."""
        with self.app.db.session() as session:
            if not queue.verify_lease(session, self.claim):
                self.lease_lost.set()
                raise LeaseLost(self.claim.id)
            yield session

    @contextmanager
    def session_locking(self, statement: Select[Any]) -> Iterator[tuple[Session, Row[Any] | None]]:
        """`session`, with its lease check in the same round trip as `statement`: a read of
        the row the transaction will change, locked with this operation's row as `session`
        locks it. Yields the row found, or None when there is none while the lease holds."""
        with self.app.db.session() as session:
            # On the session's connection: the ORM's handling of a statement costs more than
            # the statement, and there are no objects to load.
            locking = statement.join(Operation, queue.lease_held(self.claim)).with_for_update()
            found = session.connection().execute(locking).first()
            # Nothing found: the row is gone, or the lease is. Only then a second look.
            if found is None and not queue.verify_lease(session, self.claim):
                self.lease_lost.set()
                raise LeaseLost(self.claim.id)
            yield session, found

    def engine(self, host_id: str | None = None) -> Engine:
        target = host_id or self.claim.host_id
        if target is None:
            raise PermanentError("this operation names no host")
        return self.app.engine_for_host(target)

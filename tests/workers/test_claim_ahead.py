"""Claims ahead of the free slots: short operations share a round's commit many at a time, and
an operation that was only claimed (never started) is not mistaken for one that ran."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.operations import queue
from app.operations.context import OperationContext
from app.operations.models import Operation
from app.operations.registry import handler
from app.runtime import load_handlers
from app.workers.executor import OperationExecutor
from tests.support import wait_for

_release = threading.Event()


@handler("test.block")
def _block(ctx: OperationContext) -> dict[str, Any]:
    """Holds its slot until the test releases it (or the worker stops)."""
    while not _release.wait(0.05):
        ctx.checkpoint()
    return {}


@pytest.fixture
def executor(
    settings_factory: Callable[..., Settings], db: Database
) -> Iterator[OperationExecutor]:
    """One slot, started, and warmed up by a no-op: its handlers are known to be short."""
    load_handlers()
    _release.clear()
    worker = OperationExecutor(AppContext(settings_factory(), db), slots=1)
    worker.start()
    try:
        warmup = _enqueue(db, "debug.noop", 1)
        wait_for(_all_succeeded(db, warmup), timeout=30, what="the warm-up")
        yield worker
    finally:
        _release.set()
        worker.stop(10)


def _enqueue(db: Database, kind: str, count: int) -> list[str]:
    with db.session() as session:
        return [queue.enqueue(session, kind=kind).id for _ in range(count)]


def _rows(db: Database, ids: list[str]) -> list[Operation]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Operation).where(Operation.id.in_(ids))))


def _all_succeeded(db: Database, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        with db.session(write=False) as session:
            done = session.scalar(
                select(func.count())
                .select_from(Operation)
                .where(Operation.id.in_(ids), Operation.status == "succeeded")
            )
        return done == len(ids)

    return check


def test_a_held_operation_that_never_started_is_not_resumed(db: Database) -> None:
    """A dead worker's claims: the one whose handler had started is resumed; the one it only
    held (claimed ahead) is claimed back as fresh, so its handler does its first-pass work."""
    _enqueue(db, "debug.noop", 2)
    held, ran = queue.claim(db, owner="dead", limit=2, lease_seconds=0.1)
    began = utcnow()
    queue.settle_and_claim(db, [], owner="dead", limit=0, lease_seconds=0.1, starts=[(ran, began)])
    time.sleep(0.2)  # both leases lapse
    claims = queue.claim(db, owner="b", limit=2, lease_seconds=30)
    assert {claim.id: claim.resumed for claim in claims} == {held.id: False, ran.id: True}
    started = {row.id: row.started_at for row in _rows(db, [held.id, ran.id])}
    assert started == {held.id: None, ran.id: began}


def test_short_operations_are_claimed_ahead_of_the_free_slots(
    executor: OperationExecutor, db: Database
) -> None:
    """One slot, 30 no-ops: without claims ahead each needs its own round (a commit each)."""
    commits: list[Any] = []
    count = commits.append  # one bound method, to remove the listener by
    event.listen(db.engine, "commit", count)
    try:
        ids = _enqueue(db, "debug.noop", 30)
        wait_for(_all_succeeded(db, ids), timeout=30, what="all operations succeeded")
    finally:
        event.remove(db.engine, "commit", count)
    # The enqueue's commit, then rounds of up to 9; the margin is for rounds a loaded machine
    # splits.
    assert len(commits) <= 15, len(commits)
    rows = _rows(db, ids)
    assert all(row.started_at is not None and row.attempts == 1 for row in rows)
    assert all(row.created_at <= row.started_at <= row.finished_at for row in rows)  # type: ignore[operator]


def _wait_for_one_running_and_the_rest_held(db: Database, ids: list[str]) -> str:
    """The id of the one started; the others are claimed ahead, waiting for the slot."""

    def state() -> str | None:
        rows = _rows(db, ids)
        started = [row.id for row in rows if row.started_at is not None]
        held = all(row.status == "running" and row.lease_owner is not None for row in rows)
        return started[0] if held and len(started) == 1 else None

    found: str = wait_for(state, timeout=30, what="one started and the rest held")
    return found


def test_operations_held_ahead_go_back_when_every_slot_runs_long(
    executor: OperationExecutor, db: Database
) -> None:
    """Waiting behind a handler that runs long, they are handed back for another worker, with
    neither an attempt counted nor a start recorded; once released they all run."""
    ids = _enqueue(db, "test.block", 4)
    running = _wait_for_one_running_and_the_rest_held(db, ids)
    others = [op_id for op_id in ids if op_id != running]

    def handed_back() -> bool:
        return all(
            (row.status, row.lease_owner, row.attempts, row.started_at) == ("queued", None, 0, None)
            for row in _rows(db, others)
        )

    wait_for(handed_back, timeout=30, what="the held operations handed back")
    _release.set()
    wait_for(_all_succeeded(db, ids), timeout=30, what="all operations succeeded")
    assert {row.attempts for row in _rows(db, ids)} == {1}


def test_a_clean_stop_hands_back_what_was_claimed_ahead(
    executor: OperationExecutor, db: Database
) -> None:
    ids = _enqueue(db, "test.block", 4)
    running = _wait_for_one_running_and_the_rest_held(db, ids)
    executor.stop(10)
    rows = {row.id: row for row in _rows(db, ids)}
    assert {(row.status, row.lease_owner, row.attempts) for row in rows.values()} == {
        ("queued", None, 0)
    }
    # Only the interrupted one had started.
    assert [op_id for op_id, row in rows.items() if row.started_at is not None] == [running]

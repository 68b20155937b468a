"""The executor claims in batches: a free slot brings in a round of operations at once, not
one (each claim is a transaction: a commit, and an fsync on PostgreSQL)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.operations import queue
from app.operations.models import Operation
from app.runtime import load_handlers
from app.workers.executor import OperationExecutor
from tests.support import wait_for


def test_a_free_slot_claims_a_batch_and_every_operation_runs_once(
    settings: Settings, db: Database
) -> None:
    slots, count = 2, 12
    with db.session() as session:
        ids = [
            queue.enqueue(session, kind="debug.sleep", params={"seconds": 0.05}).id
            for _ in range(count)
        ]
    load_handlers()
    executor = OperationExecutor(AppContext(settings, db), slots=slots)
    executor.start()
    try:

        def finished() -> list[tuple[str, int]]:
            with db.session(write=False) as session:
                rows = session.execute(
                    select(Operation.status, Operation.attempts).where(Operation.id.in_(ids))
                ).all()
            return [(row.status, row.attempts) for row in rows]

        wait_for(
            lambda: finished() == [("succeeded", 1)] * count,
            timeout=60,
            what="every operation to succeed, on its first attempt",
        )
    finally:
        executor.stop(10)
    with db.session(write=False) as session:
        # The operations a claim takes share its `started_at`.
        claims = Counter(
            session.execute(select(Operation.started_at).where(Operation.id.in_(ids))).scalars()
        )
    # The first claim fills both slots and takes a round more, waiting for the next free slot.
    assert max(claims.values()) == 2 * slots
    assert len(claims) < count / slots

"""The durable queue: enqueue in the caller's transaction; claim, heartbeat and finish with fencing.

Claiming is one statement per batch. On PostgreSQL the candidate rows are picked with
`FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on or take the same row; on SQLite
the `UPDATE ... WHERE id IN (SELECT ...)` runs inside `BEGIN IMMEDIATE`, which makes it atomic.
Every later write names the lease epoch it was claimed with, so a worker whose lease expired
and was taken over cannot touch the operation any more.

A claim is not a start: a worker may claim operations ahead of its free slots. `started_at`
is set when a handler really starts (stored with the worker's next round, or with the outcome),
so an operation claimed back after its worker died tells one that some attempt ran
(`Claim.resumed`) from one that was only held.

An operation whose handler waits on something else (`defer`) stays `running` but holds no
lease: `deferred_until` says when it is due again, and then any worker claims it as it would
an expired lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.core.db import Database, UTCDateTime, new_id, utcnow
from app.events import recorder
from app.operations.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Operation,
    OperationLog,
)
from app.security.roles import DEFAULT_PROJECT_ID

WAKEUP_TOPIC = "operations"
"""The wake-up other processes' workers hear when operations were enqueued."""

# Called after a transaction that enqueued work commits: wakes this process's workers at once.
_work_listeners: list[Callable[[], None]] = []
_work_listeners_lock = threading.Lock()


def on_work_available(listener: Callable[[], None]) -> Callable[[], None]:
    """Call `listener` after every local commit that enqueued operations; returns an
    unsubscribe. (Other processes' enqueues arrive through the `WAKEUP_TOPIC` wake-up.)"""
    with _work_listeners_lock:
        _work_listeners.append(listener)

    def unsubscribe() -> None:
        with _work_listeners_lock:
            if listener in _work_listeners:
                _work_listeners.remove(listener)

    return unsubscribe


@event.listens_for(Session, "after_commit")
def _wake_local_workers(session: Session) -> None:
    if session.info.pop("enqueued", False):
        with _work_listeners_lock:
            listeners = list(_work_listeners)
        for listener in listeners:
            listener()


@event.listens_for(Session, "after_rollback")
def _forget_enqueued(session: Session) -> None:
    session.info.pop("enqueued", None)


def enqueue(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any] | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    host_id: str | None = None,
    created_by: str | None = None,
    max_attempts: int = 5,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Operation:
    """Add an operation in the caller's transaction; it becomes visible to workers on commit.
    It belongs to its target's project (`project_id`; hosts' and images' to the default one).

    Every column is set here rather than by defaults at flush, so the caller can answer with
    the operation before commit and many enqueues go out as one batched INSERT.
    """
    now = utcnow()
    operation = Operation(
        id=new_id(),
        kind=kind,
        params=params or {},
        target_type=target_type,
        target_id=target_id,
        host_id=host_id,
        created_by=created_by,
        max_attempts=max_attempts,
        status=QUEUED,
        attempts=0,
        run_after=now,
        cancel_requested=False,
        lease_epoch=0,
        created_at=now,
        project_id=project_id,
        version=1,
    )
    session.add(operation)
    notify_workers(session)
    return operation


def notify_workers(session: Session) -> None:
    """Wake the workers of every process when the caller's transaction commits."""
    if not session.info.get("enqueued"):
        session.info["enqueued"] = True
        Database.of(session).notify(WAKEUP_TOPIC, within=session)


@dataclass(frozen=True)
class Claim:
    """An operation this worker holds, with the epoch that fences its writes."""

    id: str
    kind: str
    params: dict[str, Any]
    target_type: str | None
    target_id: str | None
    host_id: str | None
    attempts: int
    max_attempts: int
    epoch: int
    created_by: str | None
    cancel_requested: bool
    progress: dict[str, Any] | None
    project_id: str
    resumed: bool
    """Running already before this claim (deferred until now, or its worker died) and started
    by a handler in some attempt: an earlier attempt may have done part of it. One that a dead
    worker only held (claimed ahead, never started) is not resumed."""


_CLAIM_COLUMNS = (
    Operation.id,
    Operation.kind,
    Operation.params,
    Operation.target_type,
    Operation.target_id,
    Operation.host_id,
    Operation.attempts,
    Operation.max_attempts,
    Operation.lease_epoch,
    Operation.created_by,
    Operation.cancel_requested,
    Operation.progress,
    Operation.project_id,
)


def _claim_statement(candidates: Select[Any]) -> Any:
    """WITH chosen AS (candidates) UPDATE ... WHERE id IN chosen RETURNING ..., built once with
    bound parameters. The candidates are a materialized CTE, chosen once: as a subquery in the
    WHERE, PostgreSQL may run them again during the UPDATE, and a `LIMIT ... SKIP LOCKED` run
    again picks other rows (a claim of 2 of 3 queued operations took all 3)."""
    chosen = (
        candidates.limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
        .cte("chosen")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        update(Operation)
        .where(Operation.id.in_(select(chosen.c.id)))
        .values(
            status=RUNNING,
            lease_owner=bindparam("owner"),
            lease_expires_at=bindparam("expires", type_=UTCDateTime()),
            lease_epoch=Operation.lease_epoch + 1,
            attempts=Operation.attempts + 1,
            deferred_until=None,
        )
        .returning(*_CLAIM_COLUMNS, Operation.started_at)
    )


_CLAIM_DUE = _claim_statement(
    select(Operation.id)
    .where(Operation.status == QUEUED, Operation.run_after <= bindparam("now", type_=UTCDateTime()))
    .order_by(Operation.run_after)
)
_CLAIM_RESUMABLE = _claim_statement(
    select(Operation.id).where(
        Operation.status == RUNNING,
        (Operation.lease_expires_at < bindparam("now", type_=UTCDateTime()))
        | (Operation.deferred_until <= bindparam("now", type_=UTCDateTime())),
    )
)


def claim(
    db: Database,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    include_resumable: bool = True,
) -> list[Claim]:
    """Take up to `limit` runnable operations: queued and due, or running and either deferred
    until now or with an expired lease."""
    _, claims = settle_and_claim(
        db,
        [],
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        include_resumable=include_resumable,
    )
    return claims


def settle_and_claim(
    db: Database,
    outcomes: list[Outcome],
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    include_resumable: bool = True,
    connection: Connection | None = None,
    starts: list[tuple[Claim, datetime]] | None = None,
) -> tuple[set[str], list[Claim]]:
    """Store `outcomes` (as `finish_many`) and claim up to `limit` operations (as `claim`), in
    one transaction: a worker whose operations are short pays one commit, one fsync on
    PostgreSQL, for what it finished and what it takes next, not one for each. `starts` are
    held operations whose handlers started (at the time given) and have not ended yet: their
    `started_at` is stored too.

    Returns the ids of the outcomes stored (an operation whose lease was lost meanwhile is
    left alone) and the claims. The outcomes go first: their rows are locked in id order, as
    `heartbeat` locks them, and the claim then only takes rows nobody holds (`SKIP LOCKED`).
    A caller that does this in a loop passes its own `connection` (see `Database.transaction`).
    """
    now = utcnow()
    params = {"now": now, "owner": owner, "expires": now + timedelta(seconds=lease_seconds)}
    with db.transaction(connection) as bind:
        stored = _store_outcomes(bind, outcomes, now)
        _store_starts(bind, starts or [])
        # Resuming a deferred wait or a dead worker's operation changes no state anyone
        # watches; only queued -> running is an event.
        resumed = (
            _claim_rows(bind, _CLAIM_RESUMABLE, limit, params, resumed=True)
            if include_resumable
            else []
        )
        started = _claim_rows(bind, _CLAIM_DUE, limit - len(resumed), params, resumed=False)
        events = [
            _event(o.claim, o.status, {"error": o.error}) for o in outcomes if o.claim.id in stored
        ]
        events += [
            _event(c, RUNNING, {"attempts": c.attempts, "host_id": c.host_id}) for c in started
        ]
        recorder.write(bind, events)
    if events:
        recorder.notify_listeners()
    return stored, resumed + started


def _event(claim_: Claim, status: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        **recorder.row(
            f"operation.{status}",
            "operation",
            claim_.id,
            {
                "status": status,
                "kind": claim_.kind,
                "target_type": claim_.target_type,
                "target_id": claim_.target_id,
                **data,
            },
        ),
        # Known from the claim: spares the recorder a read of the operations' projects.
        "project_id": claim_.project_id,
    }


def _claim_rows(
    connection: Connection, statement: Any, limit: int, params: dict[str, Any], *, resumed: bool
) -> list[Claim]:
    if limit <= 0:
        return []
    rows = connection.execute(statement, {**params, "limit": limit}).all()
    return [
        Claim(
            id=row.id,
            kind=row.kind,
            params=row.params,
            target_type=row.target_type,
            target_id=row.target_id,
            host_id=row.host_id,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            epoch=row.lease_epoch,
            created_by=row.created_by,
            cancel_requested=row.cancel_requested,
            progress=row.progress,
            project_id=row.project_id,
            resumed=resumed and row.started_at is not None,
        )
        for row in rows
    ]


def _by_id(values: dict[str, Any], type_: Any) -> Any:
    """A value per operation, picked by its id in one statement (`CASE id WHEN ...`)."""
    return case(
        {op_id: literal(value, type_) for op_id, value in values.items()}, value=Operation.id
    )


def _store_starts(connection: Connection, started: list[tuple[Claim, datetime]]) -> None:
    """When held operations' handlers started, in one UPDATE (fenced by their epochs)."""
    if not started:
        return
    started = sorted(started, key=lambda item: item[0].id)  # heartbeat's lock order
    connection.execute(
        update(Operation)
        .where(
            Operation.id.in_([claim_.id for claim_, _ in started]),
            Operation.lease_epoch == _by_id({c.id: c.epoch for c, _ in started}, Integer()),
            Operation.status == RUNNING,
        )
        .values(
            started_at=func.coalesce(
                Operation.started_at, _by_id({c.id: at for c, at in started}, UTCDateTime())
            )
        )
    )


def _fenced(claim_: Claim) -> Any:
    return (
        (Operation.id == claim_.id)
        & (Operation.lease_epoch == claim_.epoch)
        & (Operation.status == RUNNING)
        & Operation.deferred_until.is_(None)
    )


def heartbeat(
    db: Database, *, owner: str, held: dict[str, int], lease_seconds: float
) -> tuple[set[str], set[str]]:
    """Extend the leases this worker holds. Returns (lost, cancel_requested) operation ids."""
    if not held:
        return set(), set()
    now = utcnow()
    # Rows are locked in id order, as outcomes are stored, so this process's heartbeat and
    # claimer threads never deadlock on PostgreSQL.
    mine = (
        select(Operation.id)
        .where(
            Operation.id.in_(list(held)),
            Operation.lease_owner == owner,
            Operation.status == RUNNING,
        )
        .order_by(Operation.id)
        .with_for_update()
    )
    with db.transaction() as connection:
        rows = connection.execute(
            update(Operation)
            .where(Operation.id.in_(mine.scalar_subquery()))
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(Operation.id, Operation.lease_epoch, Operation.cancel_requested)
        ).all()
    kept = {row.id for row in rows if held.get(row.id) == row.lease_epoch}
    cancelled = {row.id for row in rows if row.cancel_requested}
    return set(held) - kept, cancelled


@dataclass(frozen=True)
class Outcome:
    """How a held operation ended: a terminal status with its result or error."""

    claim: Claim
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    """When its handler started, if its start is not stored yet (else the time it is stored)."""


def finish_many(db: Database, outcomes: list[Outcome]) -> set[str]:
    """Store several outcomes in one transaction: one executemany, one commit, one fsync.

    Returns the ids stored; an operation whose lease was lost meanwhile is left alone.
    """
    if not outcomes:
        return set()
    stored, _ = settle_and_claim(db, outcomes, owner="", limit=0, lease_seconds=0)
    return stored


def _finished(
    where: Any, *, status: Any, result: Any, error: Any, started_at: Any, now: Any
) -> Any:
    """UPDATE the held operations `where` picks (if their leases held) to an outcome,
    RETURNING the ids stored."""
    return (
        update(Operation)
        .where(where, Operation.status == RUNNING)
        .values(
            status=status,
            result=result,
            error=error,
            started_at=func.coalesce(Operation.started_at, started_at),
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            version=Operation.version + 1,
        )
        .returning(Operation.id)
    )


_RESULT_TYPE = Operation.__table__.c.result.type


def _unnest(parameter: str, column: str, type_: Any) -> Any:
    """`column` of the rows the array `parameter` unnests to (a bound parameter of an UPDATE
    may not be named as a column)."""
    return func.unnest(bindparam(parameter, type_=ARRAY(type_))).label(column)


# On PostgreSQL the outcomes go as arrays into a statement of one shape: compiled once and
# prepared by psycopg, where the CASE form (below) is built and compiled anew every round,
# which took about a third of a busy claimer's CPU.
_OUTCOMES = select(
    _unnest("ids", "id", String()),
    _unnest("epochs", "epoch", Integer()),
    _unnest("statuses", "status", String()),
    _unnest("results", "result", _RESULT_TYPE),
    _unnest("errors", "error", Text()),
    _unnest("starts", "started_at", UTCDateTime()),
).subquery("outcome")
_STORE_OUTCOMES_PG = _finished(
    (Operation.id == _OUTCOMES.c.id) & (Operation.lease_epoch == _OUTCOMES.c.epoch),
    status=_OUTCOMES.c.status,
    result=_OUTCOMES.c.result,
    error=_OUTCOMES.c.error,
    started_at=_OUTCOMES.c.started_at,
    now=bindparam("now", type_=UTCDateTime()),
)


def _store_outcomes(connection: Connection, outcomes: list[Outcome], now: datetime) -> set[str]:
    """One UPDATE for all `outcomes`, so a batch costs one round trip, not one per operation;
    it returns the ids whose lease still held."""
    if not outcomes:
        return set()
    assert all(outcome.status in TERMINAL for outcome in outcomes)
    outcomes = sorted(outcomes, key=lambda outcome: outcome.claim.id)  # heartbeat's lock order
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            _STORE_OUTCOMES_PG,
            {
                "ids": [o.claim.id for o in outcomes],
                "epochs": [o.claim.epoch for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "results": [o.result for o in outcomes],
                "errors": [o.error for o in outcomes],
                "starts": [o.started_at or now for o in outcomes],
                "now": now,
            },
        )
        return set(rows.scalars())

    def by_id(value: Callable[[Outcome], Any], type_: Any) -> Any:
        """Each row's value picked by its id."""
        return _by_id({o.claim.id: value(o) for o in outcomes}, type_)

    rows = connection.execute(
        _finished(
            Operation.id.in_([outcome.claim.id for outcome in outcomes])
            & (Operation.lease_epoch == by_id(lambda o: o.claim.epoch, Integer())),
            status=by_id(lambda o: o.status, String()),
            result=by_id(lambda o: o.result, _RESULT_TYPE),
            error=by_id(lambda o: o.error, String()),
            started_at=by_id(lambda o: o.started_at or now, UTCDateTime()),
            now=now,
        )
    )
    return set(rows.scalars())


def finish(
    db: Database,
    claim_: Claim,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Move a held operation to a terminal status. False if the lease was lost meanwhile."""
    return bool(finish_many(db, [Outcome(claim_, status, result, error)]))


def requeue(
    db: Database,
    claim_: Claim,
    *,
    delay_seconds: float,
    error: str | None,
    count_attempt: bool,
    started_at: datetime | None = None,
) -> bool:
    """Give a held operation back: to retry after a delay, or on shutdown for another worker.
    `started_at`: when its handler started, if that is not stored yet."""
    values: dict[str, Any] = {
        "status": QUEUED,
        "run_after": utcnow() + timedelta(seconds=delay_seconds),
        "lease_owner": None,
        "lease_expires_at": None,
        "error": error,
    }
    if started_at is not None:
        values["started_at"] = func.coalesce(Operation.started_at, started_at)
    if not count_attempt:
        values["attempts"] = Operation.attempts - 1
    with db.transaction() as connection:
        updated = connection.execute(
            update(Operation).where(_fenced(claim_)).values(**values).returning(Operation.id)
        ).first()
        if updated is not None:
            recorder.write(connection, [_event(claim_, QUEUED, {"error": error})])
    recorder.notify_listeners()
    return updated is not None


def defer(
    db: Database, claim_: Claim, *, seconds: float, started_at: datetime | None = None
) -> bool:
    """Release a held operation that is waiting on something else, still `running`: it holds
    no lease, and is due again after `seconds`, when any worker claims it (not counted as a
    new attempt). Nobody heartbeats it meanwhile. `started_at`: when its handler started, if
    that is not stored yet (a deferred operation has started: it is resumed when due)."""
    with db.transaction() as connection:
        updated = connection.execute(
            update(Operation)
            .where(_fenced(claim_))
            .values(
                lease_owner=None,
                lease_expires_at=None,
                deferred_until=utcnow() + timedelta(seconds=seconds),
                attempts=Operation.attempts - 1,
                started_at=func.coalesce(Operation.started_at, started_at or utcnow()),
            )
            .returning(Operation.id)
        ).first()
    return updated is not None


def set_progress(db: Database, claim_: Claim, progress: dict[str, Any]) -> bool:
    with db.transaction() as connection:
        updated = connection.execute(
            update(Operation)
            .where(_fenced(claim_))
            .values(progress=progress)
            .returning(Operation.id)
        ).first()
    return updated is not None


def lease_held(claim_: Claim) -> ColumnElement[bool]:
    """The condition on the operation's row under which this claim still owns it."""
    return and_(
        Operation.id == claim_.id,
        Operation.lease_epoch == claim_.epoch,
        Operation.status == RUNNING,
        Operation.deferred_until.is_(None),
    )


def verify_lease(session: Session, claim_: Claim) -> bool:
    """Inside the caller's transaction: lock the row and check this claim still owns it."""
    owned = session.execute(
        select(Operation.id).where(lease_held(claim_)).with_for_update()
    ).scalar_one_or_none()
    return owned is not None


def append_logs(
    db: Database, operation_id: str, attempt: int, lines: list[tuple[str, str]]
) -> None:
    """Store log lines (level, message) of an operation."""
    if not lines:
        return
    now = utcnow()
    with db.transaction() as connection:
        connection.execute(
            insert(OperationLog),
            [
                {
                    "operation_id": operation_id,
                    "attempt": attempt,
                    "at": now,
                    "level": level,
                    "message": message,
                }
                for level, message in lines
            ],
        )


def request_cancel(session: Session, operation: Operation) -> None:
    """Cancel a queued operation now; ask a running one to stop at its next safe point."""
    if operation.status == QUEUED:
        operation.status = CANCELLED
        operation.finished_at = utcnow()
        operation.error = "cancelled before it started"
    else:
        operation.cancel_requested = True
        if operation.deferred_until is not None:
            # Nobody holds a deferred operation to tell; due now, a worker finds the request
            # at its handler's first safe point instead of after the wait.
            operation.deferred_until = utcnow()
    operation.version += 1


def release_owned(db: Database, *, owner: str) -> int:
    """On clean shutdown: hand back every operation this worker still holds, without penalty."""
    with db.transaction() as connection:
        result = connection.execute(
            update(Operation)
            .where(Operation.lease_owner == owner, Operation.status == RUNNING)
            .values(
                status=QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                attempts=Operation.attempts - 1,
                run_after=utcnow(),
            )
            .returning(Operation.id, Operation.kind, Operation.target_type, Operation.target_id)
        ).all()
        recorder.write(
            connection,
            [
                recorder.row(
                    f"operation.{QUEUED}",
                    "operation",
                    r.id,
                    {
                        "status": QUEUED,
                        "kind": r.kind,
                        "target_type": r.target_type,
                        "target_id": r.target_id,
                    },
                )
                for r in result
            ],
        )
    return len(result)


__all__ = [
    "CANCELLED",
    "FAILED",
    "SUCCEEDED",
    "Claim",
    "Outcome",
    "append_logs",
    "claim",
    "enqueue",
    "finish",
    "finish_many",
    "heartbeat",
    "on_work_available",
    "requeue",
    "set_progress",
    "settle_and_claim",
    "verify_lease",
]

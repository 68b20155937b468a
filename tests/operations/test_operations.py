"""The durable queue and its executor, in one process, on the backend under test."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.events.models import Event
from app.main import create_app
from app.operations import queue
from app.operations.context import Deferred, OperationContext
from app.operations.models import Operation
from app.operations.registry import handler
from app.runtime import load_handlers
from app.security.roles import DEFAULT_PROJECT_ID
from app.workers.executor import OperationExecutor
from tests.support import Api, wait_for

_rounds: dict[str, int] = {}


@handler("test.wait")
def _wait(ctx: OperationContext) -> dict[str, Any]:
    """Waits on nothing for `rounds` rounds, reporting the same progress each time."""
    _rounds[ctx.id] = _rounds.get(ctx.id, 0) + 1
    ctx.progress({"waiting": True})
    if _rounds[ctx.id] < ctx.params["rounds"]:
        raise Deferred(0.1)
    return {"rounds": _rounds[ctx.id]}


def test_noop_runs_to_success(api: Api) -> None:
    operation = api.debug_operation("debug.noop")
    assert operation["status"] == "queued"
    done = api.wait_operation(operation["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert done["result"] == {}
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert done["created_by"].startswith("bootstrap")


def test_accepted_response_points_at_the_operation(api: Api) -> None:
    response = api.post("/debug/operations", json={"kind": "debug.noop"})
    assert response.status_code == 202
    location = response.headers["location"]
    assert location == f"/api/v1/operations/{response.json()['operation']['id']}"
    assert api.client.get(location, headers=api.headers()).status_code == 200


def test_transient_errors_retry_with_backoff_then_succeed(api: Api) -> None:
    operation = api.debug_operation("debug.fail", params={"transient_failures": 2})
    done = api.wait_operation(operation["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 3
    logs = api.get(f"/operations/{operation['id']}/logs").json()["items"]
    retries = [line for line in logs if "retrying in" in line["message"]]
    assert [line["attempt"] for line in retries] == [1, 2]


def test_transient_errors_give_up_after_max_attempts(api: Api) -> None:
    operation = api.debug_operation("debug.fail", params={"transient_failures": 99}, max_attempts=3)
    done = api.wait_operation(operation["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 3
    assert "gave up after 3 attempts" in done["error"]


def test_permanent_error_fails_at_once_with_its_message(api: Api) -> None:
    operation = api.debug_operation(
        "debug.fail", params={"permanent": True, "message": "image not found: nope:1"}
    )
    done = api.wait_operation(operation["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert done["error"] == "image not found: nope:1"


def test_cancel_running_and_queued(settings_factory: Callable[..., Settings], db: Database) -> None:
    with TestClient(create_app(settings_factory(workers=1))) as client:
        api = Api(client, db)
        running = api.debug_operation("debug.sleep", params={"seconds": 30})
        wait_for(
            lambda: api.get(f"/operations/{running['id']}").json()["status"] == "running",
            timeout=30,
            interval=0.05,
            what="the sleep to start",
        )
        queued = api.debug_operation("debug.noop")

        response = api.post(f"/operations/{queued['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "cancelled"

        response = api.post(f"/operations/{running['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["cancel_requested"] is True
        started = time.monotonic()
        done = api.wait_operation(running["id"], timeout=30)
        assert done["status"] == "cancelled"
        # Well before the 30 s sleep would have ended.
        assert time.monotonic() - started < 20, "cancel must take effect at the next safe point"

        again = api.post(f"/operations/{running['id']}/cancel")
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        # A cancelled operation stays cancelled: terminal states never change.
        assert api.get(f"/operations/{queued['id']}").json()["status"] == "cancelled"


def test_long_poll_returns_when_done_and_bounds_wait(api: Api) -> None:
    operation = api.debug_operation("debug.sleep", params={"seconds": 0.5})
    started = time.monotonic()
    response = api.get(f"/operations/{operation['id']}", params={"wait": 20})
    assert response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 20
    assert api.get(f"/operations/{operation['id']}", params={"wait": 61}).status_code == 422
    assert api.get("/operations/nope").status_code == 404


def test_operation_list_filters(api: Api) -> None:
    first = api.debug_operation("debug.noop")
    second = api.debug_operation("debug.fail", params={"permanent": True})
    api.wait_operation(first["id"])
    api.wait_operation(second["id"])
    failed = api.get("/operations", params={"status": "failed"}).json()["items"]
    assert [op["id"] for op in failed] == [second["id"]]
    noops = api.get("/operations", params={"kind": "debug.noop"}).json()["items"]
    assert [op["id"] for op in noops] == [first["id"]]
    assert api.get("/operations", params={"status": "bogus"}).status_code == 422


def test_expired_lease_is_taken_over_and_finished(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    """A worker that claimed an operation and vanished: another finishes it after the lease."""
    with db.session() as session:
        operation_id = queue.enqueue(session, kind="debug.noop").id
    (ghost,) = queue.claim(db, owner="ghost", limit=1, lease_seconds=0.5)
    assert ghost.id == operation_id

    with TestClient(create_app(settings_factory())) as client:
        api = Api(client, db)
        done = api.wait_operation(operation_id, timeout=15)
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    # The ghost wakes up late: its fenced write is refused.
    assert queue.finish(db, ghost, status="failed", error="stale") is False
    with db.session(write=False) as session:
        assert session.get(Operation, operation_id).status == "succeeded"  # type: ignore[union-attr]


def test_claims_are_fenced_by_epoch(db: Database) -> None:
    with db.session() as session:
        queue.enqueue(session, kind="debug.noop")
    (first,) = queue.claim(db, owner="a", limit=1, lease_seconds=0.1)
    time.sleep(0.2)
    (second,) = queue.claim(db, owner="b", limit=1, lease_seconds=30)
    assert second.id == first.id and second.epoch == first.epoch + 1
    assert queue.set_progress(db, first, {"x": 1}) is False
    lost, _ = queue.heartbeat(db, owner="a", held={first.id: first.epoch}, lease_seconds=30)
    assert lost == {first.id}
    assert queue.finish(db, second, status="succeeded") is True
    assert queue.finish(db, first, status="failed") is False


def test_backoff_delays_a_retry(db: Database) -> None:
    with db.session() as session:
        queue.enqueue(session, kind="debug.noop")
    (claim,) = queue.claim(db, owner="a", limit=1, lease_seconds=30)
    assert queue.requeue(db, claim, delay_seconds=60, error="engine down", count_attempt=True)
    assert queue.claim(db, owner="b", limit=1, lease_seconds=30) == []
    with db.session() as session:
        operation = session.get(Operation, claim.id)
        assert operation is not None
        assert operation.status == "queued" and operation.error == "engine down"
        assert operation.run_after > utcnow() + timedelta(seconds=50)


def test_operation_logs_paginate(api: Api, db: Database) -> None:
    with db.session() as session:
        operation_id = queue.enqueue(session, kind="debug.noop").id
    queue.append_logs(db, operation_id, 1, [("info", f"line {i}") for i in range(7)])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/operations/{operation_id}/logs", params=params).json()
        seen += [line["message"] for line in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:7] == [f"line {i}" for i in range(7)]


def test_a_deferred_operation_runs_again_when_due(api: Api, db: Database) -> None:
    with db.session() as session:
        operation_id = queue.enqueue(session, kind="test.wait", params={"rounds": 3}).id
    done = api.wait_operation(operation_id)
    assert done["status"] == "succeeded"
    assert done["result"] == {"rounds": 3}
    assert done["attempts"] == 1  # waiting rounds are not attempts


def test_a_deferred_operation_holds_no_lease_until_due(db: Database) -> None:
    """Nobody holds it while it waits; any worker claims it when due, fenced by a new epoch."""
    with db.session() as session:
        queue.enqueue(session, kind="debug.noop")
    (first,) = queue.claim(db, owner="a", limit=1, lease_seconds=30)
    # Long enough that a loaded machine still claims before it falls due.
    assert queue.defer(db, first, seconds=3)
    with db.session(write=False) as session:
        operation = session.get(Operation, first.id)
        assert operation is not None
        assert operation.status == "running"
        assert operation.lease_owner is None and operation.lease_expires_at is None
        assert operation.deferred_until is not None
    assert queue.claim(db, owner="b", limit=1, lease_seconds=30) == []
    # Deferring ended the claim: the deferring worker can no longer write.
    assert not queue.set_progress(db, first, {"x": 1})

    (second,) = wait_for(
        lambda: queue.claim(db, owner="b", limit=1, lease_seconds=30),
        timeout=10,
        interval=0.05,
        what="the deferral to fall due",
    )
    # Resumed under a new epoch; waiting was not an attempt.
    assert (second.id, second.resumed, second.attempts) == (first.id, True, first.attempts)
    assert second.epoch > first.epoch


def test_cancelling_a_deferred_operation_makes_it_due_at_once(db: Database) -> None:
    with db.session() as session:
        queue.enqueue(session, kind="debug.noop")
    (first,) = queue.claim(db, owner="a", limit=1, lease_seconds=30)
    assert queue.defer(db, first, seconds=3600)
    with db.session() as session:
        operation = session.get(Operation, first.id)
        assert operation is not None
        queue.request_cancel(session, operation)
    (second,) = queue.claim(db, owner="b", limit=1, lease_seconds=30)
    assert second.id == first.id and second.cancel_requested


def test_unchanged_progress_is_not_written_again(settings: Settings, db: Database) -> None:
    """A waiting handler reports the same progress every round: one write, not one a round."""
    with db.session() as session:
        queue.enqueue(session, kind="debug.noop")
    (first,) = queue.claim(db, owner="a", limit=1, lease_seconds=30)
    app = AppContext(settings, db)
    OperationContext(app, first).progress({"waiting": True})
    assert queue.defer(db, first, seconds=0)
    (second,) = queue.claim(db, owner="a", limit=1, lease_seconds=30)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        OperationContext(app, second).progress({"waiting": True}, force=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert statements == []


def test_one_transaction_stores_outcomes_and_claims_the_next(db: Database) -> None:
    """A worker's finished operations and its next claims share a commit; a stale outcome is
    refused while the rest of the transaction goes through."""
    with db.session() as session:
        ids = [queue.enqueue(session, kind="debug.noop").id for _ in range(3)]
    first, second = queue.claim(db, owner="a", limit=2, lease_seconds=30)
    stale = replace(second, epoch=second.epoch - 1)
    commits = 0

    def count(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(db.engine, "commit", count)
    try:
        stored, claims = queue.settle_and_claim(
            db,
            [
                queue.Outcome(first, "succeeded", result={"n": 1}),
                queue.Outcome(stale, "failed", error="stale"),
            ],
            owner="a",
            limit=1,
            lease_seconds=30,
        )
    finally:
        event.remove(db.engine, "commit", count)
    assert commits == 1
    assert stored == {first.id}
    # The claim took the two oldest (in either order), now the third.
    assert {first.id, second.id} == set(ids[:2])
    (third,) = claims
    assert third.id == ids[2]
    with db.session(write=False) as session:
        done, running, started = (
            session.get(Operation, op_id) for op_id in (first.id, second.id, third.id)
        )
        assert done is not None and running is not None and started is not None
        assert (done.status, done.result, done.lease_owner) == ("succeeded", {"n": 1}, None)
        assert (running.status, running.error) == ("running", None)
        assert (started.status, started.lease_owner) == ("running", "a")
        # The events name the operations' project without the recorder reading it.
        kinds = dict(
            session.execute(
                select(Event.type, Event.project_id).where(
                    Event.resource_id.in_([first.id, third.id])
                )
            ).all()
        )
    assert kinds == {
        "operation.queued": DEFAULT_PROJECT_ID,
        "operation.running": DEFAULT_PROJECT_ID,
        "operation.succeeded": DEFAULT_PROJECT_ID,
    }


def test_the_executor_commits_once_per_round_of_slots(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    """Short operations: what a round of slots finished and the next round's claims share one
    commit (one fsync on PostgreSQL), rather than a claim and a finish commit each."""
    load_handlers()
    count, slots = 80, 4
    commits = 0

    def counted(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    context = AppContext(settings_factory(), db)
    executor = OperationExecutor(context, slots=slots)
    with db.session() as session:
        ids = [queue.enqueue(session, kind="debug.noop").id for _ in range(count)]
    event.listen(db.engine, "commit", counted)
    executor.start()
    try:

        def finished() -> bool:
            with db.session(write=False) as session:
                return (
                    session.scalar(
                        select(func.count())
                        .select_from(Operation)
                        .where(Operation.id.in_(ids), Operation.status == "succeeded")
                    )
                    == count
                )

        wait_for(finished, timeout=30, what="all operations succeeded")
    finally:
        executor.stop(10)
        event.remove(db.engine, "commit", counted)
    # One per round of 4 is 20; a claim and a finish per round were 40 and more. The margin
    # is for rounds that a slow handler thread splits.
    assert commits <= count * 3 // (slots * 2), commits

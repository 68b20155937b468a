"""The replica create operation on its own (no executor, no event follower), against engine h1:
what it stores, in how many writes, and whom it wakes."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import docker
import pytest
from sqlalchemy import delete, select, update

from app import runtime
from app.containers.handlers import create, record
from app.containers.models import Container
from app.containers.schemas import ContainerSpec
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.events.models import Event
from app.hosts.models import Host
from app.operations import queue
from app.operations.context import LeaseLost, OperationContext, PermanentError
from app.operations.models import Operation, OperationLog
from app.services.models import Service
from app.workers import wakeups
from tests.testbed import Testbed, remove_containers


@pytest.fixture
def app(settings: Settings, db: Database) -> Iterator[AppContext]:
    context = AppContext(settings, db)
    runtime.prepare(context)
    yield context
    context.engines.close()


def replica_create(db: Database, bed: Testbed) -> queue.Claim:
    """A one-replica service's task on h1, and its create operation, claimed."""
    with db.session() as session:
        host = Host(name="h1", url=bed.h1_url, status="ready")
        service = Service(name="wake", spec={"image": bed.image, "replicas": 1}, replicas=1)
        session.add_all([host, service])
        session.flush()
        spec = ContainerSpec(image=bed.image, command=["sleep", "60"])
        task = Container(
            name=f"berth-test-create-handler-{secrets.token_hex(3)}",
            host_id=host.id,
            service_id=service.id,
            slot=0,
            revision=1,
            spec=spec.model_dump(mode="json"),
            image=bed.image,
            desired_state="running",
            state="pending",
        )
        session.add(task)
        session.flush()
        queue.enqueue(
            session,
            kind="container.create",
            target_type="container",
            target_id=task.id,
            host_id=host.id,
        )
    (claim,) = queue.claim(db, owner="test", limit=1, lease_seconds=30)
    return claim


def test_a_started_replica_is_recorded_in_one_write_and_wakes_its_service(
    app: AppContext, db: Database, bed: Testbed, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = replica_create(db, bed)
    woken = threading.Event()
    unsubscribe = wakeups.subscribe(wakeups.SERVICES, woken.set)
    named: list[wakeups.Keys] = []
    unsubscribe_keys = wakeups.subscribe_keys(wakeups.SERVICES, named.append)
    writes: list[str] = []
    real_session, real_transaction = db.session, db.transaction

    def counted_session(*, write: bool = True) -> AbstractContextManager[Any]:
        if write:
            writes.append("session")
        return real_session(write=write)

    def counted_transaction() -> AbstractContextManager[Any]:
        writes.append("transaction")
        return real_transaction()

    monkeypatch.setattr(db, "session", counted_session)
    monkeypatch.setattr(db, "transaction", counted_transaction)
    engine = docker.DockerClient(base_url=bed.h1_url)
    try:
        result = create(OperationContext(app, claim))
    finally:
        monkeypatch.undo()
        unsubscribe()
        unsubscribe_keys()
        remove_containers(engine, f"berth.container={claim.target_id}")
        engine.close()

    assert result is not None and result["state"] == "running"
    # No follower runs here: the service's reconciler hears of the running replica from the
    # operation itself, not at its next periodic pass.
    assert woken.is_set()
    # Naming the replica's service: its reconciler passes over that service only.
    with db.session(write=False) as session:
        service_id = session.execute(
            select(Container.service_id).where(Container.id == claim.target_id)
        ).scalar_one()
    assert named == [frozenset({service_id})]
    # The outcome's log line goes with the state in one transaction.
    assert len(writes) == 1
    with db.session(write=False) as session:
        task = session.get(Container, claim.target_id)
        assert task is not None
        assert (task.state, task.docker_id) == ("running", result["docker_id"])
        lines = session.execute(
            select(OperationLog.message).where(OperationLog.operation_id == claim.id)
        ).scalars()
        assert [line.endswith("(started)") for line in lines] == [True]


def test_a_started_replica_is_one_event_on_the_stream_with_its_project(
    app: AppContext, db: Database, bed: Testbed
) -> None:
    """The create's record is written with Core, not through the ORM: the event the ORM
    would have recorded for it (the changed fields, the version, the project) is still there."""
    claim = replica_create(db, bed)
    engine = docker.DockerClient(base_url=bed.h1_url)
    try:
        result = create(OperationContext(app, claim))
    finally:
        remove_containers(engine, f"berth.container={claim.target_id}")
        engine.close()
    assert result is not None and result["state"] == "running"
    with db.session(write=False) as session:
        task = session.get(Container, claim.target_id)
        assert task is not None
        recorded = session.execute(
            select(Event.type, Event.data, Event.project_id).where(
                Event.resource_id == claim.target_id, Event.type == "container.updated"
            )
        ).all()
    assert [tuple(row) for row in recorded] == [
        ("container.updated", {"state": "running", "version": task.version}, task.project_id)
    ]


def test_a_record_after_the_lease_was_taken_over_writes_nothing(
    app: AppContext, db: Database, bed: Testbed
) -> None:
    claim = replica_create(db, bed)
    # What a worker still holds after another has taken the operation over: a past epoch.
    with db.session() as session:
        session.execute(
            update(Operation)
            .where(Operation.id == claim.id)
            .values(lease_epoch=Operation.lease_epoch + 1)
        )
    ctx = OperationContext(app, claim)
    with pytest.raises(LeaseLost):
        record(ctx, ctx.engine(), None, note=(utcnow(), "stale"), error="stale")
    assert ctx.lease_lost.is_set()
    with db.session(write=False) as session:
        task = session.get(Container, claim.target_id)
        assert task is not None
        assert (task.state, task.error, task.observed_at) == ("pending", None, None)
        lines = session.execute(
            select(OperationLog.message).where(OperationLog.operation_id == claim.id)
        ).scalars()
        assert list(lines) == []


def test_a_record_of_a_removed_container_fails_for_good(
    app: AppContext, db: Database, bed: Testbed
) -> None:
    claim = replica_create(db, bed)
    with db.session() as session:
        session.execute(delete(Container).where(Container.id == claim.target_id))
    ctx = OperationContext(app, claim)
    with pytest.raises(PermanentError, match="no longer exists"):
        record(ctx, ctx.engine(), None)
    assert not ctx.lease_lost.is_set()

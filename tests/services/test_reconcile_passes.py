"""How a reconciler pass uses the database: it reads, decides and places outside the write
transaction, and writes only what it decided, only if that still holds. Rows only: the
passes' effect on real engines is covered by the other tests in this folder."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.containers.models import Container
from app.containers.schemas import Resources
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.hosts.models import Host
from app.operations.models import Operation
from app.runtime import ENCRYPTED_COLUMNS
from app.services.decide import TaskView
from app.services.models import Service, ServiceStatus
from app.services.reconciler import Plan, commit_pass, read_pass, reconcile
from app.services.schemas import ServiceSpec


@pytest.fixture
def context(settings: Settings, db: Database) -> AppContext:
    context = AppContext(settings, db)
    context.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    return context


def add_service(db: Database, spec: ServiceSpec, **columns: object) -> tuple[str, str]:
    """A ready host with 2 CPUs and a service of `spec` (no tasks): (host id, service id)."""
    with db.session() as session:
        host = Host(name="solo", url="unix:///solo", labels={}, status="ready", cpus=2)
        service = Service(
            name="web",
            spec=spec.model_dump(mode="json"),
            revision=1,
            replicas=spec.replicas,
            **columns,
        )
        session.add_all([host, service])
        session.flush()
        return host.id, service.id


def add_converged(db: Database) -> str:
    """A running service of 3 replicas, all ready for minutes: its id."""
    spec = ServiceSpec(image="busybox", replicas=3)
    host_id, service_id = add_service(db, spec, status=ServiceStatus.RUNNING)
    with db.session() as session:
        session.add_all(
            Container(
                name=f"web.{slot}",
                host_id=host_id,
                service_id=service_id,
                slot=slot,
                revision=1,
                spec={"image": "busybox"},
                image="busybox",
                state="running",
                ready_at=utcnow() - timedelta(minutes=5),
            )
            for slot in (1, 2, 3)
        )
    return service_id


def tasks(db: Database, service_id: str) -> int:
    with db.session(write=False) as session:
        return session.execute(
            select(func.count()).select_from(Container).where(Container.service_id == service_id)
        ).scalar_one()


def test_a_converged_pass_does_not_wait_for_the_write_lock(
    context: AppContext, db: Database
) -> None:
    service_id = add_converged(db)
    held, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with db.session():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert held.wait(10)
        passed = threading.Thread(target=reconcile, args=(context, service_id))
        passed.start()
        # Nothing to change: the pass only reads, so another writer does not hold it up.
        passed.join(5)
        assert not passed.is_alive(), "a pass that changes nothing waited for the write lock"
    finally:
        release.set()
        holder.join()
        passed.join()


def test_a_plan_made_stale_by_another_pass_is_decided_again_not_doubled(
    context: AppContext, db: Database
) -> None:
    _, service_id = add_service(db, ServiceSpec(image="busybox", replicas=3))
    with db.session(write=False) as session:
        stale = read_pass(session, service_id, settings=context.settings, now=utcnow())
    assert stale is not None and len(stale.placements) == 3
    reconcile(context, service_id)  # another pass starts the three replicas meanwhile
    assert tasks(db, service_id) == 3

    # Under the lock it sees the replicas the plan did not: it writes nothing (the spread it
    # placed against is gone), or decides again and finds no slot empty. Either way, none twice.
    commit_pass(context, stale)
    assert tasks(db, service_id) == 3
    with db.session(write=False) as session:
        creates = session.execute(
            select(func.count()).select_from(Operation).where(Operation.kind == "container.create")
        ).scalar_one()
    assert creates == 3


def test_a_placement_on_a_host_that_filled_up_meanwhile_is_not_written(
    context: AppContext, db: Database
) -> None:
    spec = ServiceSpec(image="busybox", replicas=1, resources=Resources(cpus=1.5))
    host_id, service_id = add_service(db, spec)
    with db.session(write=False) as session:
        stale = read_pass(session, service_id, settings=context.settings, now=utcnow())
    assert stale is not None
    # A container of someone else's takes most of the host's 2 CPUs after the plan was made.
    with db.session() as session:
        session.add(
            Container(
                name="other",
                host_id=host_id,
                spec={"image": "x", "resources": {"cpus": 1.0}},
                image="x",
            )
        )
    assert not commit_pass(context, stale)
    assert tasks(db, service_id) == 0

    # The next pass places against what the host carries now: nowhere.
    reconcile(context, service_id)
    assert tasks(db, service_id) == 0
    with db.session(write=False) as session:
        service = session.get(Service, service_id)
        assert service is not None
        assert service.status == ServiceStatus.DEGRADED
        assert "not enough CPU" in (service.status_detail or "")


def test_a_pass_converts_only_the_task_rows_changed_since_the_last(
    context: AppContext, db: Database
) -> None:
    service_id = add_converged(db)
    with db.session(write=False) as session:
        first, second, third = session.execute(
            select(Container.id).where(Container.service_id == service_id).order_by(Container.id)
        ).scalars()

    def views() -> dict[str, TaskView]:
        plan = read_pass_now(context, service_id)
        return {task.id: task for task in plan.snapshot.tasks}

    before = views()
    again = views()
    # Nothing changed: the same views, not new ones made from the same rows.
    assert all(again[task_id] is before[task_id] for task_id in before)

    ready_at = utcnow()
    with db.session() as session:
        changed = session.get_one(Container, first)
        changed.state, changed.ready_at = "exited", ready_at
        session.delete(session.get_one(Container, second))
        session.add(
            Operation(
                kind="container.stop",
                status="queued",
                target_type="container",
                target_id=third,
                created_by="test",
            )
        )
    after = views()
    # What a read from scratch gives: the changed row as it is now, the deleted one gone, the
    # one with an operation in flight busy.
    assert after.keys() == {first, third}
    assert (after[first].state, after[first].ready_at) == ("exited", ready_at)
    assert after[third].busy and not before[third].busy
    assert after[third].created_at == before[third].created_at


def read_pass_now(context: AppContext, service_id: str) -> Plan:
    with context.db.session(write=False) as session:
        plan = read_pass(session, service_id, settings=context.settings, now=utcnow())
    assert plan is not None
    return plan


def test_a_settled_services_views_are_not_kept(context: AppContext, db: Database) -> None:
    spec = ServiceSpec(image="busybox", replicas=1)
    host_id, service_id = add_service(db, spec, status=ServiceStatus.RUNNING)
    with db.session() as session:
        task = Container(
            name="web.1",
            host_id=host_id,
            service_id=service_id,
            slot=1,
            revision=1,
            spec={"image": "busybox"},
            image="busybox",
            state="running",
            ready_at=utcnow() - timedelta(minutes=5),
        )
        session.add(task)
        session.flush()
        task_id = task.id
        busy = Operation(
            kind="container.stop",
            status="queued",
            target_type="container",
            target_id=task_id,
            created_by="test",
        )
        session.add(busy)
        session.flush()
        operation_id = busy.id

    def view() -> TaskView:
        (only,) = read_pass_now(context, service_id).snapshot.tasks
        return only

    # An operation on a replica under way: the service is not settled, its views are kept.
    kept = view()
    reconcile(context, service_id)
    assert view() is kept
    with db.session() as session:
        session.get_one(Operation, operation_id).status = "succeeded"
    settled = view()
    reconcile(context, service_id)
    # Running as asked, nothing under way: a pass that changes nothing lets its views go.
    assert view() is not settled and view() == settled

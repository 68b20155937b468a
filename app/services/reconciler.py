"""The service reconciler: level-triggered, one owner per service at a time (a lease).

Each pass reads what a service should run (its revision, replica count, placement) and what its
tasks really are (containers labelled with the service and slot, kept current by the watcher),
and takes the next steps toward the first: start missing replicas, replace dead ones with
backoff, remove surplus ones, move replicas off draining or lost hosts, and roll updates forward
batch by batch — rolling back (or pausing) when a new replica fails. Every step is an ordinary
container operation. A pass reads a snapshot, lets the pure `decide` (app.services.decide)
choose the steps, and `apply` turns them into rows and operations in the pass's transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import assert_never

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.containers import scheduler
from app.containers import service as containers
from app.containers.models import Container
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.errors import Conflict
from app.hosts.models import Host
from app.operations import queue
from app.operations.models import QUEUED, RUNNING, Operation
from app.services.decide import (
    Decision,
    DeleteService,
    DeleteTask,
    HostView,
    MarkReady,
    MarkRemoved,
    PauseUpdate,
    RollBack,
    Rollout,
    ServiceView,
    SetRollout,
    SetSlots,
    SetStatus,
    SettleRollout,
    Snapshot,
    StartReplica,
    TaskView,
    decide,
    slots_from_json,
    slots_to_json,
)
from app.services.models import (
    RolloutOutcome,
    RolloutPhase,
    Service,
    ServiceRevision,
    ServiceStatus,
)
from app.services.schemas import ServiceSpec
from app.services.service import container_spec, replica_image, revision_digest
from app.workers import leases, wakeups
from app.workers.loops import LoopService

log = logging.getLogger("berth.services")

ACTOR = "reconciler"
_COALESCE_SECONDS = 0.1


def reconcile(app: AppContext, service_id: str) -> None:
    with app.db.session() as session:
        service = session.get(Service, service_id, with_for_update=True)
        if service is None:
            return
        snapshot, tasks = _snapshot(session, service, settings=app.settings)
        now = utcnow()
        apply(
            session,
            service=service,
            tasks=tasks,
            decision=decide(snapshot, now),
            now=now,
            max_attempts=app.settings.operation_max_attempts,
        )


def _snapshot(
    session: Session, service: Service, *, settings: Settings
) -> tuple[Snapshot, dict[str, Container]]:
    """What `decide` needs, and the task rows `apply` changes."""
    # Operations before replicas: on PostgreSQL each statement sees its own snapshot, and a
    # create that finishes in between must show as done on its replica, never as neither
    # busy nor created (which would count as a failure and replace it).
    busy = {
        target
        for target in session.execute(
            select(Operation.target_id).where(
                Operation.target_type == "container",
                Operation.target_id.in_(
                    select(Container.id).where(Container.service_id == service.id)
                ),
                Operation.status.in_((QUEUED, RUNNING)),
            )
        ).scalars()
        if target is not None
    }
    tasks = {
        task.id: task
        for task in session.execute(
            select(Container).where(Container.service_id == service.id)
        ).scalars()
    }
    hosts = {
        host.id: HostView(
            id=host.id, status=host.status, draining=host.draining, last_seen_at=host.last_seen_at
        )
        for host in session.execute(select(Host)).scalars()
    }
    rollout = Rollout.from_json(service.rollout) if service.rollout else None
    previous_spec = None
    if rollout is not None and rollout.phase == RolloutPhase.UPDATING:
        # What a failure of this update rolls back to.
        previous_spec = session.execute(
            select(ServiceRevision.spec).where(
                ServiceRevision.service_id == service.id,
                ServiceRevision.revision == rollout.from_revision,
            )
        ).scalar_one_or_none()
    snapshot = Snapshot(
        service=ServiceView(
            id=service.id,
            revision=service.revision,
            spec=ServiceSpec.model_validate(service.spec),
            replicas=service.replicas,
            status=service.status,
            status_detail=service.status_detail,
            outcome=service.outcome,
            removing=service.removing,
            rollout=rollout,
            slots=slots_from_json(service.slots or {}),
        ),
        tasks=tuple(
            TaskView(
                id=task.id,
                slot=task.slot or 0,
                revision=task.revision,
                host_id=task.host_id,
                state=task.state,
                health=task.health,
                exit_code=task.exit_code,
                desired_state=task.desired_state,
                ready_at=task.ready_at,
                created_at=task.created_at,
                busy=task.id in busy,
                error=task.error,
            )
            for task in tasks.values()
        ),
        hosts=hosts,
        host_down_grace=timedelta(seconds=settings.host_down_grace_seconds),
        previous_spec=previous_spec,
    )
    return snapshot, tasks


def apply(
    session: Session,
    *,
    service: Service,
    tasks: dict[str, Container],
    decision: Decision,
    now: datetime,
    max_attempts: int,
) -> None:
    """Carry out a decision in the caller's transaction, in its order: rows, and the container
    operations that make the engines follow them."""
    spread = dict(decision.spread)
    placer = scheduler.Placer(session)  # hosts and their usage read once for the whole pass
    unplaceable: list[str] = []
    spec: ServiceSpec | None = None  # the service's, validated once (a rollback changes it)
    for action in decision.actions:
        match action:
            case MarkRemoved(task_id=task_id):
                tasks[task_id].desired_state = "removed"
                tasks[task_id].version += 1
            case DeleteTask(task_id=task_id):
                queue.enqueue(
                    session,
                    kind="container.delete",
                    params={"volumes": False},
                    target_type="container",
                    target_id=task_id,
                    host_id=tasks[task_id].host_id,
                    created_by=ACTOR,
                    max_attempts=max_attempts,
                    project_id=service.project_id,
                )
            case StartReplica(slot=slot):
                spec = spec or ServiceSpec.model_validate(service.spec)
                problem = _start(
                    session,
                    placer=placer,
                    service=service,
                    spec=spec,
                    slot=slot,
                    spread=spread,
                    now=now,
                    max_attempts=max_attempts,
                )
                if problem is not None:
                    unplaceable.append(f"replica {slot}: {problem}")
            case MarkReady(task_id=task_id, ready_at=ready_at):
                tasks[task_id].ready_at = ready_at
            case RollBack():
                log.warning(
                    "update failed; rolling back",
                    extra={"service_id": service.id, "reason": action.reason},
                )
                service.revision = action.to_revision
                service.spec = action.spec
                spec = None
            case PauseUpdate(reason=reason):
                log.warning("update paused", extra={"service_id": service.id, "reason": reason})
            case SettleRollout(outcome=outcome, detail=detail):
                service.status_detail = detail
                service.outcome = outcome
            case SetRollout(rollout=rollout):
                service.rollout = rollout.to_json() if rollout is not None else None
            case SetSlots(slots=slots):
                service.slots = slots_to_json(slots)
            case SetStatus():
                if action.degraded_if_unplaceable and unplaceable:
                    _set_status(
                        service, ServiceStatus.DEGRADED, "cannot place " + "; ".join(unplaceable)
                    )
                else:
                    _set_status(service, action.status, action.detail, action.outcome)
            case DeleteService():
                session.delete(service)
            case _:
                assert_never(action)


def _start(
    session: Session,
    *,
    placer: scheduler.Placer,
    service: Service,
    spec: ServiceSpec,
    slot: int,
    spread: dict[str, int],
    now: datetime,
    max_attempts: int,
) -> str | None:
    """A new task of the service's revision in `slot`, placed and queued for creation; or why
    it cannot be placed."""
    task_spec = container_spec(spec)
    task_spec.image = replica_image(spec, revision_digest(session, service))
    placement = placer.place(
        task_spec,
        spec.placement.constraints,
        spread=spread,
        max_per_host=spec.placement.max_per_host,
        project_id=service.project_id,
    )
    if placement.host is None:
        return "; ".join(f"{name}: {why}" for name, why in placement.reasons.items()) or "no hosts"
    task_id = new_id()
    name = spec.container_name or f"{service.name}.{slot}.{task_id[-6:]}"
    if (
        spec.container_name is not None
        and session.execute(
            select(Container.id).where(
                Container.host_id == placement.host.id, Container.name == spec.container_name
            )
        ).first()
    ):
        # The replica it replaces holds the name until its container is removed.
        return f"{placement.host.name}: container name {name!r} is still taken"
    task = Container(
        id=task_id,
        name=name,
        host_id=placement.host.id,
        service_id=service.id,
        project_id=service.project_id,
        slot=slot,
        revision=service.revision,
        spec=task_spec.model_dump(mode="json"),
        image=task_spec.image,
        labels=spec.labels,
        managed=True,
        desired_state="running",
        state="pending",
        created_at=now,
        version=1,
    )
    session.add(task)
    session.flush()
    try:
        with session.begin_nested():
            containers.claim_ports(session, task, task_spec)
    except Conflict as exc:
        session.delete(task)
        return exc.detail
    queue.enqueue(
        session,
        kind="container.create",
        target_type="container",
        target_id=task.id,
        host_id=task.host_id,
        created_by=ACTOR,
        max_attempts=max_attempts,
        project_id=service.project_id,
    )
    spread[task.host_id] = spread.get(task.host_id, 0) + 1
    return None


def _set_status(
    service: Service,
    status: ServiceStatus,
    detail: str | None,
    outcome: RolloutOutcome | None = None,
) -> None:
    if service.status != status or service.status_detail != detail:
        service.status = status
        service.status_detail = detail
        service.updated_at = utcnow()
    # Follows the detail it explains; never a reason on its own to touch `updated_at`.
    service.outcome = outcome


class ServiceReconciler(LoopService):
    name = "service-reconciler"

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.settings.reconcile_interval_seconds)
        self.app = app
        self.holder = leases.member_holder("reconciler")
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._unsubscribe = wakeups.subscribe(wakeups.SERVICES, self.wake)
        super().start()

    def stop(self, timeout: float) -> None:
        self._unsubscribe()
        super().stop(timeout)
        leases.release_all(self.app.db, holder=self.holder)

    def run_once(self) -> None:
        # A burst of container events is one reason to look, not one pass each.
        self._stop.wait(_COALESCE_SECONDS)
        with self.app.db.session(write=False) as session:
            service_ids = list(session.execute(select(Service.id)).scalars())
        ttl = max(10.0, 5 * self.interval)
        for service_id in service_ids:
            if self.stopping:
                return
            if (
                leases.acquire(
                    self.app.db, f"service.{service_id}", holder=self.holder, ttl_seconds=ttl
                )
                is None
            ):
                continue
            try:
                reconcile(self.app, service_id)
            except Exception:
                log.exception("reconciling a service failed", extra={"service_id": service_id})

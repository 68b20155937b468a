"""The service reconciler: level-triggered, one owner per service at a time (a lease).

Each pass reads what a service should run (its revision, replica count, placement) and what its
tasks really are (containers labelled with the service and slot, kept current by the watcher),
and takes the next steps toward the first: start missing replicas, replace dead ones with
backoff, remove surplus ones, move replicas off draining or lost hosts, and roll updates forward
batch by batch — rolling back (or pausing) when a new replica fails. Every step is an ordinary
container operation; the pass itself only decides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.containers import scheduler
from app.containers import service as containers
from app.containers.models import Container
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.errors import Conflict
from app.hosts.models import Host
from app.operations import queue
from app.operations.models import QUEUED, RUNNING, Operation
from app.services.models import Service, ServiceRevision
from app.services.schemas import ServiceSpec
from app.services.service import container_spec, is_ready
from app.workers import leases, wakeups
from app.workers.loops import LoopService

log = logging.getLogger("berth.services")

ACTOR = "reconciler"
_FAILED_STATES = ("exited", "dead", "missing")
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 30.0
_COALESCE_SECONDS = 0.1


@dataclass
class Pass:
    """One reconciliation of one service, inside one transaction."""

    app: AppContext
    session: Session
    service: Service
    now: datetime
    busy: set[str] = field(default_factory=set)
    hosts: dict[str, Host] = field(default_factory=dict)
    unplaceable: list[str] = field(default_factory=list)
    _spec: tuple[int, ServiceSpec] | None = None

    @property
    def spec(self) -> ServiceSpec:
        # Validated once per revision in a pass, not on every use (a rollback changes it).
        if self._spec is None or self._spec[0] != self.service.revision:
            self._spec = (self.service.revision, ServiceSpec.model_validate(self.service.spec))
        return self._spec[1]

    def lost(self, task: Container) -> bool:
        host = self.hosts.get(task.host_id)
        if host is None:
            return True
        grace = timedelta(seconds=self.app.settings.host_down_grace_seconds)
        return host.status == "unreachable" and (
            host.last_seen_at is None or host.last_seen_at < self.now - grace
        )

    def draining(self, task: Container) -> bool:
        host = self.hosts.get(task.host_id)
        return host is not None and host.draining

    def failed(self, task: Container) -> bool:
        if task.id in self.busy:
            return False
        if task.state in _FAILED_STATES or task.health == "unhealthy":
            return True
        # Its create operation ended without a container (the engine refused it).
        return task.state == "pending"

    def remove(self, task: Container) -> None:
        if task.id in self.busy:
            return
        if task.desired_state != "removed":
            task.desired_state = "removed"
            task.version += 1
        host = self.hosts.get(task.host_id)
        if host is not None and host.status != "ready":
            return  # removed once the host answers again
        queue.enqueue(
            self.session,
            kind="container.delete",
            params={"volumes": False},
            target_type="container",
            target_id=task.id,
            host_id=task.host_id,
            created_by=ACTOR,
            max_attempts=self.app.settings.operation_max_attempts,
        )
        self.busy.add(task.id)

    def start(self, slot: int, spread: dict[str, int]) -> Container | None:
        spec = self.spec
        task_spec = container_spec(spec)
        placement = scheduler.place(
            self.session,
            task_spec,
            spec.placement.constraints,
            spread=spread,
            max_per_host=spec.placement.max_per_host,
        )
        if placement.host is None:
            reasons = "; ".join(f"{name}: {why}" for name, why in placement.reasons.items())
            self.unplaceable.append(f"replica {slot}: {reasons or 'no hosts'}")
            return None
        task_id = new_id()
        task = Container(
            id=task_id,
            name=f"{self.service.name}.{slot}.{task_id[-6:]}",
            host_id=placement.host.id,
            service_id=self.service.id,
            slot=slot,
            revision=self.service.revision,
            spec=task_spec.model_dump(mode="json"),
            image=spec.image,
            labels=spec.labels,
            managed=True,
            desired_state="running",
            state="pending",
            created_at=self.now,
            version=1,
        )
        self.session.add(task)
        self.session.flush()
        try:
            with self.session.begin_nested():
                containers.claim_ports(self.session, task, task_spec)
        except Conflict as exc:
            self.session.delete(task)
            self.unplaceable.append(f"replica {slot}: {exc.detail}")
            return None
        queue.enqueue(
            self.session,
            kind="container.create",
            target_type="container",
            target_id=task.id,
            host_id=task.host_id,
            created_by=ACTOR,
            max_attempts=self.app.settings.operation_max_attempts,
        )
        self.busy.add(task.id)
        spread[task.host_id] = spread.get(task.host_id, 0) + 1
        return task


def _backoff(failures: int) -> float:
    return float(min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** max(0, failures - 1)))


def reconcile(app: AppContext, service_id: str) -> None:
    with app.db.session() as session:
        service = session.get(Service, service_id, with_for_update=True)
        if service is None:
            return
        # Operations before replicas: on PostgreSQL each statement sees its own snapshot, and a
        # create that finishes in between must show as done on its replica, never as neither
        # busy nor created (which would count as a failure and replace it).
        busy = {
            target
            for target in session.execute(
                select(Operation.target_id).where(
                    Operation.target_type == "container",
                    Operation.target_id.in_(
                        select(Container.id).where(Container.service_id == service_id)
                    ),
                    Operation.status.in_((QUEUED, RUNNING)),
                )
            ).scalars()
            if target is not None
        }
        tasks = list(
            session.execute(select(Container).where(Container.service_id == service_id)).scalars()
        )
        step = Pass(app=app, session=session, service=service, now=utcnow())
        step.busy = busy
        step.hosts = {h.id: h for h in session.execute(select(Host)).scalars()}
        _converge(step, tasks)


def _converge(step: Pass, tasks: list[Container]) -> None:
    service = step.service
    if service.removing:
        for task in tasks:
            if task.id not in step.busy:
                step.remove(task)
        if not tasks:
            step.session.delete(service)
        else:
            _set_status(service, "removing", f"removing {len(tasks)} replica(s)")
        return

    slots: dict[str, Any] = dict(service.slots or {})
    rollout: dict[str, Any] | None = dict(service.rollout) if service.rollout else None

    # Replicas that ended: count the failure, remove them; the slot is refilled below.
    for task in tasks:
        if task.desired_state == "removed":
            if task.id not in step.busy and step.hosts.get(task.host_id) is not None:
                step.remove(task)  # a delete that failed while the host was away
            continue
        if not step.failed(task):
            continue
        state = dict(slots.get(str(task.slot), {}))
        state["failures"] = int(state.get("failures", 0)) + 1
        state["retry_at"] = (step.now + timedelta(seconds=_backoff(state["failures"]))).isoformat()
        policy = step.spec.restart_policy
        if policy == "none" or (policy == "on-failure" and task.exit_code == 0):
            state["done"] = True
        slots[str(task.slot)] = state
        if rollout and rollout["phase"] == "updating" and task.revision == service.revision:
            rollout["failures"] = int(rollout.get("failures", 0)) + 1
            rollout["reason"] = (
                f"replica {task.slot} of revision {service.revision} "
                f"{'became unhealthy' if task.health == 'unhealthy' else 'ended: ' + task.state}"
                + (f" (exit code {task.exit_code})" if task.exit_code is not None else "")
            )
        step.remove(task)
    active = [t for t in tasks if t.desired_state != "removed"]

    if rollout and rollout["phase"] == "updating" and rollout.get("failures"):
        rollout = _on_update_failure(step, rollout)

    spec = step.spec
    monitor = timedelta(seconds=spec.update_config.monitor_s if rollout else 0)
    by_slot: dict[int, list[Container]] = {}
    for task in active:
        by_slot.setdefault(task.slot or 0, []).append(task)
    for slot, slot_tasks in by_slot.items():
        if slot < 1 or slot > service.replicas:
            for task in slot_tasks:
                step.remove(task)

    spread: dict[str, int] = {}
    for task in active:
        if not step.lost(task) and task.desired_state != "removed":
            spread[task.host_id] = spread.get(task.host_id, 0) + 1
    in_progress = set(rollout.get("in_progress", [])) if rollout else set()
    ready_slots = 0
    settled = True
    for slot in range(1, service.replicas + 1):
        slot_tasks = [t for t in by_slot.get(slot, []) if t.desired_state != "removed"]
        usable = [t for t in slot_tasks if not step.lost(t)]
        current = [t for t in usable if t.revision == service.revision and not step.draining(t)]
        stale = [t for t in usable if t not in current]
        for task in current:
            if is_ready(task, spec):
                task.ready_at = task.ready_at or step.now
            else:
                task.ready_at = None
        if len(current) > 1:
            # A lost host came back with its copy, or a duplicate: keep the best, newest one.
            current.sort(key=lambda t: (t.ready_at is not None, t.created_at), reverse=True)
            for extra in current[1:]:
                step.remove(extra)
            current = current[:1]
        if current:
            task = current[0]
            proven = task.ready_at is not None and step.now - task.ready_at >= monitor
            if proven:
                ready_slots += 1
                slots.pop(str(slot), None)
                for old in stale:
                    step.remove(old)
                in_progress.discard(slot)
            else:
                settled = False
            if stale:
                settled = False
            continue
        settled = False
        if stale:
            # Replace an old revision's replica, or move one off a draining host.
            if rollout and rollout["phase"] == "paused":
                continue
            parallelism = spec.update_config.parallelism
            if slot not in in_progress:
                if len(in_progress) >= parallelism:
                    continue
                next_batch = rollout.get("next_batch_at") if rollout else None
                if next_batch and datetime.fromisoformat(next_batch) > step.now:
                    continue
                in_progress.add(slot)
                if rollout and spec.update_config.delay_s and len(in_progress) >= parallelism:
                    rollout["next_batch_at"] = (
                        step.now + timedelta(seconds=spec.update_config.delay_s)
                    ).isoformat()
            moving = any(step.draining(t) for t in stale)
            if spec.update_config.order == "stop-first" and not moving:
                for old in stale:
                    step.remove(old)
                continue
            step.start(slot, spread)
            continue
        state = slots.get(str(slot), {})
        if state.get("done"):
            continue
        retry_at = state.get("retry_at")
        if retry_at and datetime.fromisoformat(retry_at) > step.now:
            continue
        step.start(slot, spread)

    if rollout is not None:
        rollout["in_progress"] = sorted(in_progress)
        if settled and ready_slots == service.replicas:
            outcome = (
                f"rolled back to revision {service.revision}: {rollout.get('reason', '')}".rstrip(
                    ": "
                )
                if rollout["phase"] == "rolling_back"
                else f"updated to revision {service.revision}"
            )
            rollout = None
            service.status_detail = outcome
    service.rollout = rollout
    service.slots = slots
    if rollout is not None:
        status = {"updating": "updating", "rolling_back": "rolling_back", "paused": "paused"}[
            rollout["phase"]
        ]
        detail: str | None = (
            rollout.get("reason")
            if status != "updating"
            else f"{ready_slots}/{service.replicas} replicas at revision {service.revision}"
        )
        _set_status(service, status, detail)
    elif step.unplaceable:
        _set_status(service, "degraded", "cannot place " + "; ".join(step.unplaceable))
    elif settled and ready_slots == service.replicas:
        _set_status(
            service,
            "running",
            service.status_detail
            if service.status in ("updating", "rolling_back", "running")
            else None,
        )
    else:
        _set_status(service, "converging", f"{ready_slots}/{service.replicas} replicas ready")


def _on_update_failure(step: Pass, rollout: dict[str, Any]) -> dict[str, Any]:
    service = step.service
    action = step.spec.update_config.failure_action
    if action == "pause":
        rollout["phase"] = "paused"
        log.warning(
            "update paused", extra={"service_id": service.id, "reason": rollout.get("reason")}
        )
        return rollout
    previous = step.session.execute(
        select(ServiceRevision.spec).where(
            ServiceRevision.service_id == service.id, ServiceRevision.revision == rollout["from"]
        )
    ).scalar_one()
    log.warning(
        "update failed; rolling back",
        extra={"service_id": service.id, "reason": rollout.get("reason")},
    )
    failed_revision = service.revision
    service.revision = int(rollout["from"])
    service.spec = {**previous, "replicas": service.replicas}
    return {
        "phase": "rolling_back",
        "from": failed_revision,
        "to": service.revision,
        "started_at": step.now.isoformat(),
        "failures": 0,
        "reason": rollout.get("reason"),
    }


def _set_status(service: Service, status: str, detail: str | None) -> None:
    if service.status != status or service.status_detail != detail:
        service.status = status
        service.status_detail = detail
        service.updated_at = utcnow()


class ServiceReconciler(LoopService):
    name = "service-reconciler"

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.settings.reconcile_interval_seconds)
        self.app = app
        self.holder = f"reconciler-{new_id()}"
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

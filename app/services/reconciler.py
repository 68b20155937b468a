"""The service reconciler: level-triggered, one owner per service at a time (a lease).

Each pass reads what a service should run (its revision, replica count, placement) and what its
tasks really are (containers labelled with the service and slot, kept current by the watcher),
and takes the next steps toward the first: start missing replicas, replace dead ones with
backoff, remove surplus ones, move replicas off draining or lost hosts, and roll updates forward
batch by batch — rolling back (or pausing) when a new replica fails. Every step is an ordinary
container operation. A pass reads a snapshot, lets the pure `decide` (app.services.decide)
choose the steps, and `apply` turns them into rows and operations in the pass's transaction.

The snapshot is read, decided and its new replicas placed in a read session, outside SQLite's
process-wide write lock (whose holder every other writer waits for: the executor's claims and
outcomes, the watcher, leases). The write transaction only locks the service, reads the task
views again and applies: a pass costs the lock in proportion to what it writes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from app.containers import scheduler
from app.containers import service as containers
from app.containers.models import Container
from app.containers.schemas import ContainerSpec
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.errors import Conflict
from app.hosts.models import Host
from app.operations import queue
from app.operations.models import QUEUED, RUNNING, Operation
from app.projects.quotas import set_aside
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
from app.services.service import container_spec, replica_image
from app.workers import leases, wakeups
from app.workers.loops import LoopService

log = logging.getLogger("berth.services")

ACTOR = "reconciler"
_COALESCE_SECONDS = 0.1
# A round's pause is at least this many times the last round's length, so passes over a large
# service take at most about a fifth of the process (they share its interpreter with the
# creates they ask for): a pass over 1,500 replicas woken by every replica's events took a
# quarter of the server while they started, slowing the starts it waited for.
_PAUSE_PER_ROUND = 4.0
# ... but a change is looked at within a second, however long the rounds.
_MAX_PAUSE_SECONDS = 1.0
# Reads and decisions outside the write lock that a concurrent change may make stale, before
# a pass decides under the lock.
_OPTIMISTIC_TRIES = 3


def reconcile(app: AppContext, service_id: str, *, lease: leases.Fence | None = None) -> None:
    """One pass over a service: read, decide and place outside the write transaction, then
    take the write lock only to check the views again and apply (`commit_pass`: a concurrent
    change is re-decided, never doubled). With `lease`, only while it still holds that lease
    (checked in the write transaction): a holder that stalled past it writes nothing."""
    settings = app.settings
    for _ in range(_OPTIMISTIC_TRIES):
        with app.db.session(write=False) as session:
            plan = read_pass(session, service_id, settings=settings, now=utcnow())
        if plan is not None and plan.changes_nothing and plan.settled:
            # Its views are kept for the passes of a service that is changing: a settled one's
            # next pass is a sweep's, and thousands of idle replicas' views would only weigh.
            _TASK_VIEWS.forget(service_id)
        if plan is None or plan.changes_nothing or commit_pass(app, plan, lease=lease):
            return
    # Its placements went stale every time (hosts filling up under other writers): decide and
    # place under the lock this time, so a pass always makes progress.
    with app.db.session() as session:
        if lease is not None and not lease.holds(session):
            return
        service = session.get(Service, service_id, with_for_update=True)
        if service is None:
            return
        plan = read_pass(session, service_id, settings=settings, now=utcnow())
        if plan is not None:
            apply(session, service=service, plan=plan, max_attempts=settings.operation_max_attempts)


def commit_pass(app: AppContext, plan: Plan, *, lease: leases.Fence | None = None) -> bool:
    """Apply a plan made outside the write transaction, in one; False (and nothing written) if
    it went stale meanwhile (`_decide_again`). True, with nothing written, if `lease` is no
    longer held: the service is another holder's now."""
    with app.db.session() as session:
        if lease is not None and not lease.holds(session):
            log.info("service lease lost; pass not applied", extra={"lease": lease.name})
            return True
        service = session.get(Service, plan.snapshot.service.id, with_for_update=True)
        if service is None:
            return True  # deleted meanwhile: nothing left to do
        fresh = _decide_again(session, service, plan, settings=app.settings)
        if fresh is None:
            return False
        apply(
            session, service=service, plan=fresh, max_attempts=app.settings.operation_max_attempts
        )
        return True


@dataclass(frozen=True)
class _Placed:
    """Where the plan puts a new replica."""

    host_id: str
    host_name: str


@dataclass(frozen=True)
class Plan:
    """A decision, with what it was decided from and the placements of its new replicas."""

    snapshot: Snapshot
    now: datetime
    decision: Decision
    # Per slot to start: its placement, or why it has none.
    placements: Mapping[int, _Placed | str]
    # What the new replicas run: the spec of the revision they start at (the one a rollback
    # in the decision returns to), with its image digest.
    task_spec: ContainerSpec | None
    # The usage the placements were counted against, of the hosts they chose: checked again
    # when the replicas set resources aside (else a concurrent placement could overcommit).
    usage_seen: Mapping[str, scheduler.Usage]

    @property
    def settled(self) -> bool:
        """Whether the service runs as asked, with no operation on any replica under way."""
        snapshot = self.snapshot
        return (
            snapshot.service.status == ServiceStatus.RUNNING
            and snapshot.service.rollout is None
            and not any(task.busy for task in snapshot.tasks)
        )

    @property
    def changes_nothing(self) -> bool:
        """Whether applying the decision would leave every row as it is (a converged service's
        pass): then no write transaction is needed at all."""
        service = self.snapshot.service
        for action in self.decision.actions:
            match action:
                case SetRollout(rollout=rollout) if rollout == service.rollout:
                    continue
                case SetSlots(slots=slots) if dict(slots) == dict(service.slots):
                    continue
                case SetStatus() if (action.status, action.detail, action.outcome) == (
                    service.status,
                    service.status_detail,
                    service.outcome,
                ):
                    continue
            return False
        return True


def read_pass(
    session: Session, service_id: str, *, settings: Settings, now: datetime
) -> Plan | None:
    """The plan of a pass: its snapshot, the decision, and where the new replicas go."""
    service = session.get(Service, service_id)
    if service is None:
        return None
    snapshot = _snapshot(session, service, settings=settings)
    decision = decide(snapshot, now)
    starts = _starts(decision)
    placements: dict[int, _Placed | str] = {}
    usage_seen: dict[str, scheduler.Usage] = {}
    task_spec = None
    if starts:
        spec, revision = snapshot.service.spec, service.revision
        if rollback := _rollback(decision):  # applied before the starts
            spec, revision = ServiceSpec.model_validate(rollback.spec), rollback.to_revision
        task_spec = container_spec(spec)
        task_spec.image = replica_image(spec, _digest(session, service.id, revision))
        # Placement reads usage as the earlier actions leave it: the tasks they remove no longer
        # count.
        placer = scheduler.Placer(session, ignoring=_removed(decision))
        spread = dict(decision.spread)
        for slot in starts:
            placement = placer.place(
                task_spec,
                spec.placement.constraints,
                spread=spread,
                max_per_host=spec.placement.max_per_host,
                project_id=service.project_id,
            )
            if placement.host is None:
                reasons = placement.reasons.items()
                placements[slot] = (
                    "; ".join(f"{name}: {why}" for name, why in reasons) or "no hosts"
                )
                continue
            placements[slot] = _Placed(placement.host.id, placement.host.name)
            spread[placement.host.id] = spread.get(placement.host.id, 0) + 1
        usage_seen = placer.usage_read(
            {p.host_id for p in placements.values() if isinstance(p, _Placed)}
        )
    return Plan(snapshot, now, decision, placements, task_spec, usage_seen)


def _digest(session: Session, service_id: str, revision: int) -> str | None:
    """The image digest `revision` of the service was deployed with, if one was."""
    digest = select(ServiceRevision.image_digest).where(
        ServiceRevision.service_id == service_id, ServiceRevision.revision == revision
    )
    return session.execute(digest).scalar_one_or_none()


def _decide_again(
    session: Session, service: Service, plan: Plan, *, settings: Settings
) -> Plan | None:
    """In the write transaction, with the service locked: the plan for the views as they are
    now, or None if its placements no longer serve it. Views carry no JSON and `decide` is
    pure, so this is cheap; placing (the part that reads every host's usage) is what stays
    outside the lock. Task states that changed meanwhile (a busy rollout's events) only need a
    new decision; a changed service, other slots to fill, another spread, a rollback the plan
    did not place for, or more carried by the hosts the replicas go to (when they set resources
    aside) need a new plan."""
    snapshot = _snapshot(session, service, settings=settings)
    if snapshot == plan.snapshot:
        decision = plan.decision
    else:
        decision = decide(snapshot, plan.now)
        if (
            snapshot.service != plan.snapshot.service
            or snapshot.previous_spec != plan.snapshot.previous_spec
            or not set(_starts(decision)) <= plan.placements.keys()
            or decision.spread != plan.decision.spread
            or _rollback(decision) != _rollback(plan.decision)
            or not _removed(plan.decision) <= _removed(decision)
        ):
            return None
    if (
        plan.task_spec is not None
        and plan.usage_seen
        and any(set_aside(plan.task_spec.resources.model_dump()))
    ):
        now_used = scheduler.usage(session, hosts=plan.usage_seen, ignoring=_removed(plan.decision))
        nothing = scheduler.Usage()
        if any(now_used.get(h, nothing) != used for h, used in plan.usage_seen.items()):
            return None
    return replace(plan, snapshot=snapshot, decision=decision)


def _rollback(decision: Decision) -> RollBack | None:
    return next((a for a in decision.actions if isinstance(a, RollBack)), None)


def _starts(decision: Decision) -> list[int]:
    return [action.slot for action in decision.actions if isinstance(action, StartReplica)]


def _removed(decision: Decision) -> set[str]:
    return {action.task_id for action in decision.actions if isinstance(action, MarkRemoved)}


def _snapshot(session: Session, service: Service, *, settings: Settings) -> Snapshot:
    """What `decide` needs: the service, its tasks as views (no spec), and their hosts."""
    # Operations before replicas: on PostgreSQL each statement sees its own snapshot, and a
    # create that finishes in between must show as done on its replica, never as neither
    # busy nor created (which would count as a failure and replace it).
    service_tasks = select(Container.id).where(Container.service_id == service.id)
    busy = {
        target
        for target in session.execute(
            select(Operation.target_id).where(
                Operation.target_type == "container",
                Operation.target_id.in_(service_tasks),
                Operation.status.in_((QUEUED, RUNNING)),
            )
        ).scalars()
        if target is not None
    }
    tasks = _TASK_VIEWS.read(session, service.id, busy)
    # Only the hosts its tasks are on: `decide` looks no other up. When a host was last seen
    # only matters once it is unreachable; leaving it out otherwise keeps the prober's rounds
    # from making a snapshot stale.
    hosts = {
        row.id: HostView(
            id=row.id,
            status=row.status,
            draining=row.draining,
            last_seen_at=row.last_seen_at if row.status == "unreachable" else None,
        )
        for row in session.execute(
            select(Host.id, Host.status, Host.draining, Host.last_seen_at).where(
                Host.id.in_(select(Container.host_id).where(Container.service_id == service.id))
            )
        )
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
    return Snapshot(
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
        tasks=tasks,
        hosts=hosts,
        host_down_grace=timedelta(seconds=settings.host_down_grace_seconds),
        previous_spec=previous_spec,
    )


# A task's view columns as stored: the two datetimes undecoded (the only columns whose values
# Python converts), so that comparing a row with the one a view was made from is cheap.
_RAW_TASK_COLUMNS = (
    Container.id,
    Container.slot,
    Container.revision,
    Container.host_id,
    Container.state,
    Container.health,
    Container.exit_code,
    Container.desired_state,
    type_coerce(Container.ready_at, NullType()).label("raw_ready_at"),
    type_coerce(Container.created_at, NullType()).label("raw_created_at"),
    Container.error,
)
_RawTask = tuple[Any, ...]


class _TaskViewCache:
    """Each service's task views as the passes made them, with the stored row each was made
    from. A pass reads every task's row as stored (no conversion), reuses the view of each row
    that is the same as before, and reads and converts only the rows that changed (or are new)
    since: a pass over a service of thousands of replicas of which a few changed costs a
    comparison per replica, not a conversion and a new view.

    A view is reused only for a row equal, column for column, to the one it was made from, so
    it is always the view a fresh read would make: the cache cannot go stale, only miss. Views
    are immutable; a service's entry is replaced whole, so passes in other threads read either
    the old entry or the new one."""

    def __init__(self, services: int) -> None:
        self._services = services
        self._views: dict[str, dict[str, tuple[_RawTask, TaskView]]] = {}

    def read(self, session: Session, service_id: str, busy: set[str]) -> tuple[TaskView, ...]:
        """The service's task views, in id order, as its rows are now."""
        known = self._views.get(service_id, {})
        # Through the connection: rows as tuples, without the ORM's per-row work.
        stored = [
            tuple(row)
            for row in session.connection()
            .execute(
                select(*_RAW_TASK_COLUMNS)
                .where(Container.service_id == service_id)
                .order_by(Container.id)
            )
            .all()
        ]
        changed = {row[0] for row in stored if known.get(row[0], _UNKNOWN)[0] != row}
        converted = (
            self._convert(session, service_id, changed, every=len(stored)) if changed else {}
        )
        views: dict[str, tuple[_RawTask, TaskView]] = {}
        for row in stored:
            # A changed row gone by the second read was deleted meanwhile: left out, as a read
            # after the deletion would.
            entry = converted.get(row[0]) if row[0] in changed else known[row[0]]
            if entry is not None:
                views[row[0]] = entry
        for task_id, (raw, view) in views.items():
            if view.busy != (task_id in busy):
                # Kept as it now is: a replica is busy for several passes in a row.
                views[task_id] = (raw, replace(view, busy=not view.busy))
        if service_id not in self._views and len(self._views) >= self._services:
            self._views.pop(next(iter(self._views)), None)  # the service cached longest ago
        self._views[service_id] = views
        return tuple(view for _, view in views.values())

    def forget(self, service_id: str) -> None:
        self._views.pop(service_id, None)

    @staticmethod
    def _convert(
        session: Session, service_id: str, task_ids: set[str], *, every: int
    ) -> dict[str, tuple[_RawTask, TaskView]]:
        """The views of `task_ids`, read again with their datetimes converted. Each is keyed by
        the row this read saw (on PostgreSQL it may be newer than the first read's): a view and
        its key always come from the same row."""
        statement = select(*_RAW_TASK_COLUMNS, Container.ready_at, Container.created_at)
        if len(task_ids) * 2 > every:  # most of them (a first pass): the service's rows
            statement = statement.where(Container.service_id == service_id)
        else:
            statement = statement.where(Container.id.in_(task_ids))
        converted = {}
        for *stored, ready_at, created_at in session.connection().execute(statement).all():
            raw = _shared(tuple(stored))
            converted[raw[0]] = (raw, _task_view(raw, ready_at=ready_at, created_at=created_at))
        return converted


def _task_view(raw: _RawTask, *, ready_at: datetime | None, created_at: datetime) -> TaskView:
    task_id, slot, revision, host_id, state, health, exit_code, desired, _, _, error = raw
    return TaskView(
        id=task_id,
        slot=slot or 0,
        revision=revision,
        host_id=host_id,
        state=state,
        health=health,
        exit_code=exit_code,
        desired_state=desired,
        ready_at=ready_at,
        created_at=created_at,
        error=error,
    )


def _shared(raw: _RawTask) -> _RawTask:
    """The row with one string object for each value many replicas repeat (their host, state,
    health and desired state), as their views are kept: megabytes at 10,000 replicas."""
    return tuple(
        sys.intern(value) if index in _REPEATED and isinstance(value, str) else value
        for index, value in enumerate(raw)
    )


_REPEATED = frozenset(
    index
    for index, column in enumerate(_RAW_TASK_COLUMNS)
    if any(
        column is repeated
        for repeated in (
            Container.host_id,
            Container.state,
            Container.health,
            Container.desired_state,
        )
    )
)
_UNKNOWN: tuple[None, None] = (None, None)
# Services whose views are kept: each costs a few hundred bytes per replica.
_TASK_VIEWS = _TaskViewCache(services=64)


def apply(session: Session, *, service: Service, plan: Plan, max_attempts: int) -> None:
    """Carry out a decision in the caller's transaction, in its order: rows, and the container
    operations that make the engines follow them. The new replicas go out as one batched
    INSERT, their create operations as another."""
    decision = plan.decision
    # Only the task rows the decision changes are loaded (with their spec, for their events).
    touched = {
        action.task_id
        for action in decision.actions
        if isinstance(action, (MarkRemoved, MarkReady, DeleteTask))
    }
    tasks = (
        {
            task.id: task
            for task in session.execute(
                select(Container).where(Container.id.in_(touched))
            ).scalars()
        }
        if touched
        else {}
    )
    unplaceable: list[str] = []
    spec: ServiceSpec | None = None  # the service's, validated once (a rollback changes it)
    task_spec: dict[str, Any] | None = None  # what every new replica of this pass runs
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
                if task_spec is None:
                    assert plan.task_spec is not None  # a plan with starts has one
                    task_spec = plan.task_spec.model_dump(mode="json")
                problem = _start(
                    session,
                    service=service,
                    spec=spec,
                    task_spec=task_spec,
                    slot=slot,
                    placement=plan.placements[slot],
                    now=plan.now,
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
    service: Service,
    spec: ServiceSpec,
    task_spec: dict[str, Any],
    slot: int,
    placement: _Placed | str,
    now: datetime,
    max_attempts: int,
) -> str | None:
    """A new task of the service's revision in `slot`, on the host the plan chose, queued for
    creation; or why it cannot be placed."""
    if isinstance(placement, str):
        return placement
    task_id = new_id()
    name = spec.container_name or f"{service.name}.{slot}.{task_id[-6:]}"
    if (
        spec.container_name is not None
        and session.execute(
            select(Container.id).where(
                Container.host_id == placement.host_id, Container.name == spec.container_name
            )
        ).first()
    ):
        # The replica it replaces holds the name until its container is removed.
        return f"{placement.host_name}: container name {name!r} is still taken"
    task = Container(
        id=task_id,
        name=name,
        host_id=placement.host_id,
        service_id=service.id,
        project_id=service.project_id,
        slot=slot,
        revision=service.revision,
        spec=task_spec,
        image=task_spec["image"],
        labels=spec.labels,
        managed=True,
        desired_state="running",
        state="pending",
        created_at=now,
        version=1,
    )
    session.add(task)
    if any(port.host_port for port in spec.ports):
        # Claimed row by row: a port taken meanwhile leaves this replica unplaced, not the pass.
        session.flush()
        try:
            with session.begin_nested():
                containers.claim_ports(session, task, ContainerSpec.model_validate(task_spec))
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
    """Passes over the services this process holds the lease of. A wake-up that names services
    (their tasks changed) brings a pass over those only; every `interval` (and on a wake-up
    that names none: a service itself changed) a sweep passes over them all, taking and renewing
    their leases in one transaction. Between sweeps a pass uses the leases as last renewed (again
    in one transaction, once they are half their life old); each write checks its lease
    (`reconcile`), so a lease lost meanwhile fences it."""

    name = "service-reconciler"

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.settings.reconcile_interval_seconds)
        self.app = app
        self.holder = leases.member_holder("reconciler")
        self.ttl = max(10.0, 5 * self.interval)
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._sweep_due = 0.0  # monotonic; the first round is a sweep
        # The leases the last renewal got (service id -> epoch), the services it found held
        # elsewhere, and until when (monotonic) a pass may rely on them without renewing.
        self._held: dict[str, int] = {}
        self._elsewhere: set[str] = set()
        self._held_until = 0.0
        self._last_round_seconds = 0.0
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._unsubscribe = wakeups.subscribe_keys(wakeups.SERVICES, self.changed)
        super().start()

    def stop(self, timeout: float) -> None:
        self._unsubscribe()
        super().stop(timeout)
        leases.release_all(self.app.db, holder=self.holder)

    def changed(self, service_ids: wakeups.Keys) -> None:
        """A wake-up: these services' tasks changed, or (None) anything may have."""
        with self._lock:
            if service_ids is None:
                self._sweep_due = 0.0
            else:
                self._dirty |= service_ids
        self.wake()

    def run_once(self) -> None:
        # A burst of container events is one reason to look, not one pass each.
        self._stop.wait(pause_before_round(self._last_round_seconds))
        started = time.monotonic()
        try:
            self._round()
        finally:
            self._last_round_seconds = time.monotonic() - started

    def _round(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            sweep = time.monotonic() >= self._sweep_due
            if sweep:
                self._sweep_due = time.monotonic() + self.interval
        if sweep:
            service_ids = self._renew()
        else:
            service_ids = sorted(dirty)
            if any(s not in self._held and s not in self._elsewhere for s in service_ids):
                self._renew()  # a service new since the last sweep
                # Those it still does not hold are another process's, or deleted meanwhile
                # (their replicas' last events name them).
                self._elsewhere |= set(service_ids) - self._held.keys()
        for service_id in service_ids:
            if self.stopping:
                return
            if time.monotonic() >= self._held_until:
                self._renew()  # a long round: renewed before its leases can lapse
            epoch = self._held.get(service_id)
            if epoch is None:
                continue
            fence = leases.Fence(_lease_name(service_id), self.holder, epoch)
            try:
                reconcile(self.app, service_id, lease=fence)
            except Exception:
                log.exception("reconciling a service failed", extra={"service_id": service_id})

    def _renew(self) -> list[str]:
        """Take or renew the leases of every service in one transaction; returns the services."""
        with self.app.db.session(write=False) as session:
            service_ids = list(session.execute(select(Service.id)).scalars())
        held = leases.acquire_many(
            self.app.db,
            [_lease_name(service_id) for service_id in service_ids],
            holder=self.holder,
            ttl_seconds=self.ttl,
        )
        self._held = {
            service_id: held[_lease_name(service_id)]
            for service_id in service_ids
            if _lease_name(service_id) in held
        }
        self._elsewhere = set(service_ids) - self._held.keys()
        # Half the lease's life: passes that rely on the leases renew them well before they
        # lapse (the fence checks the real expiry).
        self._held_until = time.monotonic() + self.ttl / 2
        return service_ids


def pause_before_round(last_round_seconds: float) -> float:
    """How long a round waits for more wake-ups to gather, after a round that took this long."""
    pause = _PAUSE_PER_ROUND * last_round_seconds
    return min(max(_COALESCE_SECONDS, pause), _MAX_PAUSE_SECONDS)


def _lease_name(service_id: str) -> str:
    return f"service.{service_id}"

"""The reconciler's pure core: from a snapshot of one service, its tasks and the hosts, the
next steps toward what the service should run.

`decide(snapshot, now)` reads no clock, database or engine; it returns actions in the order the
reconciler applies them (the order matters: placement reads the rows earlier actions changed).
Placement itself stays with `apply`, since it reads every host's usage and claims ports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from app.services.models import RolloutOutcome, RolloutPhase, ServiceStatus
from app.services.schemas import ServiceSpec

_FAILED_STATES = ("exited", "dead", "missing")
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 30.0
# Statuses after which a settled service keeps its detail (the outcome of the rollout).
_KEEPS_DETAIL = (ServiceStatus.UPDATING, ServiceStatus.ROLLING_BACK, ServiceStatus.RUNNING)


class TaskHealth(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def desired_state(self) -> str: ...
    @property
    def health(self) -> str | None: ...


def is_ready(task: TaskHealth, spec: ServiceSpec) -> bool:
    """Running, and healthy if it has a health check (the spec's or the image's own)."""
    return ready(task.state, task.desired_state, task.health, checked=spec.healthcheck is not None)


def ready(state: str, desired_state: str, health: str | None, *, checked: bool) -> bool:
    """`is_ready` of a task's columns, for a spec with a health check or (`checked`) without."""
    if state != "running" or desired_state != "running":
        return False
    if health is None:
        return not checked
    return health == "healthy"


def backoff(failures: int) -> timedelta:
    return timedelta(seconds=min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** max(0, failures - 1)))


@dataclass(frozen=True)
class Rollout:
    """`Service.rollout`: a change of revision under way."""

    phase: RolloutPhase
    from_revision: int
    to_revision: int
    started_at: datetime
    failures: int = 0
    reason: str | None = None
    next_batch_at: datetime | None = None
    # Slots being replaced in the current batch; None until a pass has looked.
    in_progress: tuple[int, ...] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rollout:
        next_batch = data.get("next_batch_at")
        in_progress = data.get("in_progress")
        return cls(
            phase=RolloutPhase(data["phase"]),
            from_revision=int(data["from"]),
            to_revision=int(data["to"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            failures=int(data.get("failures", 0)),
            reason=data.get("reason"),
            next_batch_at=datetime.fromisoformat(next_batch) if next_batch else None,
            in_progress=None if in_progress is None else tuple(in_progress),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": self.phase.value,
            "from": self.from_revision,
            "to": self.to_revision,
            "started_at": self.started_at.isoformat(),
            "failures": self.failures,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        if self.next_batch_at is not None:
            data["next_batch_at"] = self.next_batch_at.isoformat()
        if self.in_progress is not None:
            data["in_progress"] = list(self.in_progress)
        return data


@dataclass(frozen=True)
class SlotState:
    """`Service.slots[slot]`: restart backoff for a slot whose replicas keep ending."""

    failures: int = 0
    retry_at: datetime | None = None
    # The restart policy says this slot stays empty.
    done: bool = False
    # The revision whose replica of a `one_shot` service exited 0: a task (Compose's init
    # service) that finished, counted as done, not as failing.
    completed: int | None = None
    # Why its last replica failed, when an operation said (the engine refused to start it):
    # what the service's status reports until the slot has a ready replica again.
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SlotState:
        retry_at = data.get("retry_at")
        completed = data.get("completed")
        return cls(
            failures=int(data.get("failures", 0)),
            retry_at=datetime.fromisoformat(retry_at) if retry_at else None,
            done=bool(data.get("done", False)),
            completed=None if completed is None else int(completed),
            reason=data.get("reason"),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"failures": self.failures}
        if self.retry_at is not None:
            data["retry_at"] = self.retry_at.isoformat()
        if self.done:
            data["done"] = True
        if self.completed is not None:
            data["completed"] = self.completed
        if self.reason is not None:
            data["reason"] = self.reason
        return data


def completed(slots: Mapping[int, SlotState], *, revision: int, replicas: int) -> bool:
    """Whether every replica of `revision` ran once and exited 0 (Compose's
    service_completed_successfully)."""
    return all(
        slots.get(slot, SlotState()).completed == revision for slot in range(1, replicas + 1)
    )


def slots_from_json(data: Mapping[str, Any]) -> dict[int, SlotState]:
    return {int(slot): SlotState.from_json(state) for slot, state in data.items()}


def slots_to_json(slots: Mapping[int, SlotState]) -> dict[str, Any]:
    return {str(slot): state.to_json() for slot, state in slots.items()}


@dataclass(frozen=True)
class HostView:
    id: str
    status: str
    draining: bool
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskView:
    """A replica as the watcher last saw it."""

    id: str
    slot: int
    revision: int | None
    host_id: str
    state: str
    health: str | None
    exit_code: int | None
    desired_state: str
    ready_at: datetime | None
    created_at: datetime
    # An operation on it is queued or running: left alone until it ends.
    busy: bool = False
    # Why the last operation on it failed (None once one succeeds).
    error: str | None = None


@dataclass(frozen=True)
class ServiceView:
    id: str
    revision: int
    spec: ServiceSpec
    replicas: int
    status: ServiceStatus
    status_detail: str | None = None
    outcome: RolloutOutcome | None = None
    removing: bool = False
    rollout: Rollout | None = None
    slots: Mapping[int, SlotState] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    service: ServiceView
    tasks: Sequence[TaskView]
    hosts: Mapping[str, HostView]
    host_down_grace: timedelta
    # The stored spec of the revision an update started from, while one is updating: what a
    # failed update rolls back to.
    previous_spec: Mapping[str, Any] | None = None


# The actions: a closed set, applied in order.


@dataclass(frozen=True)
class MarkRemoved:
    """The task is no longer wanted (its slot is refilled or gone)."""

    task_id: str


@dataclass(frozen=True)
class DeleteTask:
    """Queue the deletion of a task's container (its host answers, or is gone)."""

    task_id: str


@dataclass(frozen=True)
class StartReplica:
    """Place a new task of the current revision in `slot` and queue its creation."""

    slot: int


@dataclass(frozen=True)
class MarkReady:
    """When the task became ready (None: it is not)."""

    task_id: str
    ready_at: datetime | None


@dataclass(frozen=True)
class RollBack:
    """Make `to_revision` (with its stored `spec`) the service's revision again."""

    from_revision: int
    to_revision: int
    spec: dict[str, Any]
    reason: str | None


@dataclass(frozen=True)
class PauseUpdate:
    reason: str | None


@dataclass(frozen=True)
class SettleRollout:
    """The rollout ended: record how, before the status says so."""

    outcome: RolloutOutcome
    detail: str


@dataclass(frozen=True)
class SetRollout:
    rollout: Rollout | None


@dataclass(frozen=True)
class SetSlots:
    slots: Mapping[int, SlotState]


@dataclass(frozen=True)
class SetStatus:
    status: ServiceStatus
    detail: str | None
    outcome: RolloutOutcome | None = None
    # A replica that cannot be placed makes the service degraded instead (placement happens
    # in apply).
    degraded_if_unplaceable: bool = False


@dataclass(frozen=True)
class DeleteService:
    """The service is being removed and has no task left."""


Action = (
    MarkRemoved
    | DeleteTask
    | StartReplica
    | MarkReady
    | RollBack
    | PauseUpdate
    | SettleRollout
    | SetRollout
    | SetSlots
    | SetStatus
    | DeleteService
)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    # Replicas per host before any start: what placement spreads the new ones against.
    spread: Mapping[str, int] = field(default_factory=dict)


class _Pass:
    """The working state of one decision: what the actions so far have changed."""

    def __init__(self, snapshot: Snapshot, now: datetime) -> None:
        self.snapshot = snapshot
        self.now = now
        self.revision = snapshot.service.revision
        self.spec = snapshot.service.spec
        self.busy = {t.id for t in snapshot.tasks if t.busy}
        self.removed = {t.id for t in snapshot.tasks if t.desired_state == "removed"}
        self.ready_at = {t.id: t.ready_at for t in snapshot.tasks}
        self.actions: list[Action] = []

    def lost(self, task: TaskView) -> bool:
        host = self.snapshot.hosts.get(task.host_id)
        if host is None:
            return True
        return host.status == "unreachable" and (
            host.last_seen_at is None
            or host.last_seen_at < self.now - self.snapshot.host_down_grace
        )

    def draining(self, task: TaskView) -> bool:
        host = self.snapshot.hosts.get(task.host_id)
        return host is not None and host.draining

    def failed(self, task: TaskView) -> bool:
        if task.id in self.busy:
            return False
        if task.state in _FAILED_STATES or task.health == "unhealthy":
            return True
        # Its create operation ended without a container (the engine refused it), or with one
        # the engine would not start: neither is ever started by anyone else.
        return task.state == "pending" or (task.state == "created" and task.error is not None)

    def remove(self, task: TaskView) -> None:
        if task.id in self.busy:
            return
        if task.id not in self.removed:
            self.removed.add(task.id)
            self.actions.append(MarkRemoved(task.id))
        host = self.snapshot.hosts.get(task.host_id)
        if host is not None and host.status != "ready":
            return  # removed once the host answers again
        self.actions.append(DeleteTask(task.id))
        self.busy.add(task.id)

    def mark_ready(self, task: TaskView, ready_at: datetime | None) -> None:
        if self.ready_at[task.id] != ready_at:
            self.ready_at[task.id] = ready_at
            self.actions.append(MarkReady(task.id, ready_at))


def decide(snapshot: Snapshot, now: datetime) -> Decision:
    """The next steps for one service: start missing replicas, replace ended ones with backoff,
    remove surplus ones, move replicas off draining or lost hosts, and roll an update forward
    batch by batch, rolling back (or pausing) when a new replica fails."""
    step = _Pass(snapshot, now)
    service = snapshot.service
    if service.removing:
        for task in snapshot.tasks:
            step.remove(task)
        if not snapshot.tasks:
            step.actions.append(DeleteService())
        else:
            _status(step, ServiceStatus.REMOVING, f"removing {len(snapshot.tasks)} replica(s)")
        return Decision(tuple(step.actions))

    slots = dict(service.slots)
    rollout = _count_failures(step, slots)
    active = [t for t in snapshot.tasks if t.id not in step.removed]
    if rollout and rollout.phase == RolloutPhase.UPDATING and rollout.failures:
        rollout = _on_update_failure(step, rollout)

    spec = step.spec
    # A rollback goes at the pace of the rollback_config of the revision it returns to, if set.
    rolling_back = rollout is not None and rollout.phase == RolloutPhase.ROLLING_BACK
    pace = (spec.rollback_config if rolling_back else None) or spec.update_config
    monitor = timedelta(seconds=pace.monitor_s if rollout else 0)
    by_slot: dict[int, list[TaskView]] = {}
    for task in active:
        by_slot.setdefault(task.slot, []).append(task)
    for slot, slot_tasks in by_slot.items():
        if slot < 1 or slot > service.replicas:
            for task in slot_tasks:
                step.remove(task)

    spread: dict[str, int] = {}
    for task in active:
        if not step.lost(task) and task.id not in step.removed:
            spread[task.host_id] = spread.get(task.host_id, 0) + 1
    in_progress = set(rollout.in_progress or ()) if rollout else set()
    ready_slots = 0
    settled = True
    for slot in range(1, service.replicas + 1):
        slot_tasks = [t for t in by_slot.get(slot, []) if t.id not in step.removed]
        usable = [t for t in slot_tasks if not step.lost(t)]
        current = [t for t in usable if t.revision == step.revision and not step.draining(t)]
        stale = [t for t in usable if t not in current]
        for task in current:
            step.mark_ready(task, (step.ready_at[task.id] or now) if is_ready(task, spec) else None)
        if len(current) > 1:
            # A lost host came back with its copy, or a duplicate: keep the best, newest one.
            current.sort(
                key=lambda t: (step.ready_at[t.id] is not None, t.created_at), reverse=True
            )
            for extra in current[1:]:
                step.remove(extra)
            current = current[:1]
        if current:
            ready_at = step.ready_at[current[0].id]
            if ready_at is not None and now - ready_at >= monitor:
                ready_slots += 1
                slots.pop(slot, None)
                for old in stale:
                    step.remove(old)
                in_progress.discard(slot)
            else:
                settled = False
            if stale:
                settled = False
            continue
        state = slots.get(slot, SlotState())
        if state.completed == step.revision and not stale:
            ready_slots += 1
            continue
        settled = False
        if stale:
            # Replace an old revision's replica, or move one off a draining host.
            if rollout and rollout.phase == RolloutPhase.PAUSED:
                continue
            parallelism = pace.parallelism
            if slot not in in_progress:
                if len(in_progress) >= parallelism:
                    continue
                if rollout and rollout.next_batch_at and rollout.next_batch_at > now:
                    continue
                in_progress.add(slot)
                if rollout and pace.delay_s and len(in_progress) >= parallelism:
                    delay = timedelta(seconds=pace.delay_s)
                    rollout = replace(rollout, next_batch_at=now + delay)
            moving = any(step.draining(t) for t in stale)
            if pace.order == "stop-first" and not moving:
                for old in stale:
                    step.remove(old)
                continue
            step.actions.append(StartReplica(slot))
            continue
        if state.completed is not None and state.completed != step.revision:
            pass  # a one-shot task runs once per revision
        elif state.done or (state.retry_at and state.retry_at > now):
            continue
        step.actions.append(StartReplica(slot))

    detail, outcome = service.status_detail, service.outcome
    if rollout is not None:
        rollout = replace(rollout, in_progress=tuple(sorted(in_progress)))
        if settled and ready_slots == service.replicas:
            if rollout.phase == RolloutPhase.ROLLING_BACK:
                outcome = RolloutOutcome.ROLLED_BACK
                detail = f"rolled back to revision {step.revision}: {rollout.reason or ''}".rstrip(
                    ": "
                )
            else:
                outcome = RolloutOutcome.UPDATED
                detail = f"updated to revision {step.revision}"
            step.actions.append(SettleRollout(outcome, detail))
            rollout = None
    step.actions.append(SetRollout(rollout))
    step.actions.append(SetSlots(slots))
    if rollout is not None:
        status = ServiceStatus(rollout.phase.value)
        _status(
            step,
            status,
            rollout.reason
            if status != ServiceStatus.UPDATING
            else f"{ready_slots}/{service.replicas} replicas at revision {step.revision}",
        )
    elif settled and ready_slots == service.replicas:
        keep = service.status in _KEEPS_DETAIL
        _status(
            step,
            ServiceStatus.RUNNING,
            detail if keep else None,
            outcome if keep else None,
            degraded_if_unplaceable=True,
        )
    else:
        _status(
            step,
            ServiceStatus.CONVERGING,
            f"{ready_slots}/{service.replicas} replicas ready" + _last_failure(slots, service),
            degraded_if_unplaceable=True,
        )
    return Decision(tuple(step.actions), spread)


def _last_failure(slots: Mapping[int, SlotState], service: ServiceView) -> str:
    """Why a slot still has no replica, when an operation said: the first such slot's reason."""
    for slot in sorted(slots):
        reason = slots[slot].reason
        if reason is not None and slot <= service.replicas:
            return f"; replica {slot}: {reason}"
    return ""


def _count_failures(step: _Pass, slots: dict[int, SlotState]) -> Rollout | None:
    """Replicas that ended: count the failure (against the slot's backoff, and against an
    update of their revision) and remove them; the slot is refilled afterwards."""
    rollout = step.snapshot.service.rollout
    for task in step.snapshot.tasks:
        if task.id in step.removed:
            if task.id not in step.busy and task.host_id in step.snapshot.hosts:
                step.remove(task)  # a delete that failed while the host was away
            continue
        if not step.failed(task):
            continue
        state = slots.get(task.slot, SlotState())
        policy = step.spec.restart_policy
        if step.spec.one_shot and task.state == "exited" and task.exit_code == 0:
            # It did its work: the slot stays empty, and neither backoff nor a rollout
            # counts it as a failure.
            slots[task.slot] = SlotState(
                failures=state.failures, done=True, completed=task.revision
            )
            step.remove(task)
            continue
        failures = state.failures + 1
        slots[task.slot] = SlotState(
            failures=failures,
            retry_at=step.now + backoff(failures),
            done=state.done or policy == "none" or (policy == "on-failure" and task.exit_code == 0),
            reason=task.error,
        )
        if rollout and rollout.phase == RolloutPhase.UPDATING and task.revision == step.revision:
            ended = "became unhealthy" if task.health == "unhealthy" else "ended: " + task.state
            if task.error is not None:
                ended = "failed: " + task.error
            exit_code = f" (exit code {task.exit_code})" if task.exit_code is not None else ""
            rollout = replace(
                rollout,
                failures=rollout.failures + 1,
                reason=f"replica {task.slot} of revision {step.revision} {ended}{exit_code}",
            )
        step.remove(task)
    return rollout


def _on_update_failure(step: _Pass, rollout: Rollout) -> Rollout:
    if step.spec.update_config.failure_action == "pause":
        step.actions.append(PauseUpdate(rollout.reason))
        return replace(rollout, phase=RolloutPhase.PAUSED)
    previous = step.snapshot.previous_spec
    if previous is None:
        raise LookupError(f"revision {rollout.from_revision} of the service is not stored")
    spec = {**previous, "replicas": step.snapshot.service.replicas}
    step.actions.append(
        RollBack(
            from_revision=step.revision,
            to_revision=rollout.from_revision,
            spec=spec,
            reason=rollout.reason,
        )
    )
    failed_revision = step.revision
    step.revision = rollout.from_revision
    step.spec = ServiceSpec.model_validate(spec)
    return Rollout(
        phase=RolloutPhase.ROLLING_BACK,
        from_revision=failed_revision,
        to_revision=step.revision,
        started_at=step.now,
        failures=0,
        reason=rollout.reason,
    )


def _status(
    step: _Pass,
    status: ServiceStatus,
    detail: str | None,
    outcome: RolloutOutcome | None = None,
    *,
    degraded_if_unplaceable: bool = False,
) -> None:
    step.actions.append(SetStatus(status, detail, outcome, degraded_if_unplaceable))

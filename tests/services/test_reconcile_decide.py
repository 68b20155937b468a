"""The reconciler's decisions, branch by branch, from snapshots: no database, no engine.

Each case is one pass over one service. `steps` are the actions that change tasks or the
revision (in the order applied); the bookkeeping every pass ends with (the rollout, the slots'
backoff, the status) is checked through `rollout`, `slots` and `status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.services.decide import (
    Action,
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
    SlotState,
    Snapshot,
    StartReplica,
    TaskView,
    decide,
    slots_from_json,
    slots_to_json,
)
from app.services.models import RolloutOutcome, RolloutPhase, ServiceStatus
from app.services.schemas import ServiceSpec

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=10)
GRACE = timedelta(seconds=30)
HOSTS = {
    "h1": HostView(id="h1", status="ready", draining=False, last_seen_at=NOW),
    "h2": HostView(id="h2", status="ready", draining=False, last_seen_at=NOW),
}
V1: dict[str, Any] = {"image": "app:1", "replicas": 2}


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def spec(**fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"image": "app:2", **fields})


def task(
    task_id: str,
    slot: int,
    *,
    revision: int = 1,
    host: str = "h1",
    state: str = "running",
    health: str | None = None,
    exit_code: int | None = None,
    desired: str = "running",
    ready_at: datetime | None = EARLIER,
    created_at: datetime = EARLIER,
    busy: bool = False,
    error: str | None = None,
) -> TaskView:
    """A replica; by default running and ready for ten minutes on h1."""
    return TaskView(
        id=task_id,
        slot=slot,
        revision=revision,
        host_id=host,
        state=state,
        health=health,
        exit_code=exit_code,
        desired_state=desired,
        ready_at=ready_at if state == "running" else None,
        created_at=created_at,
        busy=busy,
        error=error,
    )


def updating(
    *,
    from_revision: int = 1,
    to_revision: int = 2,
    phase: RolloutPhase = RolloutPhase.UPDATING,
    **fields: Any,
) -> Rollout:
    return Rollout(
        phase=phase,
        from_revision=from_revision,
        to_revision=to_revision,
        started_at=EARLIER,
        **fields,
    )


def snapshot(
    *tasks: TaskView,
    replicas: int = 2,
    revision: int = 1,
    spec: ServiceSpec = spec(),
    status: ServiceStatus = ServiceStatus.RUNNING,
    detail: str | None = None,
    outcome: RolloutOutcome | None = None,
    removing: bool = False,
    rollout: Rollout | None = None,
    slots: Mapping[int, SlotState] | None = None,
    hosts: Mapping[str, HostView] = HOSTS,
) -> Snapshot:
    return Snapshot(
        service=ServiceView(
            id="svc",
            revision=revision,
            spec=spec,
            replicas=replicas,
            status=status,
            status_detail=detail,
            outcome=outcome,
            removing=removing,
            rollout=rollout,
            slots=slots or {},
        ),
        tasks=tasks,
        hosts=hosts,
        host_down_grace=GRACE,
        previous_spec=V1 if rollout is not None else None,
    )


def during_update(
    *tasks: TaskView, spec: ServiceSpec = spec(update_config={"monitor_s": 5}), **fields: Any
) -> Snapshot:
    """A service updating from revision 1 to 2."""
    fields.setdefault("rollout", updating())
    fields.setdefault("revision", 2)
    return snapshot(*tasks, spec=spec, status=ServiceStatus.UPDATING, **fields)


def removed(task_id: str) -> tuple[Action, ...]:
    return (MarkRemoved(task_id), DeleteTask(task_id))


KEEP = object()  # a column the case does not check


@dataclass(frozen=True)
class Case:
    name: str
    snapshot: Snapshot
    steps: tuple[Action, ...]
    status: SetStatus | None
    rollout: Any = KEEP
    slots: Any = KEEP
    spread: Any = KEEP
    now: datetime = NOW


def running(detail: str | None = None, outcome: RolloutOutcome | None = None) -> SetStatus:
    return SetStatus(ServiceStatus.RUNNING, detail, outcome, degraded_if_unplaceable=True)


def converging(ready: int, replicas: int = 2) -> SetStatus:
    return SetStatus(
        ServiceStatus.CONVERGING,
        f"{ready}/{replicas} replicas ready",
        degraded_if_unplaceable=True,
    )


def status_updating(ready: int, replicas: int = 2, revision: int = 2) -> SetStatus:
    return SetStatus(ServiceStatus.UPDATING, f"{ready}/{replicas} replicas at revision {revision}")


FAILED_REASON = "replica 1 of revision 2 ended: exited (exit code 1)"
AMBIGUOUS = "the container failed to start: network app_default is ambiguous (2 matches found)"


def converging_because(ready: int, replicas: int, why: str) -> SetStatus:
    return SetStatus(
        ServiceStatus.CONVERGING,
        f"{ready}/{replicas} replicas ready; {why}",
        degraded_if_unplaceable=True,
    )


CASES = [
    # Steady state.
    Case(
        "converged: nothing to do, the rollout's outcome stays reported",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            detail="updated to revision 1",
            outcome=RolloutOutcome.UPDATED,
        ),
        steps=(),
        status=running("updated to revision 1", RolloutOutcome.UPDATED),
        rollout=None,
        slots={},
    ),
    Case(
        "settling from converging drops the progress detail",
        snapshot(
            task("a", 1), task("b", 2), status=ServiceStatus.CONVERGING, detail="1/2 replicas ready"
        ),
        steps=(),
        status=running(),
    ),
    Case(
        "a replica that just became ready is marked so; without a rollout it counts at once",
        snapshot(task("a", 1, ready_at=None), replicas=1),
        steps=(MarkReady("a", NOW),),
        status=running(),
    ),
    Case(
        "a replica no longer healthy loses its readiness",
        snapshot(task("a", 1, health="starting"), replicas=1),
        steps=(MarkReady("a", None),),
        status=converging(0, 1),
    ),
    # Replica count.
    Case(
        "missing replicas are started, spread against the ones running",
        snapshot(task("a", 1), replicas=3),
        steps=(StartReplica(2), StartReplica(3)),
        status=converging(1, 3),
        spread={"h1": 1},
    ),
    Case(
        "surplus replicas are removed",
        snapshot(task("a", 1), task("b", 2), task("c", 3), replicas=1),
        steps=removed("b") + removed("c"),
        status=running(),
        spread={"h1": 1},
    ),
    Case(
        "scaling to zero removes every replica",
        snapshot(task("a", 1), replicas=0),
        steps=removed("a"),
        status=running(),
    ),
    Case(
        "a replica with an operation under way is left alone",
        snapshot(task("a", 1), task("b", 2, busy=True), replicas=1),
        steps=(),
        status=running(),
    ),
    Case(
        "a duplicate in a slot: the ready, newest one stays",
        snapshot(
            task("old", 1, created_at=EARLIER - seconds(60)),
            task("new", 1),
            task("unready", 1, state="created", created_at=NOW),
            replicas=1,
        ),
        steps=removed("old") + removed("unready"),
        status=running(),
    ),
    # Failures and restart policies.
    Case(
        "an exited replica is removed and its slot backs off",
        snapshot(task("a", 1, state="exited", exit_code=1), task("b", 2)),
        steps=removed("a"),
        status=converging(1),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5))},
    ),
    Case(
        "backoff doubles with each failure, up to 30 s",
        snapshot(
            task("a", 1, state="dead"),
            task("b", 2, state="missing"),
            slots={
                1: SlotState(failures=3, retry_at=EARLIER),
                2: SlotState(failures=9, retry_at=EARLIER),
            },
        ),
        steps=removed("a") + removed("b"),
        status=converging(0),
        slots={
            1: SlotState(failures=4, retry_at=NOW + seconds(4)),
            2: SlotState(failures=10, retry_at=NOW + seconds(30)),
        },
    ),
    Case(
        "an unhealthy replica counts as failed",
        snapshot(task("a", 1, health="unhealthy"), replicas=1),
        steps=removed("a"),
        status=converging(0, 1),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5))},
    ),
    Case(
        "a replica whose create ended without a container counts as failed",
        snapshot(task("a", 1, state="pending"), replicas=1),
        steps=removed("a"),
        status=converging(0, 1),
    ),
    Case(
        "a replica still being created is not a failure",
        snapshot(task("a", 1, state="pending", busy=True), replicas=1),
        steps=(),
        status=converging(0, 1),
        slots={},
    ),
    Case(
        "a failed slot is not refilled before its backoff elapsed",
        snapshot(task("b", 2), slots={1: SlotState(failures=2, retry_at=NOW + seconds(1))}),
        steps=(),
        status=converging(1),
    ),
    Case(
        "a failed slot is refilled once its backoff elapsed",
        snapshot(task("b", 2), slots={1: SlotState(failures=2, retry_at=NOW - seconds(1))}),
        steps=(StartReplica(1),),
        status=converging(1),
        slots={1: SlotState(failures=2, retry_at=NOW - seconds(1))},
    ),
    Case(
        "a proven replica clears its slot's backoff",
        snapshot(task("a", 1), replicas=1, slots={1: SlotState(failures=2, retry_at=EARLIER)}),
        steps=(),
        status=running(),
        slots={},
    ),
    Case(
        "restart policy none: an ended replica's slot stays empty",
        snapshot(
            task("a", 1, state="exited", exit_code=0), replicas=1, spec=spec(restart_policy="none")
        ),
        steps=removed("a"),
        status=converging(0, 1),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5), done=True)},
    ),
    Case(
        "restart policy none: a done slot is never started again",
        snapshot(
            task("b", 2),
            spec=spec(restart_policy="none"),
            slots={1: SlotState(failures=1, retry_at=EARLIER, done=True)},
        ),
        steps=(),
        status=converging(1),
    ),
    Case(
        "restart policy on-failure: a clean exit ends the slot",
        snapshot(
            task("a", 1, state="exited", exit_code=0),
            replicas=1,
            spec=spec(restart_policy="on-failure"),
        ),
        steps=removed("a"),
        status=converging(0, 1),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5), done=True)},
    ),
    Case(
        "restart policy on-failure: a non-zero exit is replaced",
        snapshot(
            task("a", 1, state="exited", exit_code=3),
            replicas=1,
            spec=spec(restart_policy="on-failure"),
        ),
        steps=removed("a"),
        status=converging(0, 1),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5))},
    ),
    # Replicas the engine would not start.
    Case(
        "a replica left created by a failed start counts as failed; the slot keeps why",
        snapshot(task("a", 1, state="created", error=AMBIGUOUS), replicas=1),
        steps=removed("a"),
        status=converging_because(0, 1, f"replica 1: {AMBIGUOUS}"),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5), reason=AMBIGUOUS)},
    ),
    Case(
        "a replica whose create was refused gives its reason too",
        snapshot(task("a", 1, state="pending", error="no such image"), replicas=1),
        steps=removed("a"),
        status=converging_because(0, 1, "replica 1: no such image"),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5), reason="no such image")},
    ),
    Case(
        "a created replica whose start is still being tried is not a failure",
        snapshot(task("a", 1, state="created", error=AMBIGUOUS, busy=True), replicas=1),
        steps=(),
        status=converging(0, 1),
        slots={},
    ),
    Case(
        "a created replica with no error is no failure (its start has not been tried)",
        snapshot(task("a", 1, state="created"), replicas=1),
        steps=(),
        status=converging(0, 1),
        slots={},
    ),
    Case(
        "a slot backing off after a failed start is refilled later and still says why",
        snapshot(
            task("b", 2),
            slots={1: SlotState(failures=3, retry_at=NOW + seconds(2), reason=AMBIGUOUS)},
        ),
        steps=(),
        status=converging_because(1, 2, f"replica 1: {AMBIGUOUS}"),
    ),
    Case(
        "the first slot that says why is reported",
        snapshot(
            slots={
                2: SlotState(failures=1, retry_at=NOW - seconds(1), reason="port taken"),
                1: SlotState(failures=1, retry_at=NOW - seconds(1)),
            },
        ),
        steps=(StartReplica(1), StartReplica(2)),
        status=converging_because(0, 2, "replica 2: port taken"),
    ),
    Case(
        "a slot beyond the replica count says nothing",
        snapshot(
            task("b", 2),
            slots={3: SlotState(failures=1, retry_at=NOW - seconds(1), reason="scaled away")},
        ),
        steps=(StartReplica(1),),
        status=converging(1),
    ),
    Case(
        "a replica ready again clears its slot's reason",
        snapshot(
            task("a", 1),
            task("b", 2),
            status=ServiceStatus.CONVERGING,
            slots={1: SlotState(failures=2, retry_at=EARLIER, reason=AMBIGUOUS)},
        ),
        steps=(),
        status=running(),
        slots={},
    ),
    Case(
        "update: a new replica that would not start fails the update with its reason",
        during_update(
            task("a2", 1, revision=2, state="created", error=AMBIGUOUS),
            task("b", 2),
            spec=spec(update_config={"failure_action": "pause"}),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(*removed("a2"), PauseUpdate(f"replica 1 of revision 2 failed: {AMBIGUOUS}")),
        status=SetStatus(ServiceStatus.PAUSED, f"replica 1 of revision 2 failed: {AMBIGUOUS}"),
    ),
    # Hosts.
    Case(
        "a replica on a draining host is moved: the new one first, even with stop-first",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            spec=spec(update_config={"order": "stop-first"}),
            hosts={**HOSTS, "h2": HostView("h2", "ready", draining=True, last_seen_at=NOW)},
        ),
        steps=(StartReplica(2),),
        status=converging(1),
        spread={"h1": 1, "h2": 1},
    ),
    Case(
        "once the moved replica is proven, the one on the draining host is removed",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            task("c", 2),
            hosts={**HOSTS, "h2": HostView("h2", "ready", draining=True, last_seen_at=NOW)},
        ),
        steps=removed("b"),
        # Settled only once the old one is gone (the next pass).
        status=converging(2),
    ),
    Case(
        "a host unreachable within its grace keeps its replicas",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            hosts={**HOSTS, "h2": HostView("h2", "unreachable", False, NOW - seconds(10))},
        ),
        steps=(),
        status=running(),
    ),
    Case(
        "a host lost past its grace: its replica is replaced elsewhere and left uncounted",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            hosts={**HOSTS, "h2": HostView("h2", "unreachable", False, NOW - seconds(31))},
        ),
        steps=(StartReplica(2),),
        status=converging(1),
        spread={"h1": 1},
    ),
    Case(
        "a host never seen, or deleted, counts as lost",
        snapshot(
            task("a", 1, host="gone"),
            task("b", 2, host="h2"),
            hosts={"h1": HOSTS["h1"], "h2": HostView("h2", "unreachable", False, None)},
        ),
        steps=(StartReplica(1), StartReplica(2)),
        status=converging(0),
        spread={},
    ),
    Case(
        "a replica removed while its host was away is deleted when the host answers",
        snapshot(task("a", 1), task("b", 2), task("old", 2, desired="removed")),
        steps=(DeleteTask("old"),),
        status=running(),
    ),
    Case(
        "a replica removed on a host that does not answer is deleted later",
        snapshot(
            task("a", 1),
            task("b", 2, host="h2"),
            task("c", 3, host="h2"),
            hosts={**HOSTS, "h2": HostView("h2", "unreachable", False, NOW - seconds(10))},
        ),
        steps=(MarkRemoved("c"),),
        status=running(),
    ),
    Case(
        "a copy on a lost host is left alone until the host returns",
        snapshot(
            task("a", 1),
            task("b", 1, host="h2", created_at=EARLIER - seconds(1)),
            replicas=1,
            hosts={**HOSTS, "h2": HostView("h2", "unreachable", False, EARLIER)},
        ),
        steps=(),
        status=running(),
    ),
    # Rolling updates.
    Case(
        "update start-first: a new replica starts before the old one goes",
        during_update(
            task("a", 1),
            task("b", 2),
        ),
        steps=(StartReplica(1),),
        status=status_updating(0),
        rollout=updating(in_progress=(1,)),
    ),
    Case(
        "update: a new replica not yet proven holds the batch",
        during_update(
            task("a", 1),
            task("a2", 1, revision=2, ready_at=NOW - seconds(4)),
            task("b", 2),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(),
        status=status_updating(0),
        rollout=updating(in_progress=(1,)),
    ),
    Case(
        "update: a proven replica retires the old one and the next slot starts",
        during_update(
            task("a", 1),
            task("a2", 1, revision=2, ready_at=NOW - seconds(5)),
            task("b", 2),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(*removed("a"), StartReplica(2)),
        status=status_updating(1),
        rollout=updating(in_progress=(2,)),
    ),
    Case(
        "update stop-first: the old replica goes first",
        during_update(
            task("a", 1),
            task("b", 2),
            spec=spec(update_config={"order": "stop-first"}),
        ),
        steps=removed("a"),
        status=status_updating(0),
        rollout=updating(in_progress=(1,)),
    ),
    Case(
        "update stop-first: the emptied slot is then filled with the new revision",
        during_update(
            task("a", 1, desired="removed", busy=True),
            task("b", 2),
            spec=spec(update_config={"order": "stop-first"}),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(StartReplica(1),),
        status=status_updating(0),
        rollout=updating(in_progress=(1,)),
    ),
    Case(
        "update with delay_s: a batch of `parallelism` starts, then the next waits",
        during_update(
            task("a", 1),
            task("b", 2),
            task("c", 3),
            replicas=3,
            spec=spec(update_config={"parallelism": 2, "delay_s": 10}),
        ),
        steps=(StartReplica(1), StartReplica(2)),
        status=status_updating(0, 3),
        rollout=updating(in_progress=(1, 2), next_batch_at=NOW + seconds(10)),
    ),
    Case(
        "update with delay_s: the next batch does not start before the delay",
        during_update(
            task("a", 1, revision=2),
            task("b", 2, revision=2),
            task("c", 3),
            replicas=3,
            spec=spec(update_config={"parallelism": 2, "delay_s": 10, "monitor_s": 0}),
            rollout=updating(in_progress=(1, 2), next_batch_at=NOW + seconds(1)),
        ),
        steps=(),
        status=status_updating(2, 3),
        rollout=updating(in_progress=(), next_batch_at=NOW + seconds(1)),
    ),
    Case(
        "update with delay_s: after the delay the next batch starts",
        during_update(
            task("a", 1, revision=2),
            task("b", 2, revision=2),
            task("c", 3),
            replicas=3,
            spec=spec(update_config={"parallelism": 2, "delay_s": 10, "monitor_s": 0}),
            rollout=updating(in_progress=(1, 2), next_batch_at=NOW - seconds(1)),
        ),
        steps=(StartReplica(3),),
        status=status_updating(2, 3),
        rollout=updating(in_progress=(3,), next_batch_at=NOW - seconds(1)),
    ),
    Case(
        "update settles: every slot proven at the new revision",
        during_update(
            task("a", 1, revision=2),
            task("b", 2, revision=2),
            detail="1/2 replicas at revision 2",
            rollout=updating(in_progress=(2,)),
        ),
        steps=(SettleRollout(RolloutOutcome.UPDATED, "updated to revision 2"),),
        status=running("updated to revision 2", RolloutOutcome.UPDATED),
        rollout=None,
    ),
    Case(
        "failure_action rollback: a failed new replica rolls the service back",
        during_update(
            task("a2", 1, revision=2, state="exited", exit_code=1),
            task("b", 2),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(
            *removed("a2"),
            RollBack(from_revision=2, to_revision=1, spec=V1, reason=FAILED_REASON),
        ),
        status=SetStatus(ServiceStatus.ROLLING_BACK, FAILED_REASON),
        rollout=Rollout(
            phase=RolloutPhase.ROLLING_BACK,
            from_revision=2,
            to_revision=1,
            started_at=NOW,
            reason=FAILED_REASON,
            in_progress=(),
        ),
        slots={1: SlotState(failures=1, retry_at=NOW + seconds(0.5))},
    ),
    Case(
        "rollback settles: the old revision serves again, and says why",
        snapshot(
            task("a", 1),
            task("b", 2),
            status=ServiceStatus.ROLLING_BACK,
            detail=FAILED_REASON,
            rollout=updating(
                phase=RolloutPhase.ROLLING_BACK,
                from_revision=2,
                to_revision=1,
                reason=FAILED_REASON,
                in_progress=(),
            ),
        ),
        steps=(
            SettleRollout(
                RolloutOutcome.ROLLED_BACK, f"rolled back to revision 1: {FAILED_REASON}"
            ),
        ),
        status=running(f"rolled back to revision 1: {FAILED_REASON}", RolloutOutcome.ROLLED_BACK),
        rollout=None,
    ),
    Case(
        "failure_action pause: the update stops where it is",
        during_update(
            task("a2", 1, revision=2, health="unhealthy"),
            task("b", 2),
            spec=spec(update_config={"failure_action": "pause"}),
            rollout=updating(in_progress=(1,)),
        ),
        steps=(*removed("a2"), PauseUpdate("replica 1 of revision 2 became unhealthy")),
        status=SetStatus(ServiceStatus.PAUSED, "replica 1 of revision 2 became unhealthy"),
        rollout=updating(
            phase=RolloutPhase.PAUSED,
            failures=1,
            reason="replica 1 of revision 2 became unhealthy",
            in_progress=(1,),
        ),
    ),
    Case(
        "paused: old replicas are not replaced, an emptied slot backs off as usual",
        snapshot(
            task("b", 2),
            revision=2,
            spec=spec(update_config={"failure_action": "pause"}),
            status=ServiceStatus.PAUSED,
            detail="replica 1 of revision 2 became unhealthy",
            rollout=updating(
                phase=RolloutPhase.PAUSED,
                failures=1,
                reason="replica 1 of revision 2 became unhealthy",
                in_progress=(1,),
            ),
            slots={1: SlotState(failures=1, retry_at=NOW - seconds(1))},
        ),
        steps=(StartReplica(1),),
        status=SetStatus(ServiceStatus.PAUSED, "replica 1 of revision 2 became unhealthy"),
    ),
    Case(
        "a superseded change: an old revision's replica ending is no failure of the new update",
        during_update(
            task("a2", 1, revision=2, state="exited", exit_code=1),
            task("b", 2),
            revision=3,
            rollout=updating(from_revision=2, to_revision=3),
        ),
        steps=(*removed("a2"), StartReplica(2)),
        status=status_updating(0, revision=3),
        rollout=updating(from_revision=2, to_revision=3, in_progress=(2,)),
    ),
    Case(
        "a superseded change: both older revisions are replaced toward the newest",
        during_update(
            task("a2", 1, revision=2),
            task("b", 2),
            revision=3,
            spec=spec(update_config={"parallelism": 2}),
            rollout=updating(from_revision=2, to_revision=3, in_progress=(1,)),
        ),
        steps=(StartReplica(1), StartReplica(2)),
        status=status_updating(0, revision=3),
        rollout=updating(from_revision=2, to_revision=3, in_progress=(1, 2)),
    ),
    # Removal.
    Case(
        "removing: every idle replica is removed",
        snapshot(task("a", 1), task("b", 2, busy=True), removing=True),
        steps=removed("a"),
        status=SetStatus(ServiceStatus.REMOVING, "removing 2 replica(s)"),
        spread={},
    ),
    Case(
        "removing: without replicas the service goes",
        snapshot(removing=True),
        steps=(DeleteService(),),
        status=None,
    ),
]


def split(actions: tuple[Action, ...]) -> tuple[tuple[Action, ...], dict[type, Action]]:
    """The steps, and the bookkeeping actions by type (each comes at most once)."""
    bookkeeping: dict[type, Action] = {}
    steps = []
    for action in actions:
        if isinstance(action, SetRollout | SetSlots | SetStatus):
            assert type(action) not in bookkeeping
            bookkeeping[type(action)] = action
        else:
            steps.append(action)
    return tuple(steps), bookkeeping


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_decide(case: Case) -> None:
    decision = decide(case.snapshot, case.now)
    steps, bookkeeping = split(decision.actions)
    assert steps == case.steps
    assert bookkeeping.get(SetStatus) == case.status
    if case.rollout is not KEEP:
        rollout = bookkeeping[SetRollout]
        assert isinstance(rollout, SetRollout) and rollout.rollout == case.rollout
    if case.slots is not KEEP:
        slots = bookkeeping[SetSlots]
        assert isinstance(slots, SetSlots) and slots.slots == case.slots
    if case.spread is not KEEP:
        assert decision.spread == case.spread


def test_decide_is_deterministic_and_leaves_its_input_alone() -> None:
    before = snapshot(task("a", 1, state="exited"), task("b", 2), revision=2, rollout=updating())
    copy = Snapshot(**vars(before))
    assert decide(before, NOW) == decide(before, NOW)
    assert before == copy


def test_rollback_needs_the_revision_it_returns_to() -> None:
    failing = snapshot(
        task("a2", 1, revision=2, state="exited"), revision=2, rollout=updating(in_progress=(1,))
    )
    with pytest.raises(LookupError, match="revision 1"):
        decide(Snapshot(**{**vars(failing), "previous_spec": None}), NOW)


def test_rollout_and_slots_keep_their_stored_form() -> None:
    stored = {
        "phase": "rolling_back",
        "from": 3,
        "to": 2,
        "started_at": "2026-11-30T12:00:00+00:00",
        "failures": 0,
        "reason": "replica 1 of revision 3 ended: exited",
        "next_batch_at": "2026-11-30T12:00:10+00:00",
        "in_progress": [1, 2],
    }
    assert Rollout.from_json(stored).to_json() == stored
    fresh = {"phase": "updating", "from": 1, "to": 2, "started_at": "2026-11-30T12:00:00+00:00"}
    assert Rollout.from_json(fresh).to_json() == {**fresh, "failures": 0}
    slots = {"1": {"failures": 2, "retry_at": "2026-11-30T12:00:01+00:00"}, "3": {"failures": 1}}
    assert slots_to_json(slots_from_json(slots)) == slots
    done = {"2": {"failures": 1, "retry_at": "2026-11-30T12:00:01+00:00", "done": True}}
    assert slots_to_json(slots_from_json(done)) == done


def test_a_slots_reason_keeps_its_stored_form() -> None:
    stored = {"1": {"failures": 2, "retry_at": "2026-11-30T12:00:01+00:00", "reason": "why"}}
    assert slots_to_json(slots_from_json(stored)) == stored
    assert slots_from_json(stored)[1].reason == "why"

"""One-shot services (Compose's init service, `one_shot`) and `rollback_config` in the
reconciler's pure core: no database, no engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from app.services.decide import (
    HostView,
    Rollout,
    ServiceView,
    SetSlots,
    SetStatus,
    SlotState,
    Snapshot,
    StartReplica,
    TaskView,
    completed,
    decide,
    slots_from_json,
    slots_to_json,
)
from app.services.models import RolloutPhase, ServiceStatus
from app.services.schemas import ServiceSpec

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=10)
HOSTS = {"h1": HostView(id="h1", status="ready", draining=False, last_seen_at=NOW)}
T = TypeVar("T")
ONE_SHOT = ServiceSpec(image="busybox", one_shot=True, restart_policy="none")


def _task(
    slot: int, *, revision: int = 1, state: str = "exited", exit_code: int | None = 0
) -> TaskView:
    return TaskView(
        id=f"t{slot}-{revision}",
        slot=slot,
        revision=revision,
        host_id="h1",
        state=state,
        health=None,
        exit_code=exit_code,
        desired_state="running",
        ready_at=None,
        created_at=EARLIER,
    )


def _snapshot(
    *tasks: TaskView,
    spec: ServiceSpec = ONE_SHOT,
    replicas: int = 1,
    revision: int = 1,
    slots: dict[int, SlotState] | None = None,
    rollout: Rollout | None = None,
    **fields: Any,
) -> Snapshot:
    return Snapshot(
        service=ServiceView(
            id="s",
            revision=revision,
            spec=spec,
            replicas=replicas,
            status=ServiceStatus.CONVERGING,
            rollout=rollout,
            slots=slots or {},
            **fields,
        ),
        tasks=tasks,
        hosts=HOSTS,
        host_down_grace=timedelta(seconds=30),
    )


def _last(actions: tuple[object, ...], kind: type[T]) -> T:
    return [action for action in actions if isinstance(action, kind)][-1]


def test_a_replica_that_exited_0_completes_its_slot() -> None:
    decision = decide(_snapshot(_task(1)), NOW)

    slots = _last(decision.actions, SetSlots).slots
    assert slots == {1: SlotState(failures=0, done=True, completed=1)}
    assert not any(isinstance(action, StartReplica) for action in decision.actions)
    assert _last(decision.actions, SetStatus).status == ServiceStatus.RUNNING
    assert completed(slots, revision=1, replicas=1)


def test_a_completed_service_stays_running() -> None:
    decision = decide(_snapshot(slots={1: SlotState(done=True, completed=1)}), NOW)

    assert _last(decision.actions, SetStatus).status == ServiceStatus.RUNNING
    assert not any(isinstance(action, StartReplica) for action in decision.actions)


def test_a_non_zero_exit_is_a_failure() -> None:
    decision = decide(_snapshot(_task(1, exit_code=1)), NOW)

    slots = _last(decision.actions, SetSlots).slots
    assert slots[1].completed is None and slots[1].done and slots[1].failures == 1
    assert _last(decision.actions, SetStatus).status == ServiceStatus.CONVERGING
    assert not completed(slots, revision=1, replicas=1)


def test_a_new_revision_runs_once_again() -> None:
    decision = decide(_snapshot(revision=2, slots={1: SlotState(done=True, completed=1)}), NOW)

    assert StartReplica(1) in decision.actions
    assert not completed({1: SlotState(done=True, completed=1)}, revision=2, replicas=1)


def test_without_one_shot_a_clean_exit_is_not_completion() -> None:
    spec = ServiceSpec(image="busybox", restart_policy="none")

    slots = _last(decide(_snapshot(_task(1), spec=spec), NOW).actions, SetSlots).slots

    assert slots[1].completed is None


def test_completion_is_stored() -> None:
    slots = {1: SlotState(done=True, completed=3)}

    assert slots_from_json(slots_to_json(slots)) == slots


def test_a_rollback_goes_at_the_rollback_config_pace() -> None:
    spec = ServiceSpec.model_validate(
        {
            "image": "app:1",
            "replicas": 2,
            "update_config": {"order": "start-first"},
            "rollback_config": {"order": "stop-first", "parallelism": 2},
        }
    )
    rollout = Rollout(
        phase=RolloutPhase.ROLLING_BACK, from_revision=2, to_revision=1, started_at=EARLIER
    )
    running = [
        TaskView(
            id=f"new{slot}",
            slot=slot,
            revision=2,
            host_id="h1",
            state="running",
            health=None,
            exit_code=None,
            desired_state="running",
            ready_at=EARLIER,
            created_at=EARLIER,
        )
        for slot in (1, 2)
    ]

    decision = decide(_snapshot(*running, spec=spec, replicas=2, rollout=rollout), NOW)

    # stop-first, both at once: the failed revision's replicas go before any new one starts.
    assert not any(isinstance(action, StartReplica) for action in decision.actions)
    removed = {getattr(action, "task_id", None) for action in decision.actions}
    assert {"new1", "new2"} <= removed

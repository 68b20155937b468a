"""A service of a fleet's size (10,000 replicas): accepted, and decided in one linear pass.
Pure: no database, no engine, and not timed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from app.services.decide import (
    HostView,
    ServiceView,
    Snapshot,
    StartReplica,
    TaskView,
    decide,
)
from app.services.models import ServiceStatus
from app.services.schemas import MAX_REPLICAS, ScaleRequest, ServiceSpec

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOSTS = {
    f"h{n}": HostView(id=f"h{n}", status="ready", draining=False, last_seen_at=NOW)
    for n in range(100)
}


def _snapshot(spec: ServiceSpec, tasks: list[TaskView]) -> Snapshot:
    return Snapshot(
        service=ServiceView(
            id="svc",
            revision=1,
            spec=spec,
            replicas=spec.replicas,
            status=ServiceStatus.CONVERGING,
        ),
        tasks=tasks,
        hosts=HOSTS,
        host_down_grace=timedelta(seconds=30),
    )


def test_the_cap_is_ten_thousand_replicas() -> None:
    assert MAX_REPLICAS == 10_000
    assert ServiceSpec.model_validate({"image": "app:1", "replicas": 10_000}).replicas == 10_000
    assert ScaleRequest(replicas=10_000).replicas == 10_000
    with pytest.raises(ValidationError):
        ServiceSpec.model_validate({"image": "app:1", "replicas": 10_001})
    with pytest.raises(ValidationError):
        ScaleRequest(replicas=10_001)


def test_a_ten_thousand_replica_service_is_started_in_one_decision() -> None:
    spec = ServiceSpec.model_validate({"image": "app:1", "replicas": 10_000})
    decision = decide(_snapshot(spec, []), NOW)
    starts = [a.slot for a in decision.actions if isinstance(a, StartReplica)]
    assert starts == list(range(1, 10_001))


def test_a_ten_thousand_replica_service_running_needs_nothing() -> None:
    spec = ServiceSpec.model_validate({"image": "app:1", "replicas": 10_000})
    earlier = NOW - timedelta(minutes=10)
    # Running at revision 1, ready for ten minutes: id, slot, revision, host, state, health,
    # exit code, desired state, ready at, created at.
    ready = TaskView("t", 1, 1, "h0", "running", None, None, "running", earlier, earlier)
    tasks = [
        replace(ready, id=f"t{slot}", slot=slot, host_id=f"h{slot % 100}")
        for slot in range(1, 10_001)
    ]
    decision = decide(_snapshot(spec, tasks), NOW)
    assert not [a for a in decision.actions if isinstance(a, StartReplica)]
    assert sum(decision.spread.values()) == 10_000

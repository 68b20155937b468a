"""The converge operation's counts, summed by the database, agree with the service as read
(`to_read`, task by task) for every kind of task. Rows only."""

from __future__ import annotations

import pytest

from app.containers.models import Container
from app.containers.schemas import HealthCheck
from app.core.db import Database
from app.hosts.models import Host
from app.services.models import Service
from app.services.progress import replica_counts
from app.services.schemas import ServiceSpec
from app.services.service import to_read

# (revision, state, desired_state, health, host status) of each task.
TASKS = [
    (2, "running", "running", None, "ready"),
    (2, "running", "running", "healthy", "ready"),
    (2, "running", "running", "unhealthy", "ready"),
    (2, "running", "running", "starting", "ready"),
    (2, "running", "removed", None, "ready"),
    (2, "running", "stopped", None, "ready"),
    (2, "exited", "running", None, "ready"),
    (2, "running", "running", None, "unreachable"),
    (1, "running", "running", None, "ready"),
]


@pytest.mark.parametrize("healthcheck", [None, HealthCheck(test=["CMD", "true"])])
def test_counts_agree_with_the_service_as_read(
    db: Database, healthcheck: HealthCheck | None
) -> None:
    spec = ServiceSpec(image="busybox", replicas=len(TASKS), healthcheck=healthcheck)
    with db.session() as session:
        hosts = {
            status: Host(name=status, url=f"unix:///{status}", labels={}, status=status)
            for status in ("ready", "unreachable")
        }
        service = Service(
            name="web", spec=spec.model_dump(mode="json"), revision=2, replicas=len(TASKS)
        )
        session.add_all([*hosts.values(), service])
        session.flush()
        session.add_all(
            Container(
                name=f"web.{slot}",
                host_id=hosts[on].id,
                service_id=service.id,
                slot=slot,
                revision=revision,
                spec={"image": "busybox"},
                image="busybox",
                state=state,
                desired_state=desired,
                health=health,
            )
            for slot, (revision, state, desired, health, on) in enumerate(TASKS, start=1)
        )
    with db.session(write=False) as session:
        service = session.get_one(Service, service.id)
        read = to_read(session, service)
        assert replica_counts(session, service, spec) == read.replicas
        assert read.replicas.running > read.replicas.healthy > 0

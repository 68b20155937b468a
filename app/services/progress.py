"""How far a service has come: its replica counts, summed by the database.

`service.converge` looks every half second while a service settles; reading the whole service
(`service.to_read`: a row and a model per replica) to count them cost a pass over every task
each time, in the worker that also runs the create operations."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.containers.models import Container
from app.hosts.models import Host
from app.services.models import Service
from app.services.schemas import ReplicaCounts, ServiceSpec


def replica_counts(session: Session, service: Service, spec: ServiceSpec) -> ReplicaCounts:
    """The counts `service.to_read` gives: replicas of the service's revision on hosts that
    answer, running, and ready (`decide.is_ready`: healthy, if they have a health check).
    `spec` is the service's."""
    running = (Container.state == "running") & (Container.desired_state == "running")
    healthy = Container.health == "healthy"
    ready = running & (
        healthy if spec.healthcheck is not None else or_(healthy, Container.health.is_(None))
    )
    row = session.execute(
        select(
            func.count().filter(Container.state == "running"),
            func.count().filter(ready),
        )
        .select_from(Container)
        .join(Host, Host.id == Container.host_id)
        .where(
            Container.service_id == service.id,
            Container.revision == service.revision,
            Container.desired_state != "removed",
            Host.status == "ready",
        )
    ).one()
    return ReplicaCounts(desired=service.replicas, running=row[0], healthy=row[1])

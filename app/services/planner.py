"""`POST /services/{id}/plan`: what applying a spec would do, per replica and host, without
doing it. It asks the same scheduler the reconciler uses, read-only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.containers import scheduler
from app.containers.models import Container
from app.core.config import Settings
from app.hosts.models import Host
from app.services import service as services
from app.services.models import Service
from app.services.schemas import Plan, PlannedChange, ServiceSpec


def preview(session: Session, *, service_id: str, spec: ServiceSpec, settings: Settings) -> Plan:
    """What applying `spec` to the service would do; a spec it would refuse is refused here."""
    service = services.get(session, service_id=service_id)
    services.validate(session, spec, settings, project_id=service.project_id, service_id=service.id)
    return plan(session, service, spec)


def plan(session: Session, service: Service, spec: ServiceSpec) -> Plan:
    current = ServiceSpec.model_validate(service.spec)
    changes_revision = spec.model_copy(update={"replicas": 0}) != current.model_copy(
        update={"replicas": 0}
    )
    names = {row.id: row.name for row in session.execute(select(Host.id, Host.name))}
    tasks = [
        t
        for t in session.execute(
            select(Container).where(Container.service_id == service.id)
        ).scalars()
        if t.desired_state != "removed"
    ]
    by_slot = {t.slot: t for t in sorted(tasks, key=lambda t: t.created_at)}
    result = Plan(revision_change=changes_revision, start=[], stop=[], replace=[], unplaceable=[])
    for slot, task in sorted(by_slot.items(), key=lambda item: item[0] or 0):
        change = PlannedChange(
            slot=slot or 0,
            host_id=task.host_id,
            host_name=names.get(task.host_id),
            container_id=task.id,
            reason="",
        )
        if (slot or 0) > spec.replicas:
            result.stop.append(change.model_copy(update={"reason": "scaled down"}))
        elif changes_revision:
            result.replace.append(change.model_copy(update={"reason": "new revision"}))
    spread: dict[str, int] = {}
    for task in tasks:
        spread[task.host_id] = spread.get(task.host_id, 0) + 1
    placer = scheduler.Placer(session)
    for slot in range(1, spec.replicas + 1):
        if slot in by_slot:
            continue
        placement = placer.place(
            services.container_spec(spec),
            spec.placement.constraints,
            spread=spread,
            max_per_host=spec.placement.max_per_host,
            project_id=service.project_id,
        )
        if placement.host is None:
            reasons = "; ".join(f"{name}: {why}" for name, why in placement.reasons.items())
            result.unplaceable.append(
                PlannedChange(slot=slot, host_id=None, host_name=None, reason=reasons or "no hosts")
            )
            continue
        spread[placement.host.id] = spread.get(placement.host.id, 0) + 1
        result.start.append(
            PlannedChange(
                slot=slot,
                host_id=placement.host.id,
                host_name=placement.host.name,
                reason="new replica",
            )
        )
    return result

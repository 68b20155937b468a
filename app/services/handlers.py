"""`service.converge`: the operation a service change answers with. It does no work on hosts
(the reconciler does); it follows the service until it settles at the revision asked for, and
reports the outcome: done, rolled back, paused, or superseded by a later change."""

from __future__ import annotations

from typing import Any

from app.core.db import utcnow
from app.operations.context import Deferred, OperationContext, PermanentError
from app.operations.registry import handler
from app.services.deadline import Mark, allowance
from app.services.image_pin import pin_image
from app.services.models import RolloutOutcome, RolloutPhase, Service, ServiceStatus
from app.services.progress import replica_counts
from app.services.schemas import ServiceSpec

_LOOK_AGAIN_SECONDS = 0.5


@handler("service.converge")
def converge(ctx: OperationContext) -> dict[str, Any]:
    target = int(ctx.params.get("revision", 0))
    pin_image(ctx, revision=target)
    with ctx.app.db.session(write=False) as session:
        service = session.get(Service, ctx.claim.target_id)
        if service is None:
            if ctx.params.get("removing"):
                return {"removed": True}
            raise PermanentError("the service was deleted")
        spec = ServiceSpec.model_validate(service.spec)
        # Counted by the database: a look every half second must not read every replica.
        replicas = replica_counts(session, service, spec)
        status, outcome, revision = service.status, service.outcome, service.revision
        detail, rollout = service.status_detail, service.rollout or {}
    now = utcnow()
    mark = Mark.carried(ctx.claim.progress, replicas.healthy, now)
    progress = {
        "status": status,
        "revision": revision,
        "desired": replicas.desired,
        "running": replicas.running,
        "healthy": replicas.healthy,
        "detail": detail,
        **mark.to_json(),
    }
    ctx.progress(progress)
    if ctx.params.get("removing"):
        raise Deferred(_LOOK_AGAIN_SECONDS)
    if rollout.get("phase") == RolloutPhase.ROLLING_BACK and rollout.get("from") == target:
        raise PermanentError(
            f"revision {target} failed and is being rolled back: {rollout.get('reason')}"
        )
    if revision != target and not rollout:
        if outcome == RolloutOutcome.ROLLED_BACK:
            raise PermanentError(detail)
        raise PermanentError(f"superseded: the service is now at revision {revision}")
    if status == ServiceStatus.PAUSED:
        raise PermanentError(f"the update is paused: {detail}")
    if status == ServiceStatus.RUNNING and revision == target:
        ctx.progress(progress, force=True)
        return {**progress, "settled_at": now.isoformat()}
    # The service keeps trying (it replaces failed replicas with backoff); only the wait ends.
    if mark.overdue(now, allowance(ctx.app.settings.converge_deadline_seconds, [spec])):
        raise PermanentError(
            f"no further replica became ready in {ctx.app.settings.converge_deadline_seconds:g} s:"
            f" {status}, {detail or 'no reason given'}"
        )
    raise Deferred(_LOOK_AGAIN_SECONDS)

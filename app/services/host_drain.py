"""The `host.drain` operation: it waits for the service replicas to leave the host, which is
why it lives with services and not below them in hosts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from app.containers.models import Container
from app.core.db import utcnow
from app.hosts import service as hosts
from app.operations.context import Deferred, OperationContext
from app.operations.registry import handler
from app.workers import wakeups


@handler("host.drain")
def drain(ctx: OperationContext) -> dict[str, Any]:
    """The host is `draining` from the request on, which makes the reconciler start its service
    replicas elsewhere and then stop them here; this waits for that, then leaves the host
    unschedulable."""
    host_id = ctx.claim.target_id
    assert host_id is not None
    with ctx.app.db.session(write=False) as session:
        remaining = session.execute(
            select(func.count())
            .select_from(Container)
            .where(
                Container.host_id == host_id,
                Container.service_id.is_not(None),
            )
        ).scalar_one()
    if remaining:
        ctx.progress({"replicas_left": remaining})
        wakeups.notify(wakeups.SERVICES)
        raise Deferred(1.0)
    with ctx.session() as session:
        host = hosts.get(session, host_id=host_id, for_update=True)
        host.schedulable = False
        host.draining = False
        host.updated_at = utcnow()
        host.version += 1
    ctx.log(f"host {host_id} drained and unschedulable")
    return {"host_id": host_id, "replicas_left": 0}

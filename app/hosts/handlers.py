"""Operation kinds for hosts."""

from __future__ import annotations

from typing import Any

from app.core.db import utcnow
from app.hosts import service
from app.operations.context import OperationContext
from app.operations.registry import handler


@handler("host.drain")
def drain(ctx: OperationContext) -> dict[str, Any]:
    """Take the host out of scheduling. (Moving service replicas off comes with services.)"""
    host_id = ctx.claim.target_id
    assert host_id is not None
    with ctx.session() as session:
        host = service.get(session, host_id=host_id, for_update=True)
        host.schedulable = False
        host.draining = False
        host.updated_at = utcnow()
        host.version += 1
    ctx.log(f"host {host_id} drained and unschedulable")
    return {"host_id": host_id, "moved_replicas": 0}

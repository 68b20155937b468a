from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Ctx, Operator, set_audit_resource
from app.api.paths import API_PREFIX
from app.hosts import service as hosts
from app.operations import queue
from app.operations.schemas import OperationRead
from app.operations.service import to_read

router = APIRouter(prefix=f"{API_PREFIX}/debug", tags=["debug"])


class DebugOperationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["debug.noop", "debug.sleep", "debug.fail", "debug.container"]
    params: Annotated[dict[str, Any], Field(max_length=20)] = Field(default_factory=dict)
    host_id: str | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None


class DebugOperationAccepted(BaseModel):
    operation: OperationRead


@router.post(
    "/operations",
    status_code=202,
    summary="Queue a test operation (only with BERTH_ENABLE_DEBUG_OPERATIONS=true)",
)
def create_debug_operation(
    data: DebugOperationCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
) -> DebugOperationAccepted:
    with context.db.session() as session:
        if data.host_id is not None:
            hosts.get(session, host_id=data.host_id)
        operation = queue.enqueue(
            session,
            kind=data.kind,
            params=data.params,
            host_id=data.host_id,
            created_by=principal.actor,
            max_attempts=data.max_attempts or context.settings.operation_max_attempts,
        )
        read = to_read(operation)
        set_audit_resource(request, f"operations/{read.id}")
    response.headers["Location"] = f"/api/v1/operations/{read.id}"
    return DebugOperationAccepted(operation=read)

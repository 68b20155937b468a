from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import Ctx, ProjectOperator, Viewer, set_audit_resource
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.core.errors import Conflict
from app.operations import queue, service
from app.operations.models import TERMINAL
from app.operations.schemas import OperationLogRead, OperationRead, OperationStatus
from app.operations.waiters import waiters
from app.security.roles import ProjectRole

router = APIRouter(prefix=f"{API_PREFIX}/operations", tags=["operations"])

_POLL_SECONDS = 0.5


@router.get("", summary="List operations")
def list_operations(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: OperationStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    host_id: Annotated[str | None, Query(max_length=26)] = None,
) -> Page[OperationRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(
            session,
            limit=limit,
            cursor=cursor,
            status=status,
            kind=kind,
            target_id=target_id,
            host_id=host_id,
            projects=principal.readable_projects(),
        )
        return Page(items=[service.to_read(op) for op in rows], next_cursor=next_cursor)


@router.get(
    "/{operation_id}",
    summary="Get an operation; `?wait=N` long-polls up to N seconds for it to finish",
    openapi_extra=versioned(sends_etag=True),
)
async def get_operation(
    operation_id: str,
    context: Ctx,
    principal: Viewer,
    response: Response,
    wait: Annotated[
        float, Query(ge=0, le=60, description="Seconds to wait for a terminal status.")
    ] = 0,
) -> OperationRead:
    def read() -> OperationRead:
        with context.db.session(write=False) as session:
            return service.to_read(
                service.get(session, operation_id=operation_id, principal=principal)
            )

    deadline = time.monotonic() + wait
    finished = waiters.register(operation_id)
    try:
        operation = await run_in_threadpool(read)
        while operation.status not in TERMINAL and time.monotonic() < deadline:
            # Woken at once when this process finishes it; the poll catches other processes.
            with anyio.move_on_after(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                await finished.wait()
            operation = await run_in_threadpool(read)
    finally:
        waiters.unregister(operation_id, finished)
    response.headers["ETag"] = f'"{operation.version}"'
    return operation


@router.get("/{operation_id}/logs", summary="The operation's own log lines, oldest first")
def get_operation_logs(
    operation_id: str,
    context: Ctx,
    principal: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
    cursor: Cursor = None,
) -> Page[OperationLogRead]:
    with context.db.session(write=False) as session:
        service.get(session, operation_id=operation_id, principal=principal)
        rows, next_cursor = service.get_logs(
            session, operation_id=operation_id, limit=limit, cursor=cursor
        )
        return Page(
            items=[OperationLogRead.model_validate(row) for row in rows], next_cursor=next_cursor
        )


@router.post(
    "/{operation_id}/cancel",
    status_code=202,
    summary="Cancel: a queued operation at once, a running one at its next safe point",
)
def cancel_operation(
    operation_id: str,
    request: Request,
    context: Ctx,
    principal: ProjectOperator,
    response: Response,
) -> OperationRead:
    set_audit_resource(request, f"operations/{operation_id}")
    with context.db.session() as session:
        operation = service.get(
            session,
            operation_id=operation_id,
            for_update=True,
            principal=principal,
            needed=ProjectRole.operator,
        )
        if operation.status in TERMINAL:
            raise Conflict(f"operation {operation_id} already {operation.status}")
        queue.request_cancel(session, operation)
        read = service.to_read(operation)
    response.headers["Location"] = f"/api/v1/operations/{operation_id}"
    return read

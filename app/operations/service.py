"""Reading operations for the API; writing them is the queue's job."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import Principal
from app.api.pagination import paginate
from app.core.lookup import get_or_404
from app.operations.models import QUEUED, Operation, OperationLog
from app.operations.schemas import OperationRead
from app.security.roles import ProjectRole


def to_read(operation: Operation) -> OperationRead:
    retrying = operation.status == QUEUED and operation.attempts > 0
    return OperationRead(
        id=operation.id,
        kind=operation.kind,
        target_type=operation.target_type,
        target_id=operation.target_id,
        host_id=operation.host_id,
        status=operation.status,
        attempts=operation.attempts,
        max_attempts=operation.max_attempts,
        progress=operation.progress,
        error=operation.error,
        result=operation.result,
        cancel_requested=operation.cancel_requested,
        next_attempt_at=operation.run_after if retrying else None,
        created_at=operation.created_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
        created_by=operation.created_by,
        version=operation.version,
    )


def get(
    session: Session,
    *,
    operation_id: str,
    for_update: bool = False,
    principal: Principal | None = None,
    needed: ProjectRole = ProjectRole.viewer,
) -> Operation:
    """The operation; with `principal`, only if it holds `needed` in the operation's project
    (one it cannot read is missing to it)."""
    operation = get_or_404(
        session, Operation, operation_id, what="operation", for_update=for_update
    )
    if principal is not None:
        principal.require_role(
            operation.project_id, needed, missing=f"no operation {operation_id!r}"
        )
    return operation


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    kind: str | None = None,
    target_id: str | None = None,
    host_id: str | None = None,
    projects: frozenset[str] | None = None,
) -> tuple[Sequence[Operation], str | None]:
    """A page of the operations of `projects` (None: every project)."""
    statement = select(Operation)
    if projects is not None:
        statement = statement.where(Operation.project_id.in_(sorted(projects)))
    if status is not None:
        statement = statement.where(Operation.status == status)
    if kind is not None:
        statement = statement.where(Operation.kind == kind)
    if target_id is not None:
        statement = statement.where(Operation.target_id == target_id)
    if host_id is not None:
        statement = statement.where(Operation.host_id == host_id)
    return paginate(session, statement, Operation.id, limit=limit, cursor=cursor)


def get_logs(
    session: Session, *, operation_id: str, limit: int, cursor: str | None
) -> tuple[Sequence[OperationLog], str | None]:
    statement = select(OperationLog).where(OperationLog.operation_id == operation_id)
    return paginate(session, statement, OperationLog.seq, limit=limit, cursor=cursor)

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import Ctx, Principal, Viewer, set_audit_resource
from app.api.gate import BREAK_GLASS_HEADER, Approver
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.changes import service
from app.changes.gate import break_glass
from app.changes.models import ChangeRequest, ChangeState
from app.changes.schemas import ChangeRead, ChangeReject
from app.projects import access
from app.security.roles import ProjectRole
from app.workers import wakeups

router = APIRouter(prefix=f"{API_PREFIX}/changes", tags=["changes"])


def _change(
    session: Session,
    principal: Principal,
    change_id: str,
    needed: ProjectRole = ProjectRole.viewer,
) -> ChangeRequest:
    """The change, if the caller has `needed` in its project: another project's is a 404, as
    if it did not exist. One to answer is locked: two approvers answer one after the other."""
    answering = needed is not ProjectRole.viewer
    change = service.get(session, change_id=change_id, for_update=answering)
    access.require_in_project(
        principal, change.project_id, needed, missing=f"no change {change_id!r}"
    )
    return change


@router.get("", summary="List change requests, by state and project")
def list_changes(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: ChangeState | None = None,
    project: Annotated[str | None, Query(max_length=63, description="A project's name")] = None,
) -> Page[ChangeRead]:
    with context.db.session(write=False) as session:
        return service.read_page(
            session,
            limit=limit,
            cursor=cursor,
            readable=access.readable_project_ids(principal),
            state=state,
            project=project,
        )


@router.get(
    "/{change_id}",
    summary="Get a change request, its plan and what became of it",
    openapi_extra=versioned(sends_etag=True),
)
def get_change(change_id: str, response: Response, context: Ctx, principal: Viewer) -> ChangeRead:
    with context.db.session(write=False) as session:
        read = service.read(session, change=_change(session, principal, change_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.post(
    "/{change_id}/approve",
    summary="Approve a change request (approver, not its author): applied as its author",
    description="The change runs now, through the same code as the direct write, as its "
    "author; the audit entry names the approver (`actor`) and the author (`author`). Outside "
    "the project's change windows it waits (`waiting_window`, until `not_before`) or is "
    "refused (409), as the project's `outside_window` says; a global admin's "
    f"`{BREAK_GLASS_HEADER}: <reason>` applies it at once. A change the write itself refuses "
    "(the target changed since, its name was taken) ends `failed` with the reason in `error`.",
)
def approve_change(
    change_id: str, request: Request, context: Ctx, principal: Approver
) -> ChangeRead:
    reason = break_glass(request, principal)
    with context.db.session() as session:
        change = _change(session, principal, change_id, ProjectRole.approver)
        resource = service.approve(
            session,
            change=change,
            approver=service.Author(principal.token_id, principal.actor),
            break_glass=reason,
            settings=context.settings,
            cipher=context.cipher,
        )
        request.state.audit_author = change.author
        set_audit_resource(request, resource)
        read = service.read(session, change=change)
    if read.operations:
        # After the commit: the reconciler is to see the change it is woken for.
        wakeups.notify(wakeups.SERVICES)
    return read


@router.post(
    "/{change_id}/reject",
    summary="Reject a change request (approver, not its author)",
)
def reject_change(
    change_id: str, data: ChangeReject, request: Request, context: Ctx, principal: Approver
) -> ChangeRead:
    set_audit_resource(request, f"changes/{change_id}")
    with context.db.session() as session:
        change = _change(session, principal, change_id, ProjectRole.approver)
        service.reject(
            session,
            change=change,
            approver=service.Author(principal.token_id, principal.actor),
            reason=data.reason,
        )
        request.state.audit_author = change.author
        return service.read(session, change=change)

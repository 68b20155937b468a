from __future__ import annotations

from functools import partial
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import (
    Ctx,
    Principal,
    ProjectOperator,
    Viewer,
    check_if_match,
    set_audit_resource,
)
from app.api.gate import HELD, Gate, Held
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.projects import service as projects
from app.projects.access import check_row
from app.projects.schemas import ProjectQuery
from app.security.roles import ProjectRole
from app.services import image_updates, planner, service
from app.services.models import Service
from app.services.schemas import (
    ImageCheck,
    Plan,
    RevisionDiff,
    RevisionRead,
    ScaleRequest,
    ServiceAccepted,
    ServiceCreate,
    ServicePatch,
    ServiceRead,
    ServiceReplace,
    ServiceUpdate,
)
from app.workers import wakeups

router = APIRouter(prefix=f"{API_PREFIX}/services", tags=["services"])


def _answer(response: Response, body: ServiceAccepted) -> ServiceAccepted:
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    # After the commit: the reconciler is to see the change it is woken for. Named: a pass
    # over this service, not a sweep over all of them.
    wakeups.notify(wakeups.SERVICES, [body.service.id])
    return body


@router.post(
    "",
    status_code=202,
    summary="Create a service; the reconciler starts its replicas",
    response_model=ServiceAccepted,
    responses=HELD,
)
def create_service(
    data: ServiceCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    payload = data.model_dump(mode="json", exclude_unset=True)
    with context.db.session() as session:
        project = projects.target(
            session, principal, name=data.project, needed=ProjectRole.operator
        )
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="service.create",
            payload=payload,
            project_id=project.id,
        )
        if held is not None:
            return held
        body = service.create_and_queue(
            session,
            name=data.name,
            spec=data.spec,
            settings=context.settings,
            created_by=principal.actor,
            project_id=project.id,
        )
        set_audit_resource(request, f"services/{body.service.id}")
    return _answer(response, body)


@router.get("", summary="List services", response_model=Page[ServiceRead])
def list_services(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    stack_id: Annotated[str | None, Query(max_length=26)] = None,
    name: Annotated[str | None, Query(max_length=63)] = None,
    project: ProjectQuery = None,
) -> Response:
    with context.db.session(write=False) as session:
        readable = projects.list_filter(session, principal, name=project)
        rows, next_cursor = service.get_all(
            session, limit=limit, cursor=cursor, stack_id=stack_id, name=name, projects=readable
        )
        items = service.read_dicts(session, rows)
    # Serialised in one pass, not as a model per replica: a service can have 10,000.
    return _json({"items": items, "next_cursor": next_cursor})


@router.get(
    "/{service_id}",
    summary="Get a service with its tasks (one per replica)",
    response_model=ServiceRead,
    openapi_extra=versioned(sends_etag=True),
)
def get_service(service_id: str, context: Ctx, principal: Viewer) -> Response:
    with context.db.session(write=False) as session:
        _may(session, principal, service_id, ProjectRole.viewer)
        [read] = service.read_dicts(session, [service.get(session, service_id=service_id)])
    return _json(read, headers={"ETag": f'"{read["version"]}"'})


def _json(body: object, *, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _may(session: Session, principal: Principal, service_id: str, needed: ProjectRole) -> None:
    """The role the route needs, in the service's project (app/projects/access.py)."""
    check_row(session, principal, Service, service_id, needed, what="service")


def _change(
    context: AppContext,
    request: Request,
    response: Response,
    principal: Principal,
    service_id: str,
    change: service.ServiceChange,
    held: Held,
) -> ServiceAccepted | Response:
    """Make the change, unless the service's project holds it as the change request `held`
    describes."""
    set_audit_resource(request, f"services/{service_id}")
    with context.db.session() as session:
        _may(session, principal, service_id, ProjectRole.operator)
        answer = held.gate.hold(
            session,
            request=request,
            principal=principal,
            kind=held.kind,
            payload=held.payload,
            target_id=service_id,
        )
        if answer is not None:
            return answer
        body = change(
            session,
            service_id=service_id,
            check_version=partial(check_if_match, request),
            settings=context.settings,
            created_by=principal.actor,
        )
    return _answer(response, body)


@router.put(
    "/{service_id}",
    status_code=202,
    summary="Replace the spec: a new revision, rolled out",
    response_model=ServiceAccepted,
    responses=HELD,
    openapi_extra=versioned(checks_if_match=True),
)
def update_service(
    service_id: str,
    data: ServiceReplace,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    replace = partial(service.revise, make_spec=lambda _session, svc: data.spec_for(svc.name))
    held = Held(gate, "service.update", data.model_dump(mode="json", exclude_unset=True))
    return _change(context, request, response, principal, service_id, replace, held)


@router.patch(
    "/{service_id}",
    status_code=202,
    summary="Change some spec fields: a new revision",
    response_model=ServiceAccepted,
    responses=HELD,
    openapi_extra=versioned(checks_if_match=True),
)
def patch_service(
    service_id: str,
    data: ServicePatch,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    merge = partial(service.revise, make_spec=lambda _session, svc: service.patched(svc, data.spec))
    held = Held(gate, "service.patch", data.model_dump(mode="json"))
    return _change(context, request, response, principal, service_id, merge, held)


@router.post(
    "/{service_id}/rollback",
    status_code=202,
    summary="Go back one revision (as a new revision)",
    response_model=ServiceAccepted,
    responses=HELD,
    openapi_extra=versioned(checks_if_match=True),
)
def rollback_service(
    service_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    back = partial(service.revise, make_spec=service.previous_spec, pin=service.previous_digest)
    held = Held(gate, "service.rollback", {})
    return _change(context, request, response, principal, service_id, back, held)


@router.post(
    "/{service_id}/scale",
    status_code=202,
    summary="Change the replica count (no new revision)",
    response_model=ServiceAccepted,
    responses=HELD,
    openapi_extra=versioned(checks_if_match=True),
)
def scale_service(
    service_id: str,
    data: ScaleRequest,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    scale = partial(service.scale, replicas=data.replicas)
    held = Held(gate, "service.scale", data.model_dump(mode="json"))
    return _change(context, request, response, principal, service_id, scale, held)


@router.get("/{service_id}/revisions", summary="The service's revisions, oldest first")
def list_revisions(
    service_id: str, context: Ctx, principal: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> Page[RevisionRead]:
    with context.db.session(write=False) as session:
        _may(session, principal, service_id, ProjectRole.viewer)
        return service.revisions(session, service_id=service_id, limit=limit, cursor=cursor)


@router.get(
    "/{service_id}/revisions/{before}/diff/{after}",
    summary="What changed between two revisions: spec fields and image digest",
)
def diff_revisions(
    service_id: str, before: int, after: int, context: Ctx, principal: Viewer
) -> RevisionDiff:
    with context.db.session(write=False) as session:
        _may(session, principal, service_id, ProjectRole.viewer)
        return service.revision_diff(session, service_id=service_id, before=before, after=after)


@router.post(
    "/{service_id}/plan", summary="Dry run: what a spec would start, stop and replace, per host"
)
def plan_service(
    service_id: str, data: ServiceUpdate, context: Ctx, principal: ProjectOperator
) -> Plan:
    with context.db.session(write=False) as session:
        _may(session, principal, service_id, ProjectRole.operator)
        return planner.preview(
            session, service_id=service_id, spec=data.spec, settings=context.settings
        )


@router.delete(
    "/{service_id}",
    status_code=202,
    summary="Delete a service and its replicas",
    response_model=ServiceAccepted,
    responses=HELD,
    openapi_extra=versioned(checks_if_match=True),
)
def delete_service(
    service_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> ServiceAccepted | Response:
    held = Held(gate, "service.delete", {})
    return _change(context, request, response, principal, service_id, service.delete, held)


@router.post(
    "/{service_id}/check-image",
    summary="Ask the registry now whether the service's tag names a new digest",
    description="What the image check does every BERTH_IMAGE_CHECK_INTERVAL_SECONDS, for this "
    "service, now: a conditional manifest request to the tag's registry (with its stored "
    "credentials, under its rate limit). A new digest shows as `update_available`; with "
    "`auto_update` it is rolled out as an ordinary update, whose converge is `operation`.",
)
def check_service_image(
    service_id: str, request: Request, context: Ctx, principal: ProjectOperator
) -> ImageCheck:
    set_audit_resource(request, f"services/{service_id}")
    with context.db.session(write=False) as session:
        _may(session, principal, service_id, ProjectRole.operator)
    # The change requests' hold, handed in by create_app like the routes' gate (app/api/gate.py).
    hold: image_updates.ImageUpdateHold = request.app.state.changes
    return image_updates.check_service(context, service_id=service_id, hold=hold)

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import Ctx, Operator, Principal, Viewer, check_if_match, set_audit_resource
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.core.errors import Conflict
from app.operations.service import to_read as operation_to_read
from app.services import service
from app.services.models import Service, ServiceStatus
from app.services.planner import plan
from app.services.schemas import (
    Plan,
    RevisionRead,
    ScaleRequest,
    ServiceAccepted,
    ServiceCreate,
    ServicePatch,
    ServiceRead,
    ServiceSpec,
    ServiceUpdate,
)
from app.workers import wakeups

router = APIRouter(prefix=f"{API_PREFIX}/services", tags=["services"])


def _accepted(
    context: AppContext,
    session: Session,
    response: Response,
    principal: Principal,
    svc: Service,
    **params: object,
) -> ServiceAccepted:
    operation = service.queue_converge(
        session, svc, settings=context.settings, created_by=principal.actor, **params
    )
    session.flush()
    body = ServiceAccepted(
        operation=operation_to_read(operation), service=service.to_read(session, svc)
    )
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    return body


@router.post("", status_code=202, summary="Create a service; the reconciler starts its replicas")
def create_service(
    data: ServiceCreate, request: Request, response: Response, context: Ctx, principal: Operator
) -> ServiceAccepted:
    with context.db.session() as session:
        svc = service.create(
            session,
            name=data.name,
            spec=data.spec,
            settings=context.settings,
            created_by=principal.actor,
        )
        body = _accepted(context, session, response, principal, svc)
    set_audit_resource(request, f"services/{svc.id}")
    wakeups.notify(wakeups.SERVICES)
    return body


@router.get("", summary="List services")
def list_services(
    context: Ctx,
    _: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    stack_id: Annotated[str | None, Query(max_length=26)] = None,
    name: Annotated[str | None, Query(max_length=63)] = None,
) -> Page[ServiceRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(
            session, limit=limit, cursor=cursor, stack_id=stack_id, name=name
        )
        return Page(items=[service.to_read(session, s) for s in rows], next_cursor=next_cursor)


@router.get("/{service_id}", summary="Get a service with its tasks (one per replica)")
def get_service(service_id: str, response: Response, context: Ctx, _: Viewer) -> ServiceRead:
    with context.db.session(write=False) as session:
        read = service.to_read(session, service.get(session, service_id=service_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


def _change(
    context: AppContext,
    request: Request,
    response: Response,
    principal: Principal,
    service_id: str,
    make_spec: Callable[[Session, Service], ServiceSpec],
) -> ServiceAccepted:
    set_audit_resource(request, f"services/{service_id}")
    with context.db.session() as session:
        svc = service.get(session, service_id=service_id, for_update=True)
        check_if_match(request, svc.version)
        spec = make_spec(session, svc)
        service.new_revision(
            session, service=svc, spec=spec, settings=context.settings, created_by=principal.actor
        )
        body = _accepted(context, session, response, principal, svc)
    wakeups.notify(wakeups.SERVICES)
    return body


@router.put(
    "/{service_id}", status_code=202, summary="Replace the spec: a new revision, rolled out"
)
def update_service(
    service_id: str,
    data: ServiceUpdate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
) -> ServiceAccepted:
    return _change(context, request, response, principal, service_id, lambda _s, _svc: data.spec)


@router.patch("/{service_id}", status_code=202, summary="Change some spec fields: a new revision")
def patch_service(
    service_id: str,
    data: ServicePatch,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
) -> ServiceAccepted:
    return _change(
        context,
        request,
        response,
        principal,
        service_id,
        lambda _s, svc: service.patched(svc, data.spec),
    )


@router.post(
    "/{service_id}/rollback", status_code=202, summary="Go back one revision (as a new revision)"
)
def rollback_service(
    service_id: str, request: Request, response: Response, context: Ctx, principal: Operator
) -> ServiceAccepted:
    return _change(context, request, response, principal, service_id, service.previous_spec)


@router.post(
    "/{service_id}/scale", status_code=202, summary="Change the replica count (no new revision)"
)
def scale_service(
    service_id: str,
    data: ScaleRequest,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
) -> ServiceAccepted:
    set_audit_resource(request, f"services/{service_id}")
    with context.db.session() as session:
        svc = service.get(session, service_id=service_id, for_update=True)
        check_if_match(request, svc.version)
        if svc.removing:
            raise Conflict(f"service {svc.name!r} is being removed")
        svc.replicas = data.replicas
        svc.spec = {**svc.spec, "replicas": data.replicas}
        svc.version += 1
        body = _accepted(context, session, response, principal, svc)
    wakeups.notify(wakeups.SERVICES)
    return body


@router.get("/{service_id}/revisions", summary="The service's revisions, oldest first")
def list_revisions(
    service_id: str, context: Ctx, _: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> Page[RevisionRead]:
    with context.db.session(write=False) as session:
        service.get(session, service_id=service_id)
        items, next_cursor = service.revisions(
            session, service_id=service_id, limit=limit, cursor=cursor
        )
        return Page(items=items, next_cursor=next_cursor)


@router.post(
    "/{service_id}/plan", summary="Dry run: what a spec would start, stop and replace, per host"
)
def plan_service(service_id: str, data: ServiceUpdate, context: Ctx, _: Operator) -> Plan:
    with context.db.session(write=False) as session:
        svc = service.get(session, service_id=service_id)
        service.validate(session, data.spec, context.settings)
        return plan(session, svc, data.spec)


@router.delete("/{service_id}", status_code=202, summary="Delete a service and its replicas")
def delete_service(
    service_id: str, request: Request, response: Response, context: Ctx, principal: Operator
) -> ServiceAccepted:
    set_audit_resource(request, f"services/{service_id}")
    with context.db.session() as session:
        svc = service.get(session, service_id=service_id, for_update=True)
        check_if_match(request, svc.version)
        svc.removing = True
        svc.status = ServiceStatus.REMOVING
        svc.version += 1
        body = _accepted(context, session, response, principal, svc, removing=True)
    wakeups.notify(wakeups.SERVICES)
    return body

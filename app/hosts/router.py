from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import Admin, Ctx, Viewer, check_if_match, set_audit_resource
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.hosts import service
from app.hosts.schemas import HostAccepted, HostCreate, HostRead, HostStatus, HostUpdate

router = APIRouter(prefix=f"{API_PREFIX}/hosts", tags=["hosts"])


@router.post(
    "",
    status_code=201,
    summary="Register a Docker engine",
    openapi_extra=versioned(sends_etag=True),
)
def create_host(
    data: HostCreate, request: Request, response: Response, context: Ctx, _: Admin
) -> HostRead:
    with context.db.session() as session:
        host = service.create(session, data=data, cipher=context.cipher)
        read = service.to_read(host)
        set_audit_resource(request, f"hosts/{read.id}")
    response.headers["Location"] = f"/api/v1/hosts/{read.id}"
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.get("", summary="List hosts")
def list_hosts(
    context: Ctx,
    _: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: HostStatus | None = None,
    name: Annotated[str | None, Query(max_length=100)] = None,
    label: Annotated[str | None, Query(max_length=300, description="`key` or `key=value`")] = None,
) -> Page[HostRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(
            session, limit=limit, cursor=cursor, status=status, label=label, name=name
        )
        return Page(items=[service.to_read(h) for h in rows], next_cursor=next_cursor)


@router.get("/{host_id}", summary="Get a host", openapi_extra=versioned(sends_etag=True))
def get_host(host_id: str, response: Response, context: Ctx, _: Viewer) -> HostRead:
    with context.db.session(write=False) as session:
        read = service.to_read(service.get(session, host_id=host_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.patch(
    "/{host_id}",
    summary="Change a host's name, URL, labels, TLS or schedulable flag",
    openapi_extra=versioned(checks_if_match=True, sends_etag=True),
)
def update_host(
    host_id: str, data: HostUpdate, request: Request, response: Response, context: Ctx, _: Admin
) -> HostRead:
    set_audit_resource(request, f"hosts/{host_id}")
    with context.db.session() as session:
        host = service.get(session, host_id=host_id, for_update=True)
        check_if_match(request, host.version)
        service.update(session, host=host, data=data, cipher=context.cipher)
        read = service.to_read(host)
    context.engines.forget(host_id)
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.post(
    "/{host_id}/drain",
    status_code=202,
    summary="Drain: move service replicas off, then mark the host unschedulable",
)
def drain_host(
    host_id: str, request: Request, response: Response, context: Ctx, principal: Admin
) -> HostAccepted:
    set_audit_resource(request, f"hosts/{host_id}")
    with context.db.session() as session:
        body = service.drain(
            session, host_id=host_id, settings=context.settings, created_by=principal.actor
        )
    response.headers["Location"] = f"/api/v1/operations/{body.operation.id}"
    return body


@router.delete(
    "/{host_id}",
    status_code=204,
    summary="Forget a host",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_host(
    host_id: str,
    request: Request,
    context: Ctx,
    _: Admin,
    force: Annotated[bool, Query(description="Delete even with work pending on it.")] = False,
) -> Response:
    set_audit_resource(request, f"hosts/{host_id}")
    with context.db.session() as session:
        host = service.get(session, host_id=host_id, for_update=True)
        check_if_match(request, host.version)
        service.delete(session, host=host, force=force)
    context.engines.forget(host_id)
    return Response(status_code=204)

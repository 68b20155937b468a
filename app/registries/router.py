from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.api.deps import (
    Ctx,
    Principal,
    ProjectAdmin,
    Viewer,
    check_if_match,
    set_audit_resource,
)
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.projects import service as projects
from app.projects.access import check_row
from app.projects.schemas import ProjectQuery
from app.registries import service
from app.registries.login import check_login
from app.registries.models import Registry
from app.registries.schemas import RegistryCheck, RegistryCreate, RegistryRead, RegistryUpdate
from app.security.roles import ProjectRole

router = APIRouter(prefix=f"{API_PREFIX}/registries", tags=["registries"])

_CHECK_TIMEOUT_SECONDS = 10.0


def _administer(session: Session, principal: Principal, registry_id: str) -> None:
    """Credentials are a project-admin's to change (a global admin's anywhere)."""
    check_row(session, principal, Registry, registry_id, ProjectRole.project_admin, what="registry")


@router.post(
    "",
    status_code=201,
    summary="Store credentials for a registry",
    openapi_extra=versioned(sends_etag=True),
)
def create_registry(
    data: RegistryCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectAdmin,
) -> RegistryRead:
    with context.db.session() as session:
        project = projects.target(
            session, principal, name=data.project, needed=ProjectRole.project_admin
        )
        registry = service.create(session, data=data, cipher=context.cipher, project_id=project.id)
        read = service.to_read(registry)
        set_audit_resource(request, f"registries/{read.id}")
    response.headers["Location"] = f"{API_PREFIX}/registries/{read.id}"
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.get("", summary="List registries (never their passwords)")
def list_registries(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    project: ProjectQuery = None,
) -> Page[RegistryRead]:
    with context.db.session(write=False) as session:
        readable = projects.list_filter(session, principal, name=project)
        rows, next_cursor = service.get_all(session, limit=limit, cursor=cursor, projects=readable)
        return Page(items=[service.to_read(r) for r in rows], next_cursor=next_cursor)


@router.get("/{registry_id}", summary="Get a registry", openapi_extra=versioned(sends_etag=True))
def get_registry(
    registry_id: str, response: Response, context: Ctx, principal: Viewer
) -> RegistryRead:
    with context.db.session(write=False) as session:
        check_row(session, principal, Registry, registry_id, ProjectRole.viewer, what="registry")
        read = service.to_read(service.get(session, registry_id=registry_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.patch(
    "/{registry_id}",
    summary="Change a registry's name, URL or credentials",
    openapi_extra=versioned(checks_if_match=True, sends_etag=True),
)
def update_registry(
    registry_id: str,
    data: RegistryUpdate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectAdmin,
) -> RegistryRead:
    set_audit_resource(request, f"registries/{registry_id}")
    with context.db.session() as session:
        _administer(session, principal, registry_id)
        registry = service.get(session, registry_id=registry_id, for_update=True)
        check_if_match(request, registry.version)
        service.update(session, registry=registry, data=data, cipher=context.cipher)
        read = service.to_read(registry)
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.delete(
    "/{registry_id}",
    status_code=204,
    summary="Forget a registry",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_registry(
    registry_id: str, request: Request, context: Ctx, principal: ProjectAdmin
) -> Response:
    set_audit_resource(request, f"registries/{registry_id}")
    with context.db.session() as session:
        _administer(session, principal, registry_id)
        registry = service.get(session, registry_id=registry_id, for_update=True)
        check_if_match(request, registry.version)
        service.delete(session, registry=registry)
    return Response(status_code=204)


@router.post(
    "/{registry_id}/check",
    summary="Log in to the registry for real with the stored credentials",
)
async def check_registry(
    registry_id: str, request: Request, context: Ctx, principal: ProjectAdmin
) -> RegistryCheck:
    set_audit_resource(request, f"registries/{registry_id}")

    def load() -> tuple[str, str | None, str | None]:
        with context.db.session(write=False) as session:
            _administer(session, principal, registry_id)
            registry = service.get(session, registry_id=registry_id)
            password = (
                context.cipher.decrypt(registry.password_encrypted)
                if registry.password_encrypted
                else None
            )
            return registry.url, registry.username, password

    url, username, password = await run_in_threadpool(load)
    ok, detail = await run_in_threadpool(
        check_login, url, username, password, timeout=_CHECK_TIMEOUT_SECONDS
    )
    return RegistryCheck(ok=ok, detail=detail)

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import (
    Admin,
    Ctx,
    ProjectAdmin,
    Viewer,
    check_if_match,
    set_audit_resource,
)
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.projects import service
from app.projects.schemas import MemberGrant, MemberRead, ProjectCreate, ProjectPatch, ProjectRead

PROJECTS_PATH = f"{API_PREFIX}/projects"

router = APIRouter(prefix=PROJECTS_PATH, tags=["projects"])


@router.post(
    "",
    status_code=201,
    summary="Create a project (admin), with its quotas and policy relaxations",
    openapi_extra=versioned(sends_etag=True),
)
def create_project(
    data: ProjectCreate, request: Request, response: Response, context: Ctx, principal: Admin
) -> ProjectRead:
    with context.db.session() as session:
        project = service.create(session, data=data, created_by=principal.actor)
        read = service.to_read(session, project)
        set_audit_resource(request, f"projects/{read.name}")
    response.headers["Location"] = f"{PROJECTS_PATH}/{read.name}"
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.get("", summary="List the projects the token may read")
def list_projects(
    context: Ctx, principal: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> Page[ProjectRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(session, principal, limit=limit, cursor=cursor)
        return Page(items=[service.to_read(session, p) for p in rows], next_cursor=next_cursor)


@router.get(
    "/{name}",
    summary="Get a project with its quotas and what it uses of them",
    openapi_extra=versioned(sends_etag=True),
)
def get_project(name: str, response: Response, context: Ctx, principal: Viewer) -> ProjectRead:
    with context.db.session(write=False) as session:
        read = service.to_read(session, service.readable_by_name(session, principal, name=name))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.patch(
    "/{name}",
    summary="Change a project's protection, quotas or policy relaxations (admin)",
    openapi_extra=versioned(checks_if_match=True, sends_etag=True),
)
def update_project(
    name: str, data: ProjectPatch, request: Request, response: Response, context: Ctx, _: Admin
) -> ProjectRead:
    set_audit_resource(request, f"projects/{name}")
    with context.db.session() as session:
        project = service.get_by_name(session, name=name, for_update=True)
        check_if_match(request, project.version)
        service.update(session, project=project, data=data)
        session.flush()
        read = service.to_read(session, project)
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete an empty project (admin); 409 while anything belongs to it",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_project(name: str, request: Request, context: Ctx, _: Admin) -> Response:
    set_audit_resource(request, f"projects/{name}")
    with context.db.session() as session:
        project = service.get_by_name(session, name=name, for_update=True)
        check_if_match(request, project.version)
        service.delete(session, project=project)
    return Response(status_code=204)


@router.get("/{name}/members", summary="The tokens with a role in the project")
def list_members(name: str, context: Ctx, principal: ProjectAdmin) -> list[MemberRead]:
    with context.db.session(write=False) as session:
        project = service.administered(session, principal, name=name, for_update=False)
        return service.members(session, project=project)


@router.put(
    "/{name}/members/{token_id}",
    summary="Give a token a role in the project (a global admin, or the project's admins)",
)
def grant_member(
    name: str,
    token_id: str,
    data: MemberGrant,
    request: Request,
    context: Ctx,
    principal: ProjectAdmin,
) -> MemberRead:
    set_audit_resource(request, f"projects/{name}/members/{token_id}")
    with context.db.session() as session:
        project = service.administered(session, principal, name=name)
        member, token_hash = service.grant(
            session, project=project, token_id=token_id, role=data.role, created_by=principal.actor
        )
    # This process sees the new role at once; others within PRINCIPAL_TTL_SECONDS.
    context.principals.pop(token_hash, None)
    return member


@router.delete(
    "/{name}/members/{token_id}",
    status_code=204,
    summary="Take a token's role in the project away",
)
def revoke_member(
    name: str, token_id: str, request: Request, context: Ctx, principal: ProjectAdmin
) -> Response:
    set_audit_resource(request, f"projects/{name}/members/{token_id}")
    with context.db.session() as session:
        project = service.administered(session, principal, name=name)
        token_hash = service.revoke(session, project=project, token_id=token_id)
    context.principals.pop(token_hash, None)
    return Response(status_code=204)


@router.put(
    "/{name}/hosts/{host_id}",
    status_code=204,
    summary="Dedicate a host to the project (admin): only its dedicated projects place there",
)
def dedicate_host(name: str, host_id: str, request: Request, context: Ctx, _: Admin) -> Response:
    set_audit_resource(request, f"projects/{name}/hosts/{host_id}")
    with context.db.session() as session:
        service.dedicate(session, project=service.get_by_name(session, name=name), host_id=host_id)
    return Response(status_code=204)


@router.delete(
    "/{name}/hosts/{host_id}",
    status_code=204,
    summary="End a host's dedication to the project (admin); with none left it is shared",
)
def release_host(name: str, host_id: str, request: Request, context: Ctx, _: Admin) -> Response:
    set_audit_resource(request, f"projects/{name}/hosts/{host_id}")
    with context.db.session() as session:
        service.release(session, project=service.get_by_name(session, name=name), host_id=host_id)
    return Response(status_code=204)

"""The secrets routes that show or change what services make of a secret: reads with
`used_by`, rotation and deletion. The store's own route is in app/secrets/router.py."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, Response

from app.api.deps import Ctx, ProjectAdmin, Viewer, check_if_match, set_audit_resource
from app.api.gate import HELD, Gate
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.projects import service as projects
from app.projects.access import check_row
from app.projects.schemas import ProjectQuery
from app.secrets.models import Secret
from app.secrets.router import SECRETS_PATH
from app.secrets.schemas import SecretRead, SecretRotate, SecretRotated
from app.security.roles import ProjectRole
from app.services import secret_usage
from app.workers import wakeups

router = APIRouter(prefix=SECRETS_PATH, tags=["secrets"])


@router.get("", summary="List secrets (names and versions, never values)")
def list_secrets(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    project: ProjectQuery = None,
) -> Page[SecretRead]:
    with context.db.session(write=False) as session:
        readable = projects.list_filter(session, principal, name=project)
        return secret_usage.read_page(session, limit=limit, cursor=cursor, projects=readable)


@router.get(
    "/{secret_id}",
    summary="Get a secret's metadata and the services that use it",
    openapi_extra=versioned(sends_etag=True),
)
def get_secret(secret_id: str, response: Response, context: Ctx, principal: Viewer) -> SecretRead:
    with context.db.session(write=False) as session:
        check_row(session, principal, Secret, secret_id, ProjectRole.viewer, what="secret")
        read = secret_usage.read(session, secret_id=secret_id)
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.put(
    "/{secret_id}",
    summary="Rotate a secret's value (a project-admin): every service that uses it rolls",
    description="Each service referencing the secret gets a new revision with the same spec, "
    "rolled out by its update_config; the answer lists one `service.converge` operation each.",
    openapi_extra=versioned(checks_if_match=True, sends_etag=True),
    response_model=SecretRotated,
    responses=HELD,
)
def rotate_secret(
    secret_id: str,
    data: SecretRotate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectAdmin,
    gate: Gate,
) -> SecretRotated | Response:
    set_audit_resource(request, f"secrets/{secret_id}")
    with context.db.session() as session:
        check_row(session, principal, Secret, secret_id, ProjectRole.project_admin, what="secret")
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="secret.rotate",
            payload={},
            target_id=secret_id,
            value=data.value,
        )
        if held is not None:
            return held
        body = secret_usage.rotate(
            session,
            secret_id=secret_id,
            value=data.value,
            check_version=partial(check_if_match, request),
            cipher=context.cipher,
            settings=context.settings,
            created_by=principal.actor,
        )
    if body.operations:
        # After the commit: the reconciler is to see the revisions it is woken for.
        wakeups.notify(wakeups.SERVICES)
    response.headers["ETag"] = f'"{body.secret.version}"'
    return body


@router.delete(
    "/{secret_id}",
    status_code=204,
    summary="Delete a secret (a project-admin); 409 while a service uses it",
    openapi_extra=versioned(checks_if_match=True),
    responses=HELD,
)
def delete_secret(
    secret_id: str, request: Request, context: Ctx, principal: ProjectAdmin, gate: Gate
) -> Response:
    set_audit_resource(request, f"secrets/{secret_id}")
    with context.db.session() as session:
        check_row(session, principal, Secret, secret_id, ProjectRole.project_admin, what="secret")
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="secret.delete",
            payload={},
            target_id=secret_id,
        )
        if held is not None:
            return held
        secret_usage.delete(
            session, secret_id=secret_id, check_version=partial(check_if_match, request)
        )
    return Response(status_code=204)

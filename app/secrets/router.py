"""The store's own route. A secret's reads show the services that use it, and rotating or
deleting one involves them, so those routes live above, in app/services/secrets_router.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import Ctx, ProjectAdmin, set_audit_resource
from app.api.gate import HELD, Gate
from app.api.openapi import versioned
from app.api.paths import API_PREFIX
from app.projects import service as projects
from app.secrets import service
from app.secrets.schemas import SecretCreate, SecretRead
from app.security.roles import ProjectRole

SECRETS_PATH = f"{API_PREFIX}/secrets"

router = APIRouter(prefix=SECRETS_PATH, tags=["secrets"])


@router.post(
    "",
    status_code=201,
    summary="Store a secret (a project-admin of its project); the value is encrypted and never "
    "shown again",
    openapi_extra=versioned(sends_etag=True),
    response_model=SecretRead,
    responses=HELD,
)
def create_secret(
    data: SecretCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectAdmin,
    gate: Gate,
) -> SecretRead | Response:
    with context.db.session() as session:
        project = projects.target(
            session, principal, name=data.project, needed=ProjectRole.project_admin
        )
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="secret.create",
            payload=data.model_dump(mode="json", exclude={"value"}, exclude_unset=True),
            project_id=project.id,
            value=data.value,
        )
        if held is not None:
            return held
        secret = service.create(
            session,
            name=data.name,
            value=data.value,
            cipher=context.cipher,
            created_by=principal.actor,
            project_id=project.id,
        )
        read = service.to_read(session, secret, [])
        set_audit_resource(request, f"secrets/{read.id}")
    response.headers["Location"] = f"{SECRETS_PATH}/{read.id}"
    response.headers["ETag"] = f'"{read.version}"'
    return read

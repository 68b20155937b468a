"""The store's own route. A secret's reads show the services that use it, and rotating or
deleting one involves them, so those routes live above, in app/services/secrets_router.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import Admin, Ctx, set_audit_resource
from app.api.gate import HELD, Gate
from app.api.openapi import versioned
from app.api.paths import API_PREFIX
from app.secrets import service
from app.secrets.schemas import SecretCreate, SecretRead

SECRETS_PATH = f"{API_PREFIX}/secrets"

router = APIRouter(prefix=SECRETS_PATH, tags=["secrets"])


@router.post(
    "",
    status_code=201,
    summary="Store a secret (admin); the value is encrypted and never shown again",
    openapi_extra=versioned(sends_etag=True),
    response_model=SecretRead,
    responses=HELD,
)
def create_secret(
    data: SecretCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Admin,
    gate: Gate,
) -> SecretRead | Response:
    with context.db.session() as session:
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="secret.create",
            payload=data.model_dump(mode="json", exclude={"value"}, exclude_unset=True),
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
        )
        read = service.to_read(secret, [])
        set_audit_resource(request, f"secrets/{read.id}")
    response.headers["Location"] = f"{SECRETS_PATH}/{read.id}"
    response.headers["ETag"] = f'"{read.version}"'
    return read

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.api.deps import Admin, Ctx, Viewer, check_if_match, set_audit_resource
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.operations.schemas import OperationRead
from app.operations.service import to_read as operation_to_read
from app.secrets import service
from app.secrets.schemas import SecretCreate, SecretRead, SecretRotate
from app.services import service as services
from app.workers import wakeups

router = APIRouter(prefix=f"{API_PREFIX}/secrets", tags=["secrets"])


class SecretRotated(BaseModel):
    secret: SecretRead
    operations: list[OperationRead]


@router.post(
    "",
    status_code=201,
    summary="Store a secret (admin); the value is encrypted and never shown again",
)
def create_secret(
    data: SecretCreate, request: Request, response: Response, context: Ctx, principal: Admin
) -> SecretRead:
    with context.db.session() as session:
        secret = service.create(
            session,
            name=data.name,
            value=data.value,
            cipher=context.cipher,
            created_by=principal.actor,
        )
        read = service.to_read(secret, [])
    set_audit_resource(request, f"secrets/{read.id}")
    response.headers["Location"] = f"{API_PREFIX}/secrets/{read.id}"
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.get("", summary="List secrets (names and versions, never values)")
def list_secrets(
    context: Ctx, _: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> Page[SecretRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(session, limit=limit, cursor=cursor)
        using = service.used_by(session, [s.name for s in rows])
        return Page(
            items=[service.to_read(s, using[s.name]) for s in rows], next_cursor=next_cursor
        )


@router.get("/{secret_id}", summary="Get a secret's metadata and the services that use it")
def get_secret(secret_id: str, response: Response, context: Ctx, _: Viewer) -> SecretRead:
    with context.db.session(write=False) as session:
        secret = service.get(session, secret_id=secret_id)
        read = service.to_read(secret, service.used_by(session, [secret.name])[secret.name])
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.put(
    "/{secret_id}",
    summary="Rotate a secret's value (admin): every service that uses it rolls",
    description="Each service referencing the secret gets a new revision with the same spec, "
    "rolled out by its update_config; the answer lists one `service.converge` operation each.",
)
def rotate_secret(
    secret_id: str,
    data: SecretRotate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Admin,
) -> SecretRotated:
    set_audit_resource(request, f"secrets/{secret_id}")
    operations = []
    with context.db.session() as session:
        secret = service.get(session, secret_id=secret_id, for_update=True)
        check_if_match(request, secret.version)
        service.rotate(session, secret=secret, value=data.value, cipher=context.cipher)
        users = service.users_to_revise(session, secret.name)
        for svc in users:
            services.new_revision(
                session,
                service=svc,
                spec=services.current_spec(svc),
                settings=context.settings,
                created_by=principal.actor,
                force=True,
            )
            operations.append(
                services.queue_converge(
                    session, svc, settings=context.settings, created_by=principal.actor
                )
            )
        session.flush()
        body = SecretRotated(
            secret=service.to_read(secret, [u.name for u in users]),
            operations=[operation_to_read(o) for o in operations],
        )
    if operations:
        wakeups.notify(wakeups.SERVICES)
    response.headers["ETag"] = f'"{body.secret.version}"'
    return body


@router.delete(
    "/{secret_id}", status_code=204, summary="Delete a secret (admin); 409 while a service uses it"
)
def delete_secret(secret_id: str, request: Request, context: Ctx, _: Admin) -> Response:
    set_audit_resource(request, f"secrets/{secret_id}")
    with context.db.session() as session:
        secret = service.get(session, secret_id=secret_id, for_update=True)
        check_if_match(request, secret.version)
        service.delete(session, secret=secret)
    return Response(status_code=204)

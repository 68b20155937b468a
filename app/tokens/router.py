from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import (
    Admin,
    Ctx,
    Viewer,
    check_if_match,
    mark_secret_response,
    set_audit_resource,
)
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.tokens import service
from app.tokens.schemas import Me, TokenCreate, TokenCreated, TokenRead

router = APIRouter(prefix=API_PREFIX, tags=["identity"])


@router.post(
    "/tokens", status_code=201, summary="Create a token; the secret is in this response only"
)
def create_token(
    data: TokenCreate, request: Request, response: Response, context: Ctx, principal: Admin
) -> TokenCreated:
    with context.db.session() as session:
        token, secret = service.create(
            session,
            name=data.name,
            role=data.role,
            expires_at=data.expires_at,
            created_by=principal.actor,
        )
        read = TokenRead.model_validate(token)
        set_audit_resource(request, f"tokens/{read.id}")
    mark_secret_response(request)
    response.headers["Location"] = f"/api/v1/tokens/{read.id}"
    return TokenCreated(**read.model_dump(), token=secret)


@router.get("/tokens", summary="List tokens (never their secrets)")
def list_tokens(
    context: Ctx, _: Admin, limit: Limit = 50, cursor: Cursor = None
) -> Page[TokenRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(session, limit=limit, cursor=cursor)
        return Page(items=[TokenRead.model_validate(t) for t in rows], next_cursor=next_cursor)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    summary="Revoke a token",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_token(token_id: str, request: Request, context: Ctx, _: Admin) -> Response:
    set_audit_resource(request, f"tokens/{token_id}")
    with context.db.session() as session:
        token = service.get(session, token_id=token_id)
        check_if_match(request, token.version)
        service.delete(session, token=token)
        context.principals.pop(token.token_hash, None)
    return Response(status_code=204)


@router.get("/me", summary="Who the calling token is", operation_id="getMe")
def me(principal: Viewer) -> Me:
    return Me(token_id=principal.token_id, name=principal.name, role=principal.role)

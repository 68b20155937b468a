"""Request dependencies as `Annotated` aliases: the app context, the caller and their role."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.core.context import AppContext
from app.core.db import utcnow
from app.core.errors import Forbidden, PreconditionFailed, Unauthorized
from app.security.roles import Role
from app.security.tokens import hash_token
from app.tokens.models import ApiToken

# The dependencies are `async def` although they do not await (except to read a token not yet
# cached): FastAPI runs a plain `def` dependency in the thread pool, and a thread hop per
# dependency cost more than the whole check on the read path.


async def get_app_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Ctx = Annotated[AppContext, Depends(get_app_context)]

PRINCIPAL_TTL_SECONDS = 5.0

bearer = HTTPBearer(auto_error=False, description="A Berth API token: `Bearer berth_...`")


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.token_id})"


def _stored_token(context: AppContext, digest: str) -> tuple[str, str, str, datetime | None] | None:
    """The token's (id, name, role, expiry), or None when no token has that digest."""
    with context.db.session(write=False) as session:
        row = session.execute(
            select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.expires_at).where(
                ApiToken.token_hash == digest
            )
        ).first()
    return None if row is None else (row.id, row.name, row.role, row.expires_at)


async def authenticate(
    request: Request,
    context: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
    digest = hash_token(credentials.credentials)
    cached = context.principals.get(digest)
    if cached is None or time.monotonic() - cached[0] > PRINCIPAL_TTL_SECONDS:
        token = await run_in_threadpool(_stored_token, context, digest)
        if token is None:
            context.principals.pop(digest, None)
            raise Unauthorized("invalid or revoked token")
        cached = (time.monotonic(), *token)
        context.principals[digest] = cached
    _, token_id, name, role, expires_at = cached
    if expires_at is not None and expires_at <= utcnow():
        raise Unauthorized("token expired")
    principal = Principal(token_id=token_id, name=name, role=Role(role))
    request.state.principal = principal
    return principal


def still_valid(context: AppContext, token_id: str) -> bool:
    """Whether a token that authenticated a long-lived request is still neither revoked nor
    expired (event streams ask again while they run)."""
    with context.db.session(write=False) as session:
        row = session.execute(select(ApiToken.expires_at).where(ApiToken.id == token_id)).first()
    return row is not None and (row.expires_at is None or row.expires_at > utcnow())


def require(role: Role) -> object:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.role.allows(role):
            raise Forbidden(
                f"this action needs the {role.value} role; the token has {principal.role.value}"
            )
        return principal

    return Depends(check)


Viewer = Annotated[Principal, require(Role.viewer)]
Operator = Annotated[Principal, require(Role.operator)]
Admin = Annotated[Principal, require(Role.admin)]


def check_if_match(request: Request, version: int) -> None:
    """Honour If-Match: the write goes ahead only when the stored version is the one named."""
    header = request.headers.get("if-match")
    if header is None:
        return
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    if "*" in wanted or str(version) in wanted:
        return
    raise PreconditionFailed(
        f"resource is at version {version}; If-Match named {header}. Fetch it again and retry."
    )


def set_audit_resource(request: Request, resource: str) -> None:
    """Name the resource a mutating request touched, for its audit entry."""
    request.state.audit_resource = resource

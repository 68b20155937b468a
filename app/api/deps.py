"""Request dependencies as `Annotated` aliases: the app context, the caller and their role."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.auth_limit import FailedAuthLimiter
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.errors import BerthError, Forbidden, NotFound, PreconditionFailed, Unauthorized
from app.security.roles import (
    DEFAULT_PROJECT_ID,
    GLOBAL_ROLE_IN_DEFAULT,
    ProjectRole,
    Role,
)
from app.security.tokens import hash_token

# The dependencies are `async def` although they do not await (except to read a token not yet
# cached): FastAPI runs a plain `def` dependency in the thread pool, and a thread hop per
# dependency cost more than the whole check on the read path.


async def get_app_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Ctx = Annotated[AppContext, Depends(get_app_context)]

# How long a process trusts what it read about a token. Revocation in another process (which
# cannot clear this one's cache) is seen within this bound, on SQLite as on PostgreSQL; a long
# stream asks as often, so it ends within twice this after a revocation elsewhere.
PRINCIPAL_TTL_SECONDS = 0.5

bearer = HTTPBearer(auto_error=False, description="A Berth API token: `Bearer berth_...`")


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: Role
    # project id -> this token's role there, the default project's implied by a global viewer
    # or operator role included; a global admin has every role in every project regardless.
    projects: Mapping[str, ProjectRole] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.token_id})"

    def project_role(self, project_id: str) -> ProjectRole | None:
        """This principal's role in a project: None when it may not even read it."""
        if self.role is Role.admin:
            return ProjectRole.project_admin
        return self.projects.get(project_id)

    def require_role(self, project_id: str, needed: ProjectRole, *, missing: str) -> None:
        """Refuse unless this principal has `needed` in the project: 404 (`missing` its
        detail, so that an unreadable object reads as a missing one) when it cannot read the
        project, 403 when it can but with a weaker role."""
        role = self.project_role(project_id)
        if role is None:
            raise NotFound(missing)
        if not role.allows(needed):
            raise Forbidden(
                f"this action needs the {needed.value} role in the project; "
                f"the token has {role.value}"
            )

    def readable_projects(self) -> frozenset[str] | None:
        """The ids of the projects this principal may read; None: every project (an admin)."""
        if self.role is Role.admin:
            return None
        return frozenset(self.projects)

    def has_anywhere(self, needed: ProjectRole) -> bool:
        """Whether some project grants `needed` (the gate of a route before it knows which)."""
        return self.role is Role.admin or any(r.allows(needed) for r in self.projects.values())


@dataclass(frozen=True)
class StoredToken:
    token_id: str
    name: str
    role: str
    expires_at: datetime | None
    # (project id, role) grants from token_project_roles.
    projects: tuple[tuple[str, str], ...] = ()


def project_roles(role: Role, grants: tuple[tuple[str, str], ...]) -> dict[str, ProjectRole]:
    """A token's role per project: its grants, and in the default project at least what its
    global role implies (today's viewer and operator tokens keep working there unchanged)."""
    roles = {project_id: ProjectRole(granted) for project_id, granted in grants}
    implied = GLOBAL_ROLE_IN_DEFAULT.get(role)
    current = roles.get(DEFAULT_PROJECT_ID)
    if implied is not None and (current is None or not current.allows(implied)):
        roles[DEFAULT_PROJECT_ID] = implied
    return roles


class TokenStore(Protocol):
    """How authentication reads tokens. The token store sits above api, so create_app hands it
    in (`app.state.tokens`; the `app.tokens.service` module implements it) instead of api
    importing it."""

    def find_by_hash(self, session: Session, *, token_hash: str) -> StoredToken | None: ...


def _token_store(request: Request) -> TokenStore:
    store: TokenStore = request.app.state.tokens
    return store


def _stored_token(context: AppContext, store: TokenStore, digest: str) -> StoredToken | None:
    with context.db.session(write=False) as session:
        return store.find_by_hash(session, token_hash=digest)


class TooManyFailures(BerthError):
    status, kind = 429, "too-many-requests"


def _refused(
    request: Request, limiter: FailedAuthLimiter, address: str, detail: str, *, guess: bool = True
) -> Unauthorized:
    """Count a failed authentication. A burst of them is one audit entry, not one per request:
    only the first of its window is recorded."""
    if not limiter.failed(address, guess=guess):
        request.state.audit_skip = True
    return Unauthorized(detail)


async def authenticate(
    request: Request,
    context: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    limiter: FailedAuthLimiter = request.app.state.auth_failures
    address = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(address)
    if wait is not None:
        # Every token is refused, a right one too: a guess must not be confirmed meanwhile.
        request.state.audit_skip = True  # the burst's first failure is its entry
        raise TooManyFailures(
            f"too many failed authentications from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _refused(
            request,
            limiter,
            address,
            "missing bearer token: send `Authorization: Bearer <token>`",
            guess=False,
        )
    digest = hash_token(credentials.credentials)
    cached = await _cached_token(request, context, digest)
    if cached is None:
        raise _refused(request, limiter, address, "invalid or revoked token")
    _, token_id, name, role, expires_at, grants = cached
    if expires_at is not None and expires_at <= utcnow():
        raise _refused(request, limiter, address, "token expired")
    global_role = Role(role)
    principal = Principal(
        token_id=token_id,
        name=name,
        role=global_role,
        projects=project_roles(global_role, grants),
    )
    request.state.principal = principal
    request.state.token_digest = digest
    return principal


# What a process knows of a token: (read at, token id, name, role, expires at, its project
# grants as (project id, role) pairs).
_Cached = tuple[float, str, str, str, datetime | None, tuple[tuple[str, str], ...]]


async def _cached_token(request: Request, context: AppContext, digest: str) -> _Cached | None:
    """What this process knows of the token hashing to `digest`, read again once older than
    PRINCIPAL_TTL_SECONDS; None when it is revoked or never existed."""
    cached = context.principals.get(digest)
    if cached is None or time.monotonic() - cached[0] > PRINCIPAL_TTL_SECONDS:
        return await _read_once(request, context, digest)
    return cached


# The token reads in flight, per process context and token hash. The requests that find a
# token's entry stale together (a poller's burst, every PRINCIPAL_TTL_SECONDS) share one read
# instead of each queueing its own query in the thread pool.
_reads: weakref.WeakKeyDictionary[AppContext, dict[str, asyncio.Future[_Cached | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _read_once(request: Request, context: AppContext, digest: str) -> _Cached | None:
    reads = _reads.setdefault(context, {})
    pending = reads.get(digest)
    # A read started on another event loop (test clients run one per request) is not shared.
    if pending is None or pending.get_loop() is not asyncio.get_running_loop():
        pending = asyncio.ensure_future(_read(request, context, digest))
        reads[digest] = pending

        def forget(done: asyncio.Future[_Cached | None]) -> None:
            if reads.get(digest) is done:
                del reads[digest]

        pending.add_done_callback(forget)
    # Shielded: a caller that goes away does not cancel the read the others wait for.
    return await asyncio.shield(pending)


async def _read(request: Request, context: AppContext, digest: str) -> _Cached | None:
    token = await run_in_threadpool(_stored_token, context, _token_store(request), digest)
    if token is None:
        context.principals.pop(digest, None)
        return None
    cached = (
        time.monotonic(),
        token.token_id,
        token.name,
        token.role,
        token.expires_at,
        token.projects,
    )
    context.principals[digest] = cached
    return cached


def _live(token: StoredToken | None) -> bool:
    return token is not None and (token.expires_at is None or token.expires_at > utcnow())


async def _still_valid(request: Request) -> bool:
    """Whether the token that authenticated this long-lived request is still neither revoked
    nor expired. Through the cache: a thousand streams of one token cost one query per TTL."""
    cached = await _cached_token(request, request.app.state.context, request.state.token_digest)
    return cached is not None and (cached[4] is None or cached[4] > utcnow())


def bearer_is_live(context: AppContext, store: TokenStore, authorization: str) -> bool:
    """Whether an `Authorization` header names a token neither revoked nor expired, read from
    the database (never the cache): a stored response is replayed only to a live token."""
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return False
    return _live(_stored_token(context, store, hash_token(secret.strip())))


async def while_valid(
    request: Request, source: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """`source`'s chunks while the token that opened the stream stays valid: asked again every
    PRINCIPAL_TTL_SECONDS even while the source is silent (a quiet followed log must end too)."""
    checked = time.monotonic()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=PRINCIPAL_TTL_SECONDS)
            if time.monotonic() - checked >= PRINCIPAL_TTL_SECONDS:
                if not await _still_valid(request):
                    return
                checked = time.monotonic()
            if pending in done:
                try:
                    chunk = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield chunk
    finally:
        if pending is not None:
            # Wait for the cancelled read, so the source's own clean-up has run when we end.
            pending.cancel()
            await asyncio.wait({pending})


def require(role: Role) -> object:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.role.allows(role):
            raise Forbidden(
                f"this action needs the {role.value} role; the token has {principal.role.value}"
            )
        return principal

    return Depends(check)


def require_somewhere(role: ProjectRole) -> object:
    """The gate of a project-scoped write before it knows the project: `role` in at least one
    project. The route then checks the object's own project (app.projects.access)."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.has_anywhere(role):
            raise Forbidden(
                f"this action needs the {role.value} role in a project; the token has none"
            )
        return principal

    return Depends(check)


# Every role includes viewer: reading needs only a valid token, without a role check's own
# dependency to solve on every GET.
Viewer = Annotated[Principal, Depends(authenticate)]
Operator = Annotated[Principal, require(Role.operator)]
Admin = Annotated[Principal, require(Role.admin)]
# Project-scoped writes: the role in some project here, in the object's project in the route.
ProjectOperator = Annotated[Principal, require_somewhere(ProjectRole.operator)]
ProjectAdmin = Annotated[Principal, require_somewhere(ProjectRole.project_admin)]


# How a service function honours If-Match on the row it locked: `partial(check_if_match, request)`.
VersionCheck = Callable[[int], None]


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


def mark_secret_response(request: Request) -> None:
    """Say that this request's response carries a secret: it is never stored for an
    Idempotency-Key replay (a retry is answered 409 instead)."""
    request.state.secret_response = True


def set_audit_resource(request: Request, resource: str) -> None:
    """Name the resource a mutating request touched, for its audit entry."""
    request.state.audit_resource = resource

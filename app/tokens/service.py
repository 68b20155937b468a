from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.api.deps import StoredToken
from app.api.pagination import paginate
from app.core.db import utcnow
from app.core.errors import Invalid
from app.core.lookup import get_or_404
from app.security.roles import Role
from app.security.tokens import generate_token, hash_token
from app.tokens.models import ApiToken, TokenProjectRole

BOOTSTRAP_NAME = "bootstrap"


def create(
    session: Session,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token; returns the row and the secret, which is never stored or shown again."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= utcnow():
            raise Invalid(
                "expires_at is in the past",
                errors=[{"loc": "body.expires_at", "msg": "in the past"}],
            )
    secret = generate_token()
    token = ApiToken(
        name=name,
        role=role.value,
        token_hash=hash_token(secret),
        expires_at=expires_at,
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(token)
    session.flush()
    return token, secret


def ensure_bootstrap(session: Session, *, secret: str) -> None:
    """Accept BERTH_BOOTSTRAP_TOKEN as an admin token (idempotent across restarts)."""
    digest = hash_token(secret)
    if session.execute(select(ApiToken.id).where(ApiToken.token_hash == digest)).first():
        return
    session.add(
        ApiToken(name=BOOTSTRAP_NAME, role=Role.admin.value, token_hash=digest, created_at=utcnow())
    )


def _stored(session: Session, where: ColumnElement[bool]) -> StoredToken | None:
    row = session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.expires_at).where(where)
    ).first()
    if row is None:
        return None
    grants = session.execute(
        select(TokenProjectRole.project_id, TokenProjectRole.role).where(
            TokenProjectRole.token_id == row.id
        )
    ).all()
    return StoredToken(
        row.id, row.name, row.role, row.expires_at, tuple((g.project_id, g.role) for g in grants)
    )


def find_by_hash(session: Session, *, token_hash: str) -> StoredToken | None:
    """The token whose secret hashes to `token_hash`, as authentication reads it."""
    return _stored(session, ApiToken.token_hash == token_hash)


def get(session: Session, *, token_id: str) -> ApiToken:
    return get_or_404(session, ApiToken, token_id, what="token")


def get_all(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[Sequence[ApiToken], str | None]:
    return paginate(session, select(ApiToken), ApiToken.id, limit=limit, cursor=cursor)


def delete(session: Session, *, token: ApiToken) -> None:
    session.delete(token)

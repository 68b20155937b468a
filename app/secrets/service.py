"""The secret store: secrets stored encrypted, resolved only by the worker that starts a
container. Which services use a secret, and rotating it through them, sit above in
app/services/secret_usage.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import paginate
from app.core.db import utcnow
from app.core.errors import Conflict, Invalid
from app.core.lookup import get_or_404
from app.projects.access import narrow
from app.secrets.models import Secret
from app.secrets.schemas import SecretRead
from app.security.crypto import Cipher
from app.security.roles import DEFAULT_PROJECT_ID


def to_read(secret: Secret, used_by: list[str]) -> SecretRead:
    return SecretRead(
        id=secret.id,
        name=secret.name,
        project=secret.project,
        version=secret.version,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
        used_by=used_by,
    )


def get(session: Session, *, secret_id: str, for_update: bool = False) -> Secret:
    return get_or_404(session, Secret, secret_id, what="secret", for_update=for_update)


def get_all(
    session: Session, *, limit: int, cursor: str | None, projects: frozenset[str] | None = None
) -> tuple[Sequence[Secret], str | None]:
    """A page of the secrets of `projects` (None: every project)."""
    statement = narrow(select(Secret), Secret.project_id, projects)
    return paginate(session, statement, Secret.id, limit=limit, cursor=cursor)


def create(
    session: Session,
    *,
    name: str,
    value: str,
    cipher: Cipher,
    created_by: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Secret:
    if session.execute(select(Secret.id).where(Secret.name == name)).scalar_one_or_none():
        raise Conflict(
            f"a secret named {name!r} already exists",
            errors=[{"loc": "body.name", "msg": "taken"}],
        )
    now = utcnow()
    secret = Secret(
        name=name,
        value_encrypted=cipher.encrypt(value),
        project_id=project_id,
        created_at=now,
        updated_at=now,
        created_by=created_by,
        version=1,
    )
    session.add(secret)
    session.flush()
    return secret


def rotate(session: Session, *, secret: Secret, value: str, cipher: Cipher) -> None:
    secret.value_encrypted = cipher.encrypt(value)
    secret.version += 1
    secret.updated_at = utcnow()


def delete(session: Session, *, secret: Secret) -> None:
    """Only the row: whether a service still uses it is for services to check first
    (app/services/secret_usage.py)."""
    session.delete(secret)


def check_exist(
    session: Session, names: Iterable[tuple[str, str]], *, project_id: str = DEFAULT_PROJECT_ID
) -> None:
    """422 naming every (location, secret name) that does not exist in the project: another
    project's secret is unknown here, word for word as a missing one."""
    wanted = list(names)
    if not wanted:
        return
    known = set(
        session.execute(
            select(Secret.name).where(
                Secret.name.in_({name for _, name in wanted}), Secret.project_id == project_id
            )
        ).scalars()
    )
    errors = [
        {"loc": loc, "msg": f"no secret named {name!r} (create it with POST /api/v1/secrets)"}
        for loc, name in wanted
        if name not in known
    ]
    if errors:
        raise Invalid.listing("unknown secret", errors)


def values(
    session: Session, cipher: Cipher, names: Iterable[str], *, project_id: str
) -> dict[str, str]:
    """Decrypted values by name of the project's secrets, for the worker that delivers them
    to one of its containers; missing names (and other projects' secrets) are absent."""
    rows = session.execute(
        select(Secret.name, Secret.value_encrypted).where(
            Secret.name.in_(set(names)), Secret.project_id == project_id
        )
    ).all()
    return {name: cipher.decrypt(encrypted) for name, encrypted in rows}

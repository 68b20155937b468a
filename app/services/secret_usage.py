"""What services make of secrets: which services use one (`used_by`), rotating one (every
service that uses it rolls), and deleting one only while no service uses it. The store itself
(app/secrets) sits below services and knows nothing of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import VersionCheck
from app.api.pagination import Page
from app.core.config import Settings
from app.core.errors import Conflict
from app.operations.service import to_read as operation_to_read
from app.secrets import service as secrets
from app.secrets.schemas import SecretRead, SecretRotated
from app.security.crypto import Cipher
from app.services import service as services
from app.services.models import Service


def _references(spec: dict[str, Any]) -> set[str]:
    return {str(ref.get("name")) for ref in spec.get("secrets", [])}


def used_by(session: Session, names: Iterable[str]) -> dict[str, list[str]]:
    """For each secret name, the services (by name) whose current spec references it; one
    read of the services for a whole page of secrets."""
    using: dict[str, list[str]] = {name: [] for name in names}
    rows = session.execute(
        select(Service.name, Service.spec).where(Service.removing.is_(False)).order_by(Service.name)
    )
    for row in rows:
        for name in _references(row.spec) & using.keys():
            using[name].append(row.name)
    return using


def users_to_revise(session: Session, name: str) -> list[Service]:
    """The services that reference the secret `name`, locked (in id order, as every
    multi-service writer locks) and read again, so a revision made meanwhile by another writer
    is seen, not overwritten."""
    candidates = [
        row.id
        for row in session.execute(
            select(Service.id, Service.spec).where(Service.removing.is_(False))
        )
        if name in _references(row.spec)
    ]
    if not candidates:
        return []
    locked = session.execute(
        select(Service)
        .where(Service.id.in_(candidates))
        .order_by(Service.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars()
    using = [s for s in locked if not s.removing and name in _references(s.spec)]
    return sorted(using, key=lambda s: s.name)


def read(session: Session, *, secret_id: str) -> SecretRead:
    secret = secrets.get(session, secret_id=secret_id)
    return secrets.to_read(secret, used_by(session, [secret.name])[secret.name])


def read_page(
    session: Session, *, limit: int, cursor: str | None, projects: frozenset[str] | None = None
) -> Page[SecretRead]:
    rows, next_cursor = secrets.get_all(session, limit=limit, cursor=cursor, projects=projects)
    using = used_by(session, [s.name for s in rows])
    return Page(items=[secrets.to_read(s, using[s.name]) for s in rows], next_cursor=next_cursor)


def rotate(
    session: Session,
    *,
    secret_id: str,
    value: str,
    check_version: VersionCheck,
    cipher: Cipher,
    settings: Settings,
    created_by: str,
) -> SecretRotated:
    """A new value, and a new revision with the same spec for every service that uses the
    secret (rolled out by its update_config), each with its `service.converge`."""
    secret = secrets.get(session, secret_id=secret_id, for_update=True)
    check_version(secret.version)
    secrets.rotate(session, secret=secret, value=value, cipher=cipher)
    users = users_to_revise(session, secret.name)
    operations = []
    for service in users:
        services.new_revision(
            session,
            service=service,
            spec=services.current_spec(service),
            settings=settings,
            created_by=created_by,
            force=True,
        )
        operations.append(
            services.queue_converge(session, service, settings=settings, created_by=created_by)
        )
    session.flush()
    return SecretRotated(
        secret=secrets.to_read(secret, [u.name for u in users]),
        operations=[operation_to_read(o) for o in operations],
    )


def delete(session: Session, *, secret_id: str, check_version: VersionCheck) -> None:
    secret = secrets.get(session, secret_id=secret_id, for_update=True)
    check_version(secret.version)
    using = used_by(session, [secret.name])[secret.name]
    if using:
        raise Conflict(
            f"secret {secret.name!r} is used by service(s) {', '.join(using)}; "
            "remove it from their specs first"
        )
    secrets.delete(session, secret=secret)

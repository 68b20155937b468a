"""Registries and the one way every pull and push finds its credentials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import paginate
from app.core.db import utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.core.lookup import get_or_404
from app.projects.access import narrow
from app.registries.models import Registry
from app.registries.schemas import (
    RegistryCreate,
    RegistryRead,
    RegistryUpdate,
    registry_host,
    same_registry,
)
from app.security.crypto import Cipher
from app.security.roles import DEFAULT_PROJECT_ID


class ForeignRegistry(Invalid):
    """A registry's credentials asked for an image on another registry's host."""


@dataclass(frozen=True)
class Credentials:
    registry_id: str
    server: str
    username: str
    password: str

    def auth_config(self) -> dict[str, str]:
        """The docker SDK's auth_config. Never log it."""
        return {"username": self.username, "password": self.password, "serveraddress": self.server}

    def __repr__(self) -> str:  # keeps the password out of tracebacks and logs
        return f"Credentials(registry_id={self.registry_id!r}, server={self.server!r})"


def to_read(registry: Registry) -> RegistryRead:
    return RegistryRead(
        id=registry.id,
        name=registry.name,
        project=registry.project,
        url=registry.url,
        host=registry.host,
        username=registry.username,
        password_set=registry.password_encrypted is not None,
        created_at=registry.created_at,
        updated_at=registry.updated_at,
        version=registry.version,
    )


def _ensure_name_free(session: Session, name: str, *, except_id: str | None = None) -> None:
    clash = session.execute(select(Registry.id).where(Registry.name == name)).scalar_one_or_none()
    if clash is not None and clash != except_id:
        raise Conflict(f"a registry named {name!r} already exists ({clash})")


def create(
    session: Session,
    *,
    data: RegistryCreate,
    cipher: Cipher,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Registry:
    _ensure_name_free(session, data.name)
    now = utcnow()
    registry = Registry(
        name=data.name,
        project_id=project_id,
        url=data.url,
        host=registry_host(data.url),
        username=data.username,
        password_encrypted=(
            cipher.encrypt(data.password.get_secret_value()) if data.password else None
        ),
        created_at=now,
        updated_at=now,
    )
    session.add(registry)
    session.flush()
    return registry


def get(session: Session, *, registry_id: str, for_update: bool = False) -> Registry:
    return get_or_404(session, Registry, registry_id, what="registry", for_update=for_update)


def get_all(
    session: Session, *, limit: int, cursor: str | None, projects: frozenset[str] | None = None
) -> tuple[Sequence[Registry], str | None]:
    """A page of the registries of `projects` (None: every project)."""
    statement = narrow(select(Registry), Registry.project_id, projects)
    return paginate(session, statement, Registry.id, limit=limit, cursor=cursor)


def update(session: Session, *, registry: Registry, data: RegistryUpdate, cipher: Cipher) -> None:
    if data.name is not None:
        _ensure_name_free(session, data.name, except_id=registry.id)
        registry.name = data.name
    if data.url is not None:
        registry.url = data.url
        registry.host = registry_host(data.url)
    if data.username is not None:
        registry.username = data.username
    if data.password is not None:
        registry.password_encrypted = cipher.encrypt(data.password.get_secret_value())
    registry.updated_at = utcnow()
    registry.version += 1


def delete(session: Session, *, registry: Registry) -> None:
    session.delete(registry)


def check_host(registry: Registry, host: str, *, field: str) -> None:
    """A registry's credentials go only to its own host: any other host (where an image
    reference points) would receive its username and password."""
    if not same_registry(registry.host, host):
        message = (
            f"registry {registry.name!r} holds credentials for {registry.host}, "
            f"not for {host}: credentials go only to their own registry"
        )
        raise ForeignRegistry(message, errors=[{"loc": field, "msg": message}])


def for_image(
    session: Session,
    *,
    registry_id: str,
    host: str,
    field: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Registry:
    """The registry a request names for an image on `host`; ForeignRegistry if it is another.
    Credentials serve only their own project: another project's registry is unknown here."""
    registry = get(session, registry_id=registry_id)
    if registry.project_id != project_id:
        raise NotFound(f"no registry {registry_id!r}")
    check_host(registry, host, field=field)
    return registry


def credentials(
    session: Session,
    cipher: Cipher,
    *,
    registry_id: str | None,
    host: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Credentials | None:
    """Credentials for a pull or push of an image on `host` by work of `project_id`: the
    registry named (checked again here, for work queued before a registry's URL changed),
    else the project's one whose host matches."""
    registry: Registry | None
    if registry_id is not None:
        registry = for_image(
            session, registry_id=registry_id, host=host, field="registry_id", project_id=project_id
        )
    else:
        registry = session.execute(
            select(Registry)
            .where(Registry.host == host.lower(), Registry.project_id == project_id)
            .order_by(Registry.id)
            .limit(1)
        ).scalar_one_or_none()
    if registry is None or registry.username is None or registry.password_encrypted is None:
        return None
    return Credentials(
        registry_id=registry.id,
        server=registry.host,
        username=registry.username,
        password=cipher.decrypt(registry.password_encrypted),
    )

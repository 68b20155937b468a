"""Projects and their members: create, change, delete; find one by name; the project-scoped
reads every owned resource's routes make (app/projects/access.py holds the role checks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.deps import Principal
from app.api.pagination import paginate
from app.core.db import utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.projects import quotas
from app.projects.access import require_in_project
from app.projects.models import HostProject, Project
from app.projects.schemas import (
    MemberRead,
    ProjectCreate,
    ProjectPatch,
    ProjectRead,
    Quotas,
    Usage,
)
from app.projects.windows import Window
from app.security.roles import DEFAULT_PROJECT_ID, DEFAULT_PROJECT_NAME, ProjectRole
from app.tokens.models import ApiToken, TokenProjectRole

# id -> name. Names never change and ids are never reused, so a process may keep them: the
# name every response shows costs no query after the first.
_names: dict[str, str] = {DEFAULT_PROJECT_ID: DEFAULT_PROJECT_NAME}


def names(session: Session, project_ids: Iterable[str]) -> dict[str, str]:
    """id -> name of these projects, from this process's memory once read: a list of rows
    shows its projects' names without a lookup per row."""
    wanted = set(project_ids)
    missing = sorted(wanted - _names.keys())
    if missing:
        found = select(Project.id, Project.name).where(Project.id.in_(missing))
        _names.update((row.id, row.name) for row in session.execute(found))
    return {project_id: _names[project_id] for project_id in wanted if project_id in _names}


def get_by_name(session: Session, *, name: str, for_update: bool = False) -> Project:
    statement = select(Project).where(Project.name == name)
    if for_update:
        statement = statement.with_for_update()
    project = session.execute(statement).scalar_one_or_none()
    if project is None:
        raise NotFound(f"no project {name!r}")
    return project


def readable_by_name(
    session: Session, principal: Principal, *, name: str, for_update: bool = False
) -> Project:
    """The project, if the principal may read it; one it may not is missing to it (404)."""
    project = get_by_name(session, name=name, for_update=for_update)
    if principal.project_role(project.id) is None:
        raise NotFound(f"no project {name!r}")
    return project


def administered(
    session: Session, principal: Principal, *, name: str, for_update: bool = True
) -> Project:
    """The project, locked for a change unless `for_update` is False (a read: a read-only
    transaction on PostgreSQL refuses the lock), if the principal administers it (its
    members, its secrets): 404 when it may not read it, 403 when it reads it with a weaker
    role."""
    project = readable_by_name(session, principal, name=name, for_update=for_update)
    require_in_project(principal, project.id, ProjectRole.project_admin)
    return project


def resolve(session: Session, *, name: str | None, loc: str = "body.project") -> Project:
    """The project a create names (None: the default one); an unknown name is a 422."""
    if name is None:
        project = session.get(Project, DEFAULT_PROJECT_ID)
        assert project is not None, "the default project is made by migration 0013"
        return project
    try:
        return get_by_name(session, name=name)
    except NotFound as exc:
        raise Invalid(exc.detail, errors=[{"loc": loc, "msg": exc.detail}]) from exc


def target(
    session: Session, principal: Principal, *, name: str | None, needed: ProjectRole
) -> Project:
    """The project a create puts its object in, once the principal is known to hold `needed`
    there: 422 when the project is unknown or unreadable to it (the same answer), 403 when its
    role there is too weak."""
    project = resolve(session, name=name)
    role = principal.project_role(project.id)
    if role is None:
        raise Invalid(
            f"no project {project.name!r}",
            errors=[{"loc": "body.project", "msg": f"no project {project.name!r}"}],
        )
    require_in_project(principal, project.id, needed)
    return project


def list_filter(
    session: Session, principal: Principal, *, name: str | None
) -> frozenset[str] | None:
    """The project ids a list keeps: those the principal may read, narrowed to the one named
    by `?project=` (404 when it may not read that one); None keeps every project."""
    if name is not None:
        return frozenset({readable_by_name(session, principal, name=name).id})
    return principal.readable_projects()


def to_read(session: Session, project: Project) -> ProjectRead:
    used = quotas.usage(session, project.id)
    return ProjectRead(
        id=project.id,
        name=project.name,
        protected=project.protected,
        windows=[Window.model_validate(window) for window in project.windows or []],
        outside_window=project.outside_window,
        quotas=Quotas.model_validate(project.quotas or {}),
        relaxations=list(project.relaxations or []),
        usage=Usage(**asdict(used)),
        hosts=list(
            session.execute(
                select(HostProject.host_id)
                .where(HostProject.project_id == project.id)
                .order_by(HostProject.host_id)
            ).scalars()
        ),
        created_at=project.created_at,
        updated_at=project.updated_at,
        created_by=project.created_by,
        version=project.version,
    )


def get_all(
    session: Session, principal: Principal, *, limit: int, cursor: str | None
) -> tuple[Sequence[Project], str | None]:
    statement = select(Project)
    readable = principal.readable_projects()
    if readable is not None:
        statement = statement.where(Project.id.in_(sorted(readable)))
    return paginate(session, statement, Project.id, limit=limit, cursor=cursor)


def _stored_quotas(value: Quotas) -> dict[str, Any]:
    return value.model_dump(exclude_none=True)


def create(session: Session, *, data: ProjectCreate, created_by: str) -> Project:
    if session.execute(select(Project.id).where(Project.name == data.name)).first():
        raise Conflict(
            f"a project named {data.name!r} already exists",
            errors=[{"loc": "body.name", "msg": "taken"}],
        )
    now = utcnow()
    project = Project(
        name=data.name,
        protected=data.protected,
        quotas=_stored_quotas(data.quotas),
        relaxations=sorted(set(data.relaxations)),
        created_at=now,
        updated_at=now,
        created_by=created_by,
        version=1,
    )
    session.add(project)
    session.flush()
    return project


def update(session: Session, *, project: Project, data: ProjectPatch) -> None:
    if data.protected is not None:
        project.protected = data.protected
    if data.windows is not None:
        project.windows = [window.model_dump(mode="json") for window in data.windows]
    if data.outside_window is not None:
        project.outside_window = data.outside_window
    if data.quotas is not None:
        project.quotas = _stored_quotas(data.quotas)
    if data.relaxations is not None:
        project.relaxations = sorted(set(data.relaxations))
    project.version += 1
    project.updated_at = utcnow()


def delete(session: Session, *, project: Project) -> None:
    """Delete an empty project; its members' grants, host dedications and operations go with
    it. The default project is never deleted."""
    if project.id == DEFAULT_PROJECT_ID:
        raise Conflict("the default project cannot be deleted")
    try:
        with session.begin_nested():
            session.delete(project)
    except IntegrityError as exc:
        # The owned tables' foreign keys know what still belongs to it, whoever added it last.
        raise Conflict(
            f"project {project.name!r} still holds services, stacks, containers, secrets or "
            "registry credentials: delete them first"
        ) from exc


def dedicate(session: Session, *, project: Project, host_id: str) -> None:
    """Dedicate the host to the project (idempotent); 404 when the host does not exist."""
    if session.get(HostProject, (host_id, project.id)) is not None:
        return
    try:
        with session.begin_nested():
            session.add(HostProject(host_id=host_id, project_id=project.id))
    except IntegrityError as exc:  # hosts sit above projects: their foreign key answers
        raise NotFound(f"no host {host_id!r}") from exc


def release(session: Session, *, project: Project, host_id: str) -> None:
    """End the host's dedication to the project; with none left the host is shared."""
    dedication = session.get(HostProject, (host_id, project.id))
    if dedication is None:
        raise NotFound(f"host {host_id!r} is not dedicated to project {project.name!r}")
    session.delete(dedication)


def members(session: Session, *, project: Project) -> list[MemberRead]:
    rows = session.execute(
        select(TokenProjectRole, ApiToken.name)
        .join(ApiToken, ApiToken.id == TokenProjectRole.token_id)
        .where(TokenProjectRole.project_id == project.id)
        .order_by(TokenProjectRole.token_id)
    ).all()
    return [
        MemberRead(
            token_id=grant.token_id,
            token_name=token_name,
            role=ProjectRole(grant.role),
            created_at=grant.created_at,
            created_by=grant.created_by,
        )
        for grant, token_name in rows
    ]


def grant(
    session: Session, *, project: Project, token_id: str, role: ProjectRole, created_by: str
) -> tuple[MemberRead, str]:
    """Give a token a role in the project (replacing the one it had there). Returns the member
    and the token's hash, whose cached principal the caller forgets."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id!r}")
    row = session.get(TokenProjectRole, (token_id, project.id))
    if row is None:
        row = TokenProjectRole(
            token_id=token_id, project_id=project.id, created_at=utcnow(), created_by=created_by
        )
        session.add(row)
    row.role = role.value
    session.flush()
    member = MemberRead(
        token_id=token_id,
        token_name=token.name,
        role=role,
        created_at=row.created_at,
        created_by=row.created_by,
    )
    return member, token.token_hash


def revoke(session: Session, *, project: Project, token_id: str) -> str:
    """Take a token's role in the project away; returns its hash (see grant)."""
    row = session.get(TokenProjectRole, (token_id, project.id))
    token = session.get(ApiToken, token_id)
    if row is None or token is None:
        raise NotFound(f"token {token_id!r} has no role in project {project.name!r}")
    session.delete(row)
    return token.token_hash

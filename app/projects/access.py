"""Who may do what in which project: the checks every project-scoped route makes.

A principal reads a project when it has any role there; an object in a project it cannot read
is answered 404, exactly as a missing one, so that names and ids of other projects' objects do
not leak. Inside a readable project, too weak a role is a 403 that names the role needed.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import ColumnElement, Select, true

from app.api.deps import Principal
from app.core.errors import Forbidden, NotFound
from app.security.roles import ProjectRole

T = TypeVar("T", bound=tuple[object, ...])


def project_role(principal: Principal, project_id: str) -> ProjectRole | None:
    """The principal's role in the project; None when it may not read it."""
    return principal.project_role(project_id)


def readable_project_ids(principal: Principal) -> frozenset[str] | None:
    """The projects the principal may read; None means every one (a global admin)."""
    return principal.readable_projects()


def can(principal: Principal, project_id: str, needed: ProjectRole) -> bool:
    role = principal.project_role(project_id)
    return role is not None and role.allows(needed)


def require_in_project(
    principal: Principal, project_id: str, needed: ProjectRole, *, what: str = "resource"
) -> None:
    """Refuse unless the principal has `needed` in the project: 404 (`what` not found) when it
    cannot read the project at all, 403 when it can but with a weaker role."""
    role = principal.project_role(project_id)
    if role is None:
        raise NotFound(f"{what} not found")
    if not role.allows(needed):
        raise Forbidden(
            f"this action needs the {needed.value} role in the object's project; "
            f"the token has {role.value}"
        )


def readable(principal: Principal, column: ColumnElement[str]) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows of projects the principal may read."""
    ids = principal.readable_projects()
    return true() if ids is None else column.in_(sorted(ids))


def scoped(query: Select[T], principal: Principal, column: ColumnElement[str]) -> Select[T]:
    """`query` narrowed to the projects the principal may read (a list route's filter)."""
    ids = principal.readable_projects()
    return query if ids is None else query.where(column.in_(sorted(ids)))

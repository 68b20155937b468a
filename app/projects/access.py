"""Who may do what in which project: the checks every project-scoped route makes.

A principal reads a project when it has any role there; an object in a project it cannot read
is answered 404, exactly as a missing one, so that names and ids of other projects' objects do
not leak. Inside a readable project, too weak a role is a 403 that names the role needed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.api.deps import Principal
from app.security.roles import ProjectRole

S = TypeVar("S", bound=Select[Any])


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
    principal: Principal, project_id: str, needed: ProjectRole, *, missing: str = "no such project"
) -> None:
    """Refuse unless the principal has `needed` in the project: 404 (`missing` its detail) when
    it cannot read the project at all, 403 when it can but with a weaker role."""
    principal.require_role(project_id, needed, missing=missing)


def narrow(statement: S, column: Any, projects: frozenset[str] | None) -> S:
    """`statement` keeping the rows whose `column` names one of `projects` (None: all), the
    filter of every list route (`projects` from `readable_project_ids` or `?project=`)."""
    return statement if projects is None else statement.where(column.in_(sorted(projects)))


def check_row(
    session: Session,
    principal: Principal,
    model: type[Any],
    row_id: str,
    needed: ProjectRole,
    *,
    what: str,
) -> None:
    """Before a route reads or changes the `model` row `row_id`: the principal needs `needed`
    in the row's project. A row in a project it cannot read answers 404 word for word as a
    missing one; a missing one is left to the route (which answers that 404 itself)."""
    if principal.readable_projects() is None:
        return  # an admin has every role everywhere: spare the query
    project_id = session.execute(
        select(model.project_id).where(model.id == row_id)
    ).scalar_one_or_none()
    if project_id is not None:
        require_in_project(principal, project_id, needed, missing=f"no {what} {row_id!r}")

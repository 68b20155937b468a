"""How a token's roles per project resolve: pure logic, no engine."""

from __future__ import annotations

import pytest

from app.api.deps import Principal, project_roles
from app.core.errors import Forbidden, NotFound
from app.projects.access import readable_project_ids, require_in_project
from app.security.roles import DEFAULT_PROJECT_ID, ProjectRole, Role

OTHER = "B" * 26


def principal(role: Role, *grants: tuple[str, str]) -> Principal:
    return Principal("t", "n", role, project_roles(role, tuple(grants)))


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.viewer, ProjectRole.viewer), (Role.operator, ProjectRole.operator)],
)
def test_a_global_role_is_that_role_in_the_default_project_only(
    role: Role, expected: ProjectRole
) -> None:
    p = principal(role)
    assert p.project_role(DEFAULT_PROJECT_ID) is expected
    assert p.project_role(OTHER) is None
    assert readable_project_ids(p) == frozenset({DEFAULT_PROJECT_ID})


def test_a_grant_adds_a_project_and_never_lowers_the_default() -> None:
    p = principal(Role.operator, (OTHER, "viewer"), (DEFAULT_PROJECT_ID, "viewer"))
    assert p.project_role(OTHER) is ProjectRole.viewer
    assert p.project_role(DEFAULT_PROJECT_ID) is ProjectRole.operator
    raised = principal(Role.viewer, (DEFAULT_PROJECT_ID, "project-admin"))
    assert raised.project_role(DEFAULT_PROJECT_ID) is ProjectRole.project_admin


def test_an_admin_has_every_role_everywhere() -> None:
    p = principal(Role.admin)
    assert p.project_role(OTHER) is ProjectRole.project_admin
    assert readable_project_ids(p) is None
    require_in_project(p, OTHER, ProjectRole.project_admin)


def test_unreadable_is_404_and_too_weak_is_403() -> None:
    p = principal(Role.viewer, (OTHER, "operator"))
    require_in_project(p, OTHER, ProjectRole.operator)
    with pytest.raises(NotFound):
        require_in_project(p, "C" * 26, ProjectRole.viewer, missing="no service 'x'")
    with pytest.raises(Forbidden):
        require_in_project(p, OTHER, ProjectRole.approver)
    with pytest.raises(Forbidden):
        require_in_project(p, DEFAULT_PROJECT_ID, ProjectRole.operator)


def test_roles_rank_viewer_operator_approver_project_admin() -> None:
    ranks = [r.rank for r in ProjectRole]
    assert ranks == sorted(ranks)
    assert ProjectRole.approver.allows(ProjectRole.operator)
    assert not ProjectRole.operator.allows(ProjectRole.approver)

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """admin: everything; operator: change workloads; viewer: read only."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.viewer: 0, Role.operator: 1, Role.admin: 2}


class ProjectRole(StrEnum):
    """A token's role inside one project. Each includes the ones before it: an approver may
    also operate, a project-admin may also approve and manages the project's members."""

    viewer = "viewer"
    operator = "operator"
    approver = "approver"
    project_admin = "project-admin"

    @property
    def rank(self) -> int:
        return _PROJECT_RANK[self]

    def allows(self, needed: ProjectRole) -> bool:
        return self.rank >= needed.rank


_PROJECT_RANK = {
    ProjectRole.viewer: 0,
    ProjectRole.operator: 1,
    ProjectRole.approver: 2,
    ProjectRole.project_admin: 3,
}

# The project every object belonged to before projects existed, and every object still belongs
# to when its body names none. Its id is fixed so that the migration can backfill it and a
# column default can name it. A token's global viewer or operator role is its role here.
DEFAULT_PROJECT_ID = "0" * 26
DEFAULT_PROJECT_NAME = "default"

# What a global role means in the default project (a global admin has every role everywhere).
GLOBAL_ROLE_IN_DEFAULT = {Role.viewer: ProjectRole.viewer, Role.operator: ProjectRole.operator}

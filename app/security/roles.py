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

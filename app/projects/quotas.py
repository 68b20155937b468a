"""Quotas: what a project's workloads take, and the 422 when a change would take more.

The domains that own workloads say what theirs take by registering a usage source beside their
model (as they register their events with `track`): containers count standalone containers,
services their desired replicas. So this module needs neither of them, and any process that can
write a workload also counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.projects.models import Project


@dataclass
class Usage:
    containers: int = 0
    replicas: int = 0
    cpus: float = 0.0
    memory_bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.containers + other.containers,
            self.replicas + other.replicas,
            self.cpus + other.cpus,
            self.memory_bytes + other.memory_bytes,
        )


class QuotaExceeded(Invalid):
    kind = "quota-exceeded"


# (session, project id, services whose own usage to leave out) -> what the source's rows take.
UsageSource = Callable[[Session, str, frozenset[str]], Usage]
_sources: list[UsageSource] = []


def count_usage_with(source: UsageSource) -> None:
    """Count what `source` says toward every project's quotas (each workload domain calls it
    beside its model)."""
    if source not in _sources:
        _sources.append(source)


def set_aside(resources: dict[str, Any]) -> tuple[float, int]:
    """The (CPUs, memory bytes) a container takes: its reservations where it has them, else its
    limits (what placement sets aside on its host, too)."""
    amounts = resources.get("reservations") or resources
    return float(amounts.get("cpus") or 0), int(amounts.get("memory_bytes") or 0)


def replicas_usage(count: int, resources: dict[str, Any]) -> Usage:
    """What `count` replicas with these resources take."""
    cpus, memory = set_aside(resources)
    return Usage(containers=count, replicas=count, cpus=cpus * count, memory_bytes=memory * count)


def usage(
    session: Session, project_id: str, *, except_services: frozenset[str] = frozenset()
) -> Usage:
    total = Usage()
    for source in _sources:
        total = total + source(session, project_id, except_services)
    return total


_QUOTAS = ("containers", "replicas", "cpus", "memory_bytes")


def check(
    session: Session,
    project: Project,
    *,
    adding: Usage,
    except_services: frozenset[str] = frozenset(),
    loc: str = "body",
) -> None:
    """Refuse (422, naming each quota with its limit, the use and what was asked) a change
    that takes the project past a quota. `except_services` are the services being changed:
    their current usage is replaced by `adding` (then "in use" leaves it out), not added to."""
    limits = {k: v for k, v in (project.quotas or {}).items() if v is not None}
    if not limits:
        return
    used = usage(session, project.id, except_services=except_services)
    # A change that takes no more than before goes through even over a lowered quota.
    before = usage(session, project.id) if except_services else used
    errors = []
    for name in _QUOTAS:
        limit = limits.get(name)
        asked = getattr(adding, name)
        if limit is None or not asked:
            continue
        current = getattr(used, name)
        if current + asked > limit and current + asked > getattr(before, name):
            errors.append(
                {
                    "loc": f"{loc}.quotas.{name}",
                    "msg": f"quota {name} of project {project.name!r} exceeded: limit {limit:g}, "
                    f"in use {current:g}, this change asks {asked:g}",
                }
            )
    if errors:
        raise QuotaExceeded("; ".join(e["msg"] for e in errors), errors=errors)

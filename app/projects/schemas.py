from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.projects.windows import OutsideWindow, Window
from app.security.roles import ProjectRole

ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
]

# The `project` of a body that creates a resource, by name.
InProject = Annotated[
    ProjectName | None,
    Field(description="The project it belongs to, by name (default: `default`)"),
]

# `?project=` of a list: only that project's items (404 when the token may not read it).
ProjectQuery = Annotated[
    ProjectName | None,
    Query(description="Only this project's items (by name); default: every project readable"),
]

# The rules of app/containers/policy.py a project may be allowed to break, each named after the
# setting that relaxes it everywhere (docs/projects.md). Joining another container's namespace
# is no rule any setting relaxes, so no project may either.
Relaxation = Literal["privileged", "host_namespaces", "devices", "capabilities", "bind_paths"]


class Quotas(BaseModel):
    """Upper bounds on what a project's workloads take; a field left out (or null) is no
    limit. A service counts at its desired replicas, each with its reservations (else limits)."""

    model_config = ConfigDict(extra="forbid")

    containers: int | None = Field(
        default=None, ge=0, description="Containers: standalone ones plus every service replica"
    )
    replicas: int | None = Field(default=None, ge=0, description="Service replicas, summed")
    cpus: float | None = Field(default=None, ge=0, description="CPUs set aside, summed")
    memory_bytes: int | None = Field(default=None, ge=0, description="Memory set aside, summed")


class Usage(BaseModel):
    """What the project's workloads take now, in the units of its quotas."""

    containers: int = 0
    replicas: int = 0
    cpus: float = 0.0
    memory_bytes: int = 0


class ProjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "payments"},
                {
                    "name": "payments",
                    "protected": True,
                    "quotas": {"containers": 20, "cpus": 8, "memory_bytes": 17179869184},
                    "relaxations": ["capabilities"],
                },
            ]
        },
    )

    name: ProjectName
    protected: bool = False
    quotas: Quotas = Field(default_factory=Quotas)
    relaxations: list[Relaxation] = Field(default_factory=list, max_length=5)


class ProjectPatch(BaseModel):
    """Only the fields given change; a project's name never does (objects name it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"quotas": {"replicas": 10}}, {"relaxations": []}]},
    )

    protected: bool | None = None
    windows: list[Window] | None = Field(
        default=None,
        max_length=50,
        description="When a protected project takes changes; empty: at any time (docs/changes.md)",
    )
    outside_window: OutsideWindow | None = None
    quotas: Quotas | None = None
    relaxations: list[Relaxation] | None = Field(default=None, max_length=5)


class ProjectRead(BaseModel):
    id: str
    name: str
    protected: bool
    windows: list[Window]
    outside_window: OutsideWindow = Field(
        description="An approval outside the windows: `wait` for the next, or `refuse` (409)"
    )
    quotas: Quotas
    relaxations: list[Relaxation]
    usage: Usage
    hosts: list[str] = Field(description="Ids of the hosts dedicated to it (PUT .../hosts/{id})")
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    version: int


class MemberGrant(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"role": "operator"}]}
    )

    role: ProjectRole


class MemberRead(BaseModel):
    token_id: str
    token_name: str
    role: ProjectRole
    created_at: datetime
    created_by: str | None

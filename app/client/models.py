"""The resources as the client reads them.

Written for this client, not imported from the server, so an integration needs only httpx and
pydantic. Each model keeps the fields a program usually reads typed; every other field the
server sends is kept too (`extra="allow"`: `container.cap_add`, `model_extra`), and statuses
are plain strings, so a newer server with more fields or states does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Page(Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class Operation(Model):
    id: str
    kind: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    target_type: str | None = None
    target_id: str | None = None
    host_id: str | None = None
    attempts: int = 0
    max_attempts: int = 0
    progress: dict[str, Any] | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_by: str | None = None
    version: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class OperationLog(Model):
    seq: int
    attempt: int = 0
    at: datetime
    level: str
    message: str


class Host(Model):
    id: str
    name: str
    url: str
    labels: dict[str, str] = Field(default_factory=dict)
    status: str
    schedulable: bool = True
    draining: bool = False
    engine_version: str | None = None
    os: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    containers_running: int | None = None
    last_seen_at: datetime | None = None
    error: str | None = None
    version: int = 0


class Container(Model):
    id: str
    name: str
    host_id: str
    service_id: str | None = None
    image: str
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[dict[str, Any]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    managed: bool = True
    desired_state: str
    state: str = Field(description="What the host reports; `missing` when it is gone")
    health: str | None = None
    exit_code: int | None = None
    docker_id: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    version: int = 0


class Image(Model):
    id: str
    host_id: str
    reference: str
    docker_id: str
    repo_tags: list[str] = Field(default_factory=list)
    repo_digests: list[str] = Field(default_factory=list)
    size_bytes: int = 0
    containers: int = 0
    created_at: datetime | None = None
    version: int = 0


class ReplicaCounts(Model):
    desired: int
    running: int
    healthy: int


class Task(Model):
    slot: int | None = None
    container_id: str
    host_id: str
    state: str
    health: str | None = None
    revision: int | None = None
    desired_state: str


class Service(Model):
    id: str
    name: str
    stack_id: str | None = None
    spec: dict[str, Any]
    revision: int
    status: str
    status_detail: str | None = None
    replicas: ReplicaCounts
    rollout: dict[str, Any] | None = None
    tasks: list[Task] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


class Revision(Model):
    revision: int
    spec: dict[str, Any]
    created_at: datetime | None = None
    created_by: str | None = None


class PlannedChange(Model):
    slot: int
    host_id: str | None = None
    host_name: str | None = None
    container_id: str | None = None
    reason: str


class Plan(Model):
    revision_change: bool
    start: list[PlannedChange] = Field(default_factory=list)
    stop: list[PlannedChange] = Field(default_factory=list)
    replace: list[PlannedChange] = Field(default_factory=list)
    unplaceable: list[PlannedChange] = Field(default_factory=list)


class StackService(Model):
    compose_name: str
    service_id: str
    name: str
    status: str


class Stack(Model):
    id: str
    name: str
    compose: str
    variables: dict[str, str] = Field(default_factory=dict)
    host_id: str
    services: list[str] = Field(default_factory=list)
    service_details: list[StackService] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    status: str
    status_detail: str | None = None
    generation: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


class Secret(Model):
    id: str
    name: str
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None
    used_by: list[str] = Field(default_factory=list)


class Token(Model):
    id: str
    name: str
    role: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    created_by: str | None = None
    version: int = 0


class TokenCreated(Token):
    # The new token's secret: shown once, and never in a repr or a log line.
    token: str = Field(repr=False)


class Registry(Model):
    id: str
    name: str
    url: str
    host: str = ""
    username: str | None = None
    password_set: bool = False
    version: int = 0


class Me(Model):
    token_id: str
    name: str
    role: str


class AuditEntry(Model):
    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    method: str
    path: str
    resource: str | None = None
    request_id: str | None = None
    outcome: int


class AuditVerification(Model):
    ok: bool
    entries: int
    first_bad: int | None = None
    detail: str | None = None


class Event(Model):
    """One message of the event stream."""

    cursor: int = Field(description="Resume after this event with it")
    type: str = Field(description="`<resource_type>.created|updated|deleted`, `operation.<status>`")
    resource_type: str
    resource_id: str
    data: dict[str, Any] | None = None
    at: datetime | None = None


class Accepted(Model):
    """A 202 answer: the operation that does the work (await it with `operations.wait`)."""

    operation: Operation


class ContainerAccepted(Accepted):
    container: Container


class ServiceAccepted(Accepted):
    service: Service


class StackAccepted(Accepted):
    stack: Stack
    warnings: list[str] = Field(default_factory=list, description="Keys Berth ignored, ...")


class StackPlan(Model):
    """A deploy's dry run: what it would create, update or remove; nothing was stored."""

    name: str
    host_id: str | None = None
    services: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per Compose service: compose_name, name, image, build, replicas, host_id, "
        "action (create, update, unchanged, remove)",
    )
    builds: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class HostAccepted(Accepted):
    host: Host


class ImageAccepted(Accepted):
    """`operation` is the first of `operations` (one per host a pull goes to)."""

    operations: list[Operation] = Field(default_factory=list)


class SecretRotated(Model):
    secret: Secret
    operations: list[Operation] = Field(default_factory=list)

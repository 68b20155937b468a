from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.containers.schemas import (
    Arg,
    ContainerName,
    HealthCheck,
    NetworkAlias,
    NetworkName,
    Placement,
    PortMapping,
    Resources,
    RuntimeOptions,
    UserLabels,
    VolumeMount,
)
from app.core.errors import Invalid
from app.hosts.schemas import EnvName
from app.operations.schemas import OperationRead
from app.projects.schemas import InProject
from app.secrets.schemas import SecretUse
from app.services.diff import FieldChange

# Replicas of one service: a fleet's worth. The reconciler's pass over a service is linear in
# its replicas (slots are grouped once, placement reads usage once per pass), so this is not a
# speed limit; it bounds one service's rows, its `slots` JSON and its answer.
MAX_REPLICAS = 10_000


class ServicePlacement(Placement):
    max_per_host: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)


class UpdateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parallelism: int = Field(default=1, ge=1, le=1000, description="Replicas replaced at once")
    delay_s: float = Field(default=0, ge=0, le=3600, description="Pause between batches")
    order: Literal["stop-first", "start-first"] = "start-first"
    failure_action: Literal["rollback", "pause"] = "rollback"
    monitor_s: float = Field(
        default=5, ge=0, le=3600, description="How long a new replica must stay up to count"
    )


class ServiceSpec(RuntimeOptions):
    model_config = ConfigDict(extra="forbid")
    _SET_ONLY: ClassVar[frozenset[str]] = RuntimeOptions._SET_ONLY | {
        "container_name",
        "one_shot",
        "rollback_config",
    }

    image: Annotated[str, Field(min_length=1, max_length=512)]
    command: Annotated[list[Arg], Field(max_length=1000)] | None = None
    entrypoint: Annotated[list[Arg], Field(max_length=1000)] | None = None
    env: Annotated[dict[EnvName, str], Field(max_length=1000)] = Field(default_factory=dict)
    secrets: Annotated[list[SecretUse], Field(max_length=100)] = Field(
        default_factory=list,
        description="Secrets by name: a file under /run/secrets (default) or an env value. "
        'Each a name alone (`"db_password"`: the file /run/secrets/db_password, as Compose '
        "writes it) or an object. Rotating a secret rolls the services that use it.",
    )
    ports: Annotated[list[PortMapping], Field(max_length=100)] = Field(default_factory=list)
    volumes: Annotated[list[VolumeMount], Field(max_length=100)] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    healthcheck: HealthCheck | None = None
    labels: UserLabels = Field(default_factory=dict)
    networks: Annotated[list[NetworkName], Field(max_length=16)] = Field(default_factory=list)
    aliases: Annotated[list[NetworkAlias], Field(max_length=16)] = Field(
        default_factory=list,
        description="DNS names every replica answers to on `networks` (stacks: the Compose name)",
    )
    user: str | None = Field(default=None, description="name|uid[:group|gid]")
    placement: ServicePlacement = Field(default_factory=ServicePlacement)
    update_config: UpdateConfig = Field(default_factory=UpdateConfig)
    restart_policy: Literal["any", "on-failure", "none"] = Field(
        default="any",
        description="When a replica ends: replace it always (any), only after a non-zero exit "
        "(on-failure), or never (none). Replacements back off exponentially.",
    )
    registry_id: str | None = None
    rollback_config: UpdateConfig | None = Field(
        default=None,
        description="How a failed update rolls back (parallelism, delay, order, monitor); "
        "default: as update_config says",
    )
    container_name: ContainerName | None = Field(
        default=None,
        description="The replica's container name on its host (Compose container_name); only "
        "for a single replica, which is stopped before its replacement starts",
    )

    one_shot: bool = Field(
        default=False,
        description="Each replica runs once: one that exits 0 leaves its slot done, and the "
        "service counts as running (Compose's init service that others wait to complete). "
        "Needs restart_policy none or on-failure",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        if self.one_shot and self.restart_policy == "any":
            raise ValueError("a one_shot service needs restart_policy none or on-failure")
        if self.container_name is None:
            return self
        if self.replicas > 1:
            raise ValueError("container_name names one container: replicas must be 0 or 1")
        # Two replicas cannot hold one name at once: the old one goes first.
        for name, config in (
            ("update_config", self.update_config),
            ("rollback_config", self.rollback_config),
        ):
            if config is None:
                continue
            if "order" not in config.model_fields_set:
                config.order = "stop-first"
            elif config.order != "stop-first":
                raise ValueError(f"container_name needs {name}.order stop-first")
        return self


_SERVICE_EXAMPLE: dict[str, Any] = {
    "name": "web",
    "spec": {
        "image": "registry.example.com/team/app:1.0",
        "replicas": 4,
        "ports": [{"container_port": 8080}],
        "secrets": ["db_password", {"name": "api_key", "env": "API_KEY"}],
        "healthcheck": {"test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ || exit 1"]},
        "placement": {"constraints": ["zone==a"], "max_per_host": 2},
        "update_config": {"parallelism": 1, "order": "start-first", "failure_action": "rollback"},
    },
}


ServiceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class ServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SERVICE_EXAMPLE]})

    name: ServiceName
    spec: ServiceSpec
    project: InProject = None


class ServiceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: ServiceSpec


class ServiceReplace(ServiceUpdate):
    """The body of PUT: the new spec; the name may come along, as POST sends it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SERVICE_EXAMPLE]})

    name: ServiceName | None = Field(
        default=None, description="The service's name, if given: it cannot change (422)"
    )

    def spec_for(self, service_name: str) -> ServiceSpec:
        """The spec, for the service called `service_name`: another name is refused rather
        than ignored, since a client that sends one means a rename Berth does not do."""
        if self.name is not None and self.name != service_name:
            msg = f"a service's name cannot change (it is {service_name!r})"
            raise Invalid.listing("invalid request", [{"loc": "body.name", "msg": msg}])
        return self.spec


class ServicePatch(BaseModel):
    """Fields of the spec to change; the rest stays as in the current revision."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any]


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class ReplicaCounts(BaseModel):
    desired: int
    running: int
    healthy: int


class Task(BaseModel):
    slot: int | None
    container_id: str
    host_id: str
    state: str
    health: str | None
    revision: int | None
    desired_state: str
    error: str | None = Field(
        default=None, description="Why the last operation on the replica failed (start, create)"
    )


class ServiceRead(BaseModel):
    id: str
    name: str
    project: str
    stack_id: str | None
    spec: ServiceSpec
    revision: int
    status: Literal[
        "converging", "running", "updating", "rolling_back", "paused", "degraded", "removing"
    ]
    status_detail: str | None = Field(
        description="Progress, or why the service cannot converge: the outcome of the last "
        "rollout, the replicas that cannot be placed, or the last replica error"
    )
    replicas: ReplicaCounts
    rollout: dict[str, Any] | None
    tasks: list[Task]
    created_at: datetime
    updated_at: datetime
    version: int


class RevisionRead(BaseModel):
    revision: int
    spec: ServiceSpec
    image_digest: str | None = Field(
        default=None,
        description="The image as resolved when the revision was deployed (`repo@sha256:...`, "
        "or the id of an image Berth built); replicas are created from it. Null when not "
        "resolved (a service outside a stack, or a revision older than digests)",
        examples=["registry.example.com/team/app@sha256:" + "0" * 64],
    )
    created_at: datetime
    created_by: str | None


class RevisionDiff(BaseModel):
    """From revision `before` to revision `after`."""

    before: int
    after: int
    digest_before: str | None
    digest_after: str | None
    fields: list[FieldChange] = Field(description="The spec fields that changed")


class ServiceAccepted(BaseModel):
    operation: OperationRead
    service: ServiceRead


class PlannedChange(BaseModel):
    slot: int
    host_id: str | None
    host_name: str | None
    container_id: str | None = None
    reason: str


class Plan(BaseModel):
    revision_change: bool
    start: list[PlannedChange]
    stop: list[PlannedChange]
    replace: list[PlannedChange]
    unplaceable: list[PlannedChange]

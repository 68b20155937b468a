from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.hosts.schemas import EnvName
from app.operations.schemas import OperationRead
from app.projects.schemas import ProjectName
from app.services.diff import FieldChange

StackName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
ComposeText = Annotated[str, StringConstraints(min_length=1, max_length=512 * 1024)]
Variables = Annotated[
    dict[EnvName, Annotated[str, StringConstraints(max_length=32768)]], Field(max_length=1000)
]
EnvFiles = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=500)],
        Annotated[str, StringConstraints(max_length=256 * 1024)],
    ],
    Field(max_length=50),
]


_COMPOSE_EXAMPLE = """services:
  web:
    image: registry.example.com/team/app:1.0
    ports: ["${WEB_PORT:-8000}:5000"]
    depends_on:
      cache: {condition: service_healthy}
  cache:
    image: redis:7-alpine
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 1s}
"""


class StackUpdate(BaseModel):
    """A new Compose file for the stack: only the services whose spec changed roll."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"compose": _COMPOSE_EXAMPLE, "variables": {"WEB_PORT": "8080"}}]
        },
    )

    compose: ComposeText | None = Field(
        default=None,
        description="The Compose file (YAML), as written; or give the project directory as the "
        "multipart part `project` instead",
    )
    file: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = Field(
        default=None,
        description="With `project`: the Compose file's path in the archive. Default: the "
        "first of compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml",
    )
    variables: Variables = Field(
        default_factory=dict, description="Values for ${VAR} interpolation in the file"
    )
    env_files: EnvFiles = Field(
        default_factory=dict,
        description="The content of each `env_file` the file names, by the path it uses "
        "(with `project`, the files in it are read too)",
    )
    strict: bool = Field(
        default=False,
        description="Refuse (422) a variable that neither `variables`, the project's `.env` "
        "nor a default sets; by default it is an empty string, with a warning",
    )
    profiles: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]],
        Field(max_length=64),
    ] = Field(
        default_factory=list,
        description="Compose profiles to enable: services with `profiles` none of which is "
        "chosen are left out, as `docker compose --profile` does",
    )


class StackCreate(StackUpdate):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "shop", "compose": _COMPOSE_EXAMPLE, "variables": {"WEB_PORT": "8080"}}
            ]
        }
    )

    name: StackName = Field(description="Prefix of the stack's services, networks and volumes")
    host_id: str | None = Field(
        default=None,
        description="The host that runs the whole stack (its services share bridge networks). "
        "Default: the ready host with the fewest containers.",
    )
    # Not `project`: that multipart part is the Compose project directory.
    in_project: ProjectName | None = Field(
        default=None,
        description="The Berth project the stack and its services belong to, by name (default: "
        "`default`); not the multipart part `project`, which is the Compose project directory",
    )


class StackServiceRef(BaseModel):
    compose_name: str
    service_id: str
    name: str
    status: str


class StackRead(BaseModel):
    id: str
    name: str
    project: str = Field(description="The Berth project it belongs to (`in_project` at create)")
    compose: str
    variables: dict[str, str]
    host_id: str
    services: list[str] = Field(description="Ids of the stack's services")
    service_details: list[StackServiceRef]
    networks: list[str]
    volumes: list[str]
    status: Literal["deploying", "running", "failed", "removing"]
    status_detail: str | None = Field(
        description="While deploying, what the deploy waits for (a service's last replica "
        "error among it); when failed, why"
    )
    generation: int
    created_at: datetime
    updated_at: datetime
    version: int


Warnings = Annotated[
    list[str],
    Field(
        description="What Berth accepted but ignored or assumed (an ignored key, an unset "
        "variable taken as empty), each as `<where in the file>: <what>`"
    ),
]


class StackAccepted(BaseModel):
    operation: OperationRead
    stack: StackRead
    warnings: Warnings = Field(default_factory=list)


class PlannedService(BaseModel):
    compose_name: str
    name: str = Field(description="The Berth service")
    image: str = Field(description="The image it runs (for `build:`, the tag of the build)")
    build: bool = Field(description="Whether the image is built from the project")
    replicas: int
    host_id: str
    action: Literal["create", "update", "unchanged", "remove"] = Field(
        description="`update`: its spec changes, so its replicas roll to a new revision"
    )


class StackDryRun(BaseModel):
    """What a create or update would do; nothing was stored and no engine was asked."""

    name: str
    host_id: str
    services: list[PlannedService]
    builds: list[str] = Field(description="Compose services whose image would be built")
    networks: list[str] = Field(description="Networks the stack creates")
    volumes: list[str] = Field(description="Named volumes the stack creates")
    warnings: Warnings


_DIGEST_EXAMPLE = "registry.example.com/team/app@sha256:" + "0" * 64


class ReleaseRead(BaseModel):
    """What one generation of the stack deployed."""

    release: int = Field(description="The stack's generation that deployed it")
    compose: str = Field(description="The Compose file, as given")
    variables: dict[str, str] = Field(
        description="The variables given with it; a name that usually carries a credential "
        "(matching PASSWORD, PASS, SECRET, TOKEN, KEY, CREDENTIAL, PRIVATE or AUTH, in any "
        "case) has its value shown, and kept, as `***`",
        examples=[{"WEB_PORT": "8080", "DB_PASSWORD": "***"}],
    )
    images: dict[str, str] = Field(description="Each Compose service's image, as written")
    digests: dict[str, str | None] = Field(
        description="Each Compose service's image as resolved on the stack's host when it was "
        "deployed: `repo@sha256:...` (replicas are created from it, on every host), or the id "
        "of an image Berth built. Null until the deploy has resolved it, or for an image no "
        "registry has",
        examples=[{"web": _DIGEST_EXAMPLE}],
    )
    rollback_of: int | None = Field(description="The release it deployed again, if a rollback")
    created_at: datetime
    created_by: str | None


class ServiceDiff(BaseModel):
    compose_name: str
    change: Literal["added", "removed", "changed"]
    digest_before: str | None
    digest_after: str | None
    fields: list[FieldChange] = Field(description="The spec fields that changed")


class ReleaseDiff(BaseModel):
    """From release `before` to release `after`."""

    before: int
    after: int
    compose: str = Field(description="The Compose files' difference, as a unified diff")
    variables: list[FieldChange] = Field(
        description="Variables added, removed or changed (masked values stay masked)"
    )
    services: list[ServiceDiff] = Field(
        description="Services added, removed, or whose spec or digest changed"
    )


class StackRollback(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"release": 1}]})

    release: int = Field(ge=1, description="The release to deploy again, its digests included")

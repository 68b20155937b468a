"""Secrets as the API shows them (never the value) and as services reference them."""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.hosts.schemas import EnvName
from app.operations.schemas import OperationRead
from app.projects.schemas import InProject

SecretName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]
SECRETS_DIR = "/run/secrets"
# At most 500 KiB, as Docker Swarm allows: a secret is a credential or a certificate, not data.
MAX_SECRET_BYTES = 500 * 1024


class SecretReference(BaseModel):
    """How one container receives one secret: a file (the default) or an environment value
    (`env`; then `target`, `uid`, `gid` and `mode` do not apply)."""

    model_config = ConfigDict(extra="forbid")

    name: SecretName
    target: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description="File path in the container; relative paths are under /run/secrets. "
        "Default: /run/secrets/<name>",
    )
    env: EnvName | None = Field(
        default=None, description="Deliver as this environment variable instead of a file"
    )
    uid: int = Field(default=0, ge=0, le=2**31 - 1)
    gid: int = Field(default=0, ge=0, le=2**31 - 1)
    mode: int = Field(default=0o444, ge=0, le=0o777, description="File mode (decimal)")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\x00" in value or ".." in value.split("/"):
            raise ValueError("a secret target is a path without '..'")
        path = posixpath.normpath(posixpath.join(SECRETS_DIR, value))
        if path in ("/", SECRETS_DIR):
            raise ValueError("a secret target names a file")
        return path

    @property
    def path(self) -> str:
        return self.target or f"{SECRETS_DIR}/{self.name}"


def _short_form(data: Any) -> Any:
    # A bare name, as Compose writes it: the defaults, so a file at /run/secrets/<name>.
    return {"name": data} if isinstance(data, str) else data


# A reference in a spec: the object, or a name alone for `{"name": ...}` (answers always show
# the object). The document shows the two forms where a spec is sent.
SecretUse = Annotated[
    SecretReference,
    BeforeValidator(_short_form, json_schema_input_type=SecretName | SecretReference),
]


class SecretCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "db_password", "value": "correct horse battery staple"}]
        },
    )

    name: SecretName
    value: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET_BYTES)] = Field(
        description="Write-only: stored encrypted, never returned"
    )
    project: InProject = None


class SecretRotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"value": "a new one"}]}
    )

    value: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET_BYTES)]


class SecretRead(BaseModel):
    id: str
    name: str
    project: str = Field(description="Only this project's containers and services can use it")
    version: int
    created_at: datetime
    updated_at: datetime
    used_by: list[str] = Field(description="Names of the services that reference it")


class SecretRotated(BaseModel):
    secret: SecretRead
    operations: list[OperationRead]

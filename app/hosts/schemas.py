from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.operations.schemas import OperationRead

Name = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,99}$")]
LABEL_KEY = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}$")
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY.pattern)]
LabelValue = Annotated[str, StringConstraints(max_length=255)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=64)]
Pem = Annotated[str, StringConstraints(max_length=65536, pattern=r"-----BEGIN [A-Z ]+-----")]

_HOSTNAME = re.compile(r"^[a-zA-Z0-9.-]{1,253}$|^\[[0-9a-fA-F:]+\]$")


def validate_engine_url(url: str) -> str:
    """unix:///absolute/path.sock or tcp://host:port, nothing else."""
    if url.startswith("unix://"):
        path = url.removeprefix("unix://")
        if not path.startswith("/") or "\x00" in path or len(path) > 400:
            raise ValueError("unix URLs need an absolute socket path: unix:///path/docker.sock")
        return url
    if url.startswith("tcp://"):
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("tcp URLs are tcp://host:port with nothing after the port")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("port must be 1-65535") from exc
        if not parts.hostname or not _HOSTNAME.match(parts.netloc.rsplit(":", 1)[0]):
            raise ValueError("tcp URLs need a host: tcp://10.0.0.5:2376")
        if port is None:
            raise ValueError("tcp URLs need a port: tcp://host:2375 (plain) or :2376 (TLS)")
        return url.rstrip("/")
    raise ValueError("the URL must start with unix:// or tcp://")


class HostTls(BaseModel):
    """Client certificate material for a TLS engine, PEM encoded. Write-only."""

    model_config = ConfigDict(extra="forbid")

    ca_cert: Pem | None = None
    client_cert: Pem
    client_key: Pem


class HostCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    url: Annotated[str, StringConstraints(max_length=500)]
    labels: Labels = Field(default_factory=dict)
    schedulable: bool = True
    tls: HostTls | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return validate_engine_url(value)

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> HostCreate:
        if self.tls is not None and not self.url.startswith("tcp://"):
            raise ValueError("tls applies to tcp:// URLs only")
        return self


class HostUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: Annotated[str, StringConstraints(max_length=500)] | None = None
    labels: Labels | None = None
    schedulable: bool | None = None
    tls: HostTls | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else validate_engine_url(value)


HostStatus = Literal["pending", "ready", "unreachable"]


class HostRead(BaseModel):
    id: str
    name: str
    url: str
    labels: dict[str, str]
    status: str
    schedulable: bool
    draining: bool
    tls_configured: bool = Field(
        description="Whether TLS client material is stored (never returned)."
    )
    engine_version: str | None
    api_version: str | None
    os: str | None
    arch: str | None
    cpus: int | None
    memory_bytes: int | None
    containers_running: int | None
    last_seen_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    version: int


class HostAccepted(BaseModel):
    """202 body: the operation carrying the work, and the host as it is now."""

    operation: OperationRead
    host: HostRead

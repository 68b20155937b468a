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


def transport_problem(url: str, *, tls: bool, insecure: bool) -> str | None:
    """What is wrong with how a host is reached, or None. The engine API is root on the host:
    over tcp:// it is spoken over TLS (the engine's certificate verified) unless the host is
    registered as `insecure`. unix:// sockets are local and need neither."""
    if not url.startswith("tcp://"):
        if tls:
            return "tls applies to tcp:// URLs only"
        if insecure:
            return "insecure applies to tcp:// URLs only"
        return None
    if not tls and not insecure:
        return (
            "plain tcp:// (no TLS) is refused: give `tls` (the engine's CA, and a client "
            "certificate if the engine asks for one), or set `insecure: true` to accept an "
            "engine that anyone on the network can read, impersonate and command"
        )
    return None


class HostTls(BaseModel):
    """TLS material for an engine, PEM encoded. Write-only. The engine's certificate is
    verified against `ca_cert`, or the system's trust store without one. The client
    certificate and key go together (an engine run with --tlsverify requires them)."""

    model_config = ConfigDict(extra="forbid")

    ca_cert: Pem | None = None
    client_cert: Pem | None = None
    client_key: Pem | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> HostTls:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


INSECURE_DESCRIPTION = (
    "Accept this engine without verifying it: plain tcp:// (no TLS), or TLS without checking "
    "the engine's certificate. Off by default; tcp:// hosts need TLS material or this."
)


class HostCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "edge-1",
                    "url": "tcp://10.0.0.5:2376",
                    "labels": {"zone": "b"},
                    "tls": {
                        "ca_cert": "-----BEGIN CERTIFICATE-----\n...",
                        "client_cert": "-----BEGIN CERTIFICATE-----\n...",
                        "client_key": "-----BEGIN PRIVATE KEY-----\n...",
                    },
                },
                {"name": "lab-1", "url": "tcp://10.0.0.6:2375", "insecure": True},
            ]
        },
    )

    name: Name
    url: Annotated[str, StringConstraints(max_length=500)]
    labels: Labels = Field(default_factory=dict)
    schedulable: bool = True
    tls: HostTls | None = None
    insecure: bool = Field(default=False, description=INSECURE_DESCRIPTION)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return validate_engine_url(value)

    @model_validator(mode="after")
    def _check_transport(self) -> HostCreate:
        problem = transport_problem(self.url, tls=self.tls is not None, insecure=self.insecure)
        if problem is not None:
            raise ValueError(problem)
        return self


class HostUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: Annotated[str, StringConstraints(max_length=500)] | None = None
    labels: Labels | None = None
    schedulable: bool | None = None
    tls: HostTls | None = None
    insecure: bool | None = Field(default=None, description=INSECURE_DESCRIPTION)

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
    insecure: bool = Field(description=INSECURE_DESCRIPTION)
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

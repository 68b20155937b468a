from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from app.hosts.schemas import Name
from app.projects.schemas import InProject

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_HOST = re.compile(r"^(?:[a-zA-Z0-9-]{1,63}\.)*[a-zA-Z0-9-]{1,63}$|^\[[0-9a-fA-F:]+\]$")

Username = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Password = Annotated[SecretStr, Field(min_length=1, max_length=4096)]


def registry_host(url: str) -> str:
    """The host[:port] that image references use for this registry URL."""
    netloc = urlsplit(url).netloc.lower()
    return DOCKER_HUB if netloc in _HUB_ALIASES else netloc


def same_registry(host: str, other: str) -> bool:
    """Whether two host[:port] names (a stored registry's, an image reference's) are one
    registry: case, Docker Hub's aliases and a default port (443, 80) make no difference."""
    return _host_key(host) == _host_key(other)


def _host_key(host: str) -> str:
    value = registry_host(f"//{host.strip().lower()}")
    for default in (":443", ":80"):
        value = value.removesuffix(default)
    return DOCKER_HUB if value in _HUB_ALIASES else value


def validate_registry_url(url: str) -> str:
    """http(s)://host[:port], nothing else: no credentials, no path, no query."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the URL must start with https:// (or http:// for a registry without TLS)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("credentials do not belong in the URL; use username and password")
    if parts.query or parts.fragment or parts.path not in ("", "/", "/v1/", "/v2/"):
        raise ValueError("the URL is scheme://host[:port] with nothing after it")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("port must be 1-65535") from exc
    host = parts.hostname or ""
    if not host or not _HOST.match(host if ":" not in host else f"[{host}]"):
        raise ValueError("the URL needs a valid host name or address")
    if port == 0:
        raise ValueError("port must be 1-65535")
    return f"{parts.scheme}://{parts.netloc}"


class RegistryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "team",
                    "url": "https://registry.example.com",
                    "username": "ci",
                    "password": "correct horse battery staple",
                }
            ]
        },
    )

    name: Name
    url: Annotated[str, StringConstraints(max_length=500)]
    username: Username | None = None
    password: Password | None = Field(default=None, description="Write-only; stored encrypted.")
    project: InProject = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return validate_registry_url(value)


class RegistryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: Annotated[str, StringConstraints(max_length=500)] | None = None
    username: Username | None = None
    password: Password | None = Field(default=None, description="Write-only; stored encrypted.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else validate_registry_url(value)


class RegistryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    project: str = Field(description="Its credentials serve this project's work only")
    url: str
    host: str = Field(description="host[:port] that image references name this registry by")
    username: str | None
    password_set: bool
    created_at: datetime
    updated_at: datetime
    version: int


class RegistryCheck(BaseModel):
    ok: bool
    detail: str

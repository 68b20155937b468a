from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.operations.schemas import OperationRead

Reference = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Layer(BaseModel):
    digest: str
    size_bytes: int


class ImageRead(BaseModel):
    id: str
    host_id: str
    reference: str = Field(description="The first tag, else the first digest, else the image id")
    docker_id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size_bytes: int = Field(description="The sum of the layer sizes")
    layers: list[Layer]
    containers: int = Field(description="Containers on the host using this image")
    created_at: datetime | None = Field(description="When the image was built")
    observed_at: datetime
    version: int


class ImagePull(BaseModel):
    """Pull to one host (`host_id`), several (`host_ids`) or every ready host (`all_hosts`):
    exactly one of the three."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reference": "registry.example.com/team/app:1.0", "all_hosts": True},
                {"reference": "redis:7-alpine", "host_id": "01jd3k7m5xq8w2v9r4t6y0zbnc"},
            ]
        },
    )

    reference: Reference
    host_id: Id | None = None
    host_ids: Annotated[list[Id], Field(min_length=1, max_length=500)] | None = None
    all_hosts: bool = False
    registry_id: Id | None = Field(
        default=None,
        description="Credentials to use; by default those of the registry the reference names",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ImagePull:
        chosen = sum([self.host_id is not None, self.host_ids is not None, self.all_hosts])
        if chosen != 1:
            raise ValueError("give exactly one of host_id, host_ids or all_hosts: true")
        return self


class ImagePush(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "host_id": "01jd3k7m5xq8w2v9r4t6y0zbnc",
                    "reference": "registry.example.com/team/app:1.0",
                }
            ]
        },
    )

    host_id: Id
    reference: Reference
    registry_id: Id | None = None


class ImageTag(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "host_id": "01jd3k7m5xq8w2v9r4t6y0zbnc",
                    "source": "app:dev",
                    "target": "registry.example.com/team/app:1.0",
                }
            ]
        },
    )

    host_id: Id
    source: Reference = Field(description="An image on the host: reference or image id")
    target: Reference


class ImageAccepted(BaseModel):
    """202 body: the operation(s) carrying the work (one per host)."""

    operation: OperationRead
    operations: list[OperationRead]

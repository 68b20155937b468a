from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from app.security.roles import Role


class TokenCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "ci", "role": "operator"},
                {"name": "dashboard", "role": "viewer", "expires_at": "2027-01-01T00:00:00Z"},
            ]
        },
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    role: Role
    expires_at: datetime | None = None


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    created_by: str | None
    version: int


class TokenCreated(TokenRead):
    token: str


class Me(BaseModel):
    token_id: str
    name: str
    role: Role

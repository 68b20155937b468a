from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.changes.models import ChangeState


class ChangeRead(BaseModel):
    """A change request: what was asked, its plan when submitted, and what became of it."""

    id: str
    project: str
    kind: str = Field(description="e.g. `service.create`, `stack.update`, `secret.rotate`")
    target: str | None = Field(description="`services/<id>`; null for a create")
    target_name: str | None = Field(description="The name a create asks for")
    payload: dict[str, Any] = Field(
        description="The request body as submitted (a secret's value is never shown, a "
        "stack's secret-bearing variables are masked)"
    )
    plan: dict[str, Any] = Field(
        description="What it would start, stop and roll, as the direct route's dry run says"
    )
    state: ChangeState
    author: str
    approver: str | None = Field(description="Who approved or rejected it")
    reason: str | None = Field(description="The rejection's reason")
    break_glass: str | None = Field(
        description="The reason a global admin gave to apply it outside the change windows"
    )
    error: str | None = Field(description="Why the approved change failed to apply")
    operations: list[str] = Field(description="The operations the applied change queued")
    created_at: datetime
    expires_at: datetime = Field(description="A pending request expires unanswered then")
    decided_at: datetime | None
    not_before: datetime | None = Field(
        description="In `waiting_window`: when the project's next change window opens"
    )
    applied_at: datetime | None
    version: int


class ChangeReject(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "not during the freeze"}]}
    )

    reason: str = Field(min_length=1, max_length=2000)

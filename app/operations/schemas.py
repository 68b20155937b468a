from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OperationStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class OperationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    target_type: str | None
    target_id: str | None
    host_id: str | None
    status: OperationStatus
    attempts: int
    max_attempts: int
    progress: dict[str, Any] | None
    error: str | None = Field(
        description="Why it failed, or the last transient error while retrying."
    )
    result: dict[str, Any] | None
    cancel_requested: bool
    next_attempt_at: datetime | None = Field(
        description="When a queued retry becomes due (set while waiting out a backoff)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str | None
    version: int


class OperationLogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    attempt: int
    at: datetime
    level: str
    message: str

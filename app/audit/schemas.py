from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    method: str
    path: str
    resource: str | None
    request_id: str | None
    source: str | None
    outcome: int
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    first_bad: int | None
    detail: str | None

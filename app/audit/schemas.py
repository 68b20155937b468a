from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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
    token_id: str | None
    success: bool | None
    resource_type: str | None
    resource_id: str | None
    version_before: int | None
    version_after: int | None
    author: str | None = Field(
        default=None, description="Whom an approved change ran as; `actor` approved it"
    )
    break_glass: str | None = Field(
        default=None, description="The reason a global admin gave to bypass approvals"
    )
    prev_hash: str
    hash: str
    mac: str | None


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    first_bad: int | None
    detail: str | None
    pruned_through: int = Field(
        0,
        description="Entries up to this seq were pruned by retention (0: none). The check "
        "starts from the keyed record of that prune, whose entry a signed checkpoint covers.",
    )


class AuditCheckpoint(BaseModel):
    """The chain's head at a time, signed: keep these outside Berth, and an export checks
    against them offline (`python -m app.audit.verify_export`)."""

    seq: int
    hash: str
    at: str
    keyed_from: int
    public_key: str = Field(description="The Ed25519 public key, base64 of its 32 raw bytes")
    signature: str = Field(description="Ed25519 over seq, hash, at and keyed_from, base64")


class AuditPublicKey(BaseModel):
    algorithm: str = "Ed25519"
    public_key: str = Field(description="Base64 of the 32 raw bytes")

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Admin, Ctx
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.audit import service
from app.audit.schemas import AuditEntryRead, AuditVerification

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


@router.get("", summary="Audit entries, oldest first")
def list_audit(
    context: Ctx,
    _: Admin,
    limit: Limit = 50,
    cursor: Cursor = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    resource: Annotated[
        str | None, Query(max_length=300, description="Prefix, e.g. `hosts/` or `hosts/<id>`")
    ] = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> Page[AuditEntryRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(
            session,
            limit=limit,
            cursor=cursor,
            actor=actor,
            action=action,
            resource=resource,
            since=from_,
            until=to,
        )
        return Page(items=[AuditEntryRead.model_validate(e) for e in rows], next_cursor=next_cursor)


@router.get("/verify", summary="Check the hash chain end to end")
def verify_audit(context: Ctx, _: Admin) -> AuditVerification:
    with context.db.session(write=False) as session:
        result = service.verify(session)
    return AuditVerification(
        ok=result.ok, entries=result.entries, first_bad=result.first_bad, detail=result.detail
    )

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from app.api.deps import Admin, Ctx, ProjectAdmin
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.audit import keys, service
from app.audit.models import AuditEntry
from app.audit.schemas import (
    AuditCheckpoint,
    AuditEntryRead,
    AuditPublicKey,
    AuditVerification,
)
from app.core.db import Database
from app.core.errors import Conflict, Invalid

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])

NDJSON = "application/x-ndjson"
# Entries read per short read transaction while an export streams: memory stays bounded
# whatever the range, and no transaction stays open for the whole download.
EXPORT_BATCH = 500


@router.get("", summary="Audit entries, oldest first")
def list_audit(
    context: Ctx,
    principal: ProjectAdmin,
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
            projects=principal.readable_projects(),
        )
        return Page(items=[AuditEntryRead.model_validate(e) for e in rows], next_cursor=next_cursor)


@router.get("/verify", summary="Check the keyed hash chain end to end")
def verify_audit(context: Ctx, _: Admin) -> AuditVerification:
    with context.db.session(write=False) as session:
        result = service.verify(session)
    return AuditVerification(
        ok=result.ok, entries=result.entries, first_bad=result.first_bad, detail=result.detail
    )


@router.get(
    "/checkpoint",
    summary="The chain's head, signed with the audit signing key",
    responses={409: {"description": "The newest entry does not match its hash or MAC"}},
)
def audit_checkpoint(context: Ctx, _: Admin) -> AuditCheckpoint:
    with context.db.session(write=False) as session:
        return AuditCheckpoint.model_validate(service.checkpoint(session))


@router.get("/public-key", summary="The Ed25519 key that verifies checkpoints")
def audit_public_key(context: Ctx, _: ProjectAdmin) -> AuditPublicKey:
    with context.db.session(write=False) as session:
        return AuditPublicKey(public_key=keys.of(session).public_key)


@router.get(
    "/export",
    summary="Stream the entries of a time range as JSON Lines, ending with a signed checkpoint",
    description='One JSON object a line: `{"type": "entry", ...}` for each entry whose '
    "`at` is in [from, to), oldest first (a gap-free run of the chain), then one "
    '`{"type": "checkpoint", ...}` signing the last one. Should an entry fail its hash or '
    'MAC while streaming, the export ends with `{"type": "error", "seq": ..., '
    '"detail": ...}` instead. Check it offline with '
    "`python -m app.audit.verify_export FILE --public-key KEY`.",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}}},
)
def export_audit(
    context: Ctx,
    principal: ProjectAdmin,
    from_: Annotated[
        AwareDatetime | None, Query(alias="from", description="RFC 3339, inclusive")
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="RFC 3339, exclusive")] = None,
) -> StreamingResponse:
    if from_ is not None and to is not None and from_ > to:
        raise Invalid.listing("invalid range", [{"loc": "query.from", "msg": "after `to`"}])
    with context.db.session(write=False) as session:
        bounds = service.seq_range(session, since=from_, until=to)
    return StreamingResponse(
        _export(context.db, bounds, principal.readable_projects()), media_type=NDJSON
    )


def _line(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value) + b"\n"


def _exported(entry: AuditEntry, projects: frozenset[str] | None) -> dict[str, Any]:
    """An entry's line; one outside `projects` (None: all) as its place in the chain only, so
    the export still verifies offline without showing what it records."""
    if projects is None or entry.project_id in projects:
        return {"type": "entry", **service.record(entry)}
    return {
        "type": "redacted",
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "mac": entry.mac,
    }


def _export(
    db: Database, bounds: tuple[int, int] | None, projects: frozenset[str] | None
) -> Iterator[bytes]:
    if bounds is None:
        return
    after, last = bounds[0] - 1, bounds[1]
    prev_hash: str | None = None
    while after < last:
        with db.session(write=False) as session:
            key = keys.of(session)
            rows = service.entries_after(session, after=after, upto=last, limit=EXPORT_BATCH)
            lines: list[bytes] = []
            problem: tuple[int, str] | None = None
            for entry in rows:
                problem = service.check_next(key, entry, seq=after + 1, prev_hash=prev_hash)
                if problem is not None:
                    break
                lines.append(_line(_exported(entry, projects)))
                after, prev_hash = entry.seq, entry.hash
            if problem is None and not rows:
                problem = (after + 1, f"entry {after + 1} is missing")
        yield from lines
        if problem is not None:
            yield _line({"type": "error", "seq": problem[0], "detail": problem[1]})
            return
    with db.session(write=False) as session:
        try:
            signed = service.checkpoint(session, entry=service.entry(session, seq=last))
        except Conflict as exc:
            yield _line({"type": "error", "seq": last, "detail": exc.detail})
            return
    yield _line({"type": "checkpoint", **signed})

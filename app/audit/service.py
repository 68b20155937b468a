"""The audit trail: append-only and hash-chained, so that tampering shows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session
from starlette.types import Scope

from app.api.middleware.request_context import pending_audit
from app.api.pagination import paginate
from app.api.paths import API_PREFIX
from app.audit.models import AuditEntry, AuditHead
from app.core.db import Database, new_id, utcnow
from app.events import recorder

GENESIS = "0" * 64
_HEAD_ID = 1


def entry_hash(entry: AuditEntry) -> str:
    fields = [
        entry.seq,
        entry.id,
        entry.at.isoformat(),
        entry.actor,
        entry.action,
        entry.method,
        entry.path,
        entry.resource,
        entry.request_id,
        entry.source,
        entry.outcome,
        entry.prev_hash,
    ]
    canonical = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _locked_head(session: Session) -> AuditHead | None:
    return session.execute(
        select(AuditHead).where(AuditHead.id == _HEAD_ID).with_for_update()
    ).scalar_one_or_none()


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    method: str,
    path: str,
    resource: str | None,
    request_id: str | None,
    source: str | None,
    outcome: int,
) -> AuditEntry:
    head = _locked_head(session)
    if head is None:
        # The first entry ever: two first requests at once must not both start a chain.
        session.execute(
            Database.of(session).insert_ignore(AuditHead).values(id=_HEAD_ID, seq=0, hash=GENESIS)
        )
        head = _locked_head(session)
        assert head is not None
    entry = AuditEntry(
        seq=head.seq + 1,
        id=new_id(),
        at=utcnow(),
        actor=actor,
        action=action,
        method=method,
        path=path[:2000],
        resource=resource,
        request_id=request_id,
        source=source,
        outcome=outcome,
        prev_hash=head.hash,
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    return entry


def append_request(session: Session, *, scope: Scope, status: int, request_id: str) -> AuditEntry:
    """The entry of one finished mutating API request: who, which endpoint, on what (as the
    view named it, else the path's first two parts), from where, and its status code."""
    state = scope["state"]
    principal = state.get("principal")
    route = scope.get("route")
    path = scope["path"]
    resource = state.get("audit_resource")
    if resource is None:
        parts = path.removeprefix(API_PREFIX).strip("/").split("/")
        resource = "/".join(parts[:2]) or None
    client = scope.get("client")
    return append(
        session,
        actor=principal.actor if principal else "anonymous",
        action=getattr(route, "name", None) or "unmatched",
        method=scope["method"],
        path=path,
        resource=resource,
        request_id=request_id,
        source=client[0] if client else None,
        outcome=status,
    )


@event.listens_for(Session, "before_commit")
def _append_in_transaction(session: Session) -> None:
    """A mutating request's entry goes into the transaction that makes its change, so the
    change and its entry commit together or not at all: an entry that cannot be written fails
    the commit (fail closed), and no crash between them can leave a change unaudited."""
    pending = pending_audit.get()
    if pending is None or pending.written:
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    if not recorder.changed(session):
        return  # a read, idempotency bookkeeping: not the request's change
    # The response is not sent yet; the route's success status is the one it is about to send.
    status = getattr(pending.scope.get("route"), "status_code", None) or 200
    append_request(session, scope=pending.scope, status=status, request_id=pending.request_id)
    pending.written = True


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad: int | None
    detail: str | None


def verify(session: Session, *, batch: int = 1000) -> Verification:
    """Walk the chain in order; report the first entry that was edited, removed or moved."""
    expected_seq, prev_hash, count, last_seq = 1, GENESIS, 0, 0
    while True:
        rows = (
            session.execute(
                select(AuditEntry)
                .where(AuditEntry.seq > last_seq)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        for entry in rows:
            if entry.seq != expected_seq:
                return Verification(False, count, expected_seq, f"entry {expected_seq} is missing")
            if entry.prev_hash != prev_hash:
                return Verification(False, count, entry.seq, "chain broken before this entry")
            if entry_hash(entry) != entry.hash:
                return Verification(
                    False, count, entry.seq, "entry content does not match its hash"
                )
            prev_hash, last_seq = entry.hash, entry.seq
            expected_seq += 1
            count += 1
        if len(rows) < batch:
            break
    head = session.get(AuditHead, _HEAD_ID)
    if head is not None and (head.seq != last_seq or head.hash != prev_hash):
        return Verification(False, count, last_seq + 1, "newest entries were removed")
    return Verification(True, count, None, None)


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[Sequence[AuditEntry], str | None]:
    statement = select(AuditEntry)
    if actor is not None:
        statement = statement.where(AuditEntry.actor == actor)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    if resource is not None:
        statement = statement.where(AuditEntry.resource.startswith(resource, autoescape=True))
    if since is not None:
        statement = statement.where(AuditEntry.at >= since)
    if until is not None:
        statement = statement.where(AuditEntry.at < until)
    return paginate(session, statement, AuditEntry.seq, limit=limit, cursor=cursor)

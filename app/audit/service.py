"""The audit trail: append-only, hash-chained and keyed, so that tampering shows."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, inspect, select
from sqlalchemy.orm import Session
from starlette.types import Scope

from app.api.middleware.request_context import pending_audit
from app.api.pagination import paginate
from app.api.paths import API_PREFIX
from app.audit import chain, keys
from app.audit.chain import GENESIS
from app.audit.models import AuditEntry, AuditHead, AuditPrune
from app.core.db import Database, new_id, utcnow
from app.core.errors import Conflict, NotFound
from app.events import recorder

# resource id -> (version before the request's transaction, version after it)
_VERSIONS = "berth.audit_versions"
# row id -> project id of the rows the request's transaction touched, for its entry's project.
_PROJECTS = "berth.audit_projects"


def record(entry: AuditEntry) -> dict[str, Any]:
    """The entry as exported: every field its hash covers, as the hash saw it."""
    values = {name: getattr(entry, name) for name in chain.KEYED_FIELDS}
    # An optional field is exported only where it is set, as the hash covers it.
    optional = {name: getattr(entry, name) for name in chain.OPTIONAL_FIELDS}
    values.update({name: value for name, value in optional.items() if value is not None})
    values["at"] = entry.at.isoformat()
    return {**values, "prev_hash": entry.prev_hash, "hash": entry.hash, "mac": entry.mac}


def _locked_head(session: Session) -> AuditHead | None:
    return session.execute(
        select(AuditHead).where(AuditHead.id == keys.HEAD_ID).with_for_update()
    ).scalar_one_or_none()


def append(
    session: Session,
    *,
    actor: str,
    token_id: str | None,
    action: str,
    method: str,
    path: str,
    resource: str | None,
    request_id: str | None,
    source: str | None,
    outcome: int,
    versions: tuple[int | None, int | None] = (None, None),
    project_id: str | None = None,
    author: str | None = None,
    break_glass: str | None = None,
) -> AuditEntry:
    key = keys.of(session)
    head = _locked_head(session)
    if head is None:
        # The first entry ever: two first requests at once must not both start a chain.
        session.execute(
            Database.of(session)
            .insert_ignore(AuditHead)
            .values(id=keys.HEAD_ID, seq=0, hash=GENESIS)
        )
        head = _locked_head(session)
        assert head is not None
    resource_type, _, resource_id = (resource or "").partition("/")
    entry = AuditEntry(
        seq=head.seq + 1,
        id=new_id(),
        at=utcnow(),
        actor=actor,
        token_id=token_id,
        action=action,
        method=method,
        path=path[:2000],
        resource=resource,
        resource_type=resource_type or None,
        resource_id=resource_id or None,
        request_id=request_id,
        source=source,
        outcome=outcome,
        success=outcome < 400,
        version_before=versions[0],
        version_after=versions[1],
        project_id=project_id,
        author=author,
        break_glass=break_glass,
        prev_hash=head.hash,
    )
    entry.hash = chain.entry_hash(record(entry), keyed=entry.seq >= key.keyed_from)
    if entry.seq >= key.keyed_from:
        entry.mac = key.mac(entry.hash)
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    return entry


def append_request(
    session: Session,
    *,
    scope: Scope,
    status: int,
    request_id: str,
    versions: dict[str, tuple[int | None, int | None]] | None = None,
    projects: dict[str, str] | None = None,
) -> AuditEntry:
    """The entry of one finished mutating API request: who, which endpoint, on what (as the
    view named it, else the path's first two parts), from where, its status code, and the
    resource's version before and after (from `versions`, what the transaction changed) and
    project (from `projects`, likewise)."""
    state = scope["state"]
    principal = state.get("principal")
    route = scope.get("route")
    path = scope["path"]
    resource = state.get("audit_resource")
    if resource is None:
        parts = path.removeprefix(API_PREFIX).strip("/").split("/")
        resource = "/".join(parts[:2]) or None
    client = scope.get("client")
    resource_id = resource.partition("/")[2] if resource else ""
    return append(
        session,
        actor=principal.actor if principal else "anonymous",
        token_id=principal.token_id if principal else None,
        action=getattr(route, "name", None) or "unmatched",
        method=scope["method"],
        path=path,
        resource=resource,
        request_id=request_id,
        source=client[0] if client else None,
        outcome=status,
        versions=(versions or {}).get(resource_id, (None, None)),
        project_id=(projects or {}).get(resource_id),
        # Noted by the route: app/changes (an approval, a break-glass write).
        author=state.get("audit_author"),
        break_glass=state.get("audit_break_glass"),
    )


def _versions(obj: Any, *, new: bool, deleted: bool) -> tuple[str, int | None, int | None] | None:
    """(id, version before, version after) of a versioned row, from what the session already
    holds: this runs inside a flush, where loading an expired attribute must not happen."""
    state = inspect(obj)
    resource_id, version = state.dict.get("id"), state.dict.get("version")
    if not isinstance(resource_id, str) or not isinstance(version, int):
        return None
    history = state.attrs.version.history
    stored = history.deleted[0] if history.deleted else version
    if new:
        return resource_id, None, version
    return resource_id, stored, None if deleted else version


@event.listens_for(Session, "after_flush")
def _capture_versions(session: Session, _context: Any) -> None:
    """Note the version of each versioned row a request's transaction creates, changes or
    deletes, while the flush still knows what it was: the entry names which one is its
    resource only later (the view may name it after the first flush)."""
    if pending_audit.get() is None:
        return
    versions = session.info.setdefault(_VERSIONS, {})
    projects = session.info.setdefault(_PROJECTS, {})
    for obj in (*session.new, *session.dirty, *session.deleted):
        state = inspect(obj).dict
        if isinstance(state.get("project_id"), str) and isinstance(state.get("id"), str):
            projects[state["id"]] = state["project_id"]
        found = _versions(obj, new=obj in session.new, deleted=obj in session.deleted)
        if found is None:
            continue
        resource_id, before, after = found
        first = versions.get(resource_id)
        versions[resource_id] = (first[0] if first else before, after)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_versions(session: Session) -> None:
    session.info.pop(_VERSIONS, None)
    session.info.pop(_PROJECTS, None)


@event.listens_for(Session, "before_commit")
def _append_in_transaction(session: Session) -> None:
    """A mutating request's entry goes into the transaction that makes its change, so the
    change and its entry commit together or not at all: an entry that cannot be written fails
    the commit (fail closed), and no crash between them can leave a change unaudited."""
    pending = pending_audit.get()
    if pending is None or pending.written or session.in_nested_transaction():
        # A savepoint's release fires this hook too, but the request's transaction, and what
        # the route notes for its entry, is not done yet (an approval applies in a savepoint).
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    if not recorder.changed(session):
        return  # a read, idempotency bookkeeping: not the request's change
    # The response is not sent yet; the route's success status is the one it is about to send.
    # A write held as a change request answers 202 whatever the route's own status.
    status = (
        pending.scope["state"].get("audit_status")
        or getattr(pending.scope.get("route"), "status_code", None)
        or 200
    )
    append_request(
        session,
        scope=pending.scope,
        status=status,
        request_id=pending.request_id,
        versions=session.info.get(_VERSIONS),
        projects=session.info.get(_PROJECTS),
    )
    pending.written = True


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad: int | None
    detail: str | None
    pruned_through: int = 0


def prune_mac(key: chain.AuditKeys, *, through_seq: int, hash_: str) -> str:
    # A message no entry's MAC covers (entry MACs are over bare hex hashes), so an entry's
    # MAC cannot be passed off as a prune record's.
    return key.mac(f"prune:{through_seq}:{hash_}")


def chain_start(session: Session, key: chain.AuditKeys) -> tuple[int, str] | str:
    """Where the chain in the database begins: (seq, hash) of the entry before its first,
    the genesis or the last pruned one; or why the newest prune record is not to be
    trusted."""
    pruned = session.execute(
        select(AuditPrune).order_by(AuditPrune.through_seq.desc()).limit(1)
    ).scalar_one_or_none()
    if pruned is None:
        return 0, GENESIS
    if not hmac.compare_digest(
        prune_mac(key, through_seq=pruned.through_seq, hash_=pruned.hash), pruned.mac
    ):
        return (
            f"the record of the prune through entry {pruned.through_seq} "
            "was not made with the audit key"
        )
    return pruned.through_seq, pruned.hash


def check_entry(key: chain.AuditKeys, entry: AuditEntry) -> str | None:
    """Why `entry` does not match its own hash and MAC, or None."""
    keyed = entry.seq >= key.keyed_from
    if chain.entry_hash(record(entry), keyed=keyed) != entry.hash:
        return "entry content does not match its hash"
    if keyed and not chain.mac_matches(key.mac_key, entry.hash, entry.mac):
        return "entry hash does not match its MAC: rewritten without the audit key"
    return None


def check_next(
    key: chain.AuditKeys, entry: AuditEntry, *, seq: int, prev_hash: str | None
) -> tuple[int, str] | None:
    """The first bad seq and why, if `entry` is not the chain's entry `seq` following an entry
    whose hash is `prev_hash` (None: the first of an export, whose predecessor is not known)."""
    if entry.seq != seq:
        return seq, f"entry {seq} is missing"
    if prev_hash is not None and entry.prev_hash != prev_hash:
        return seq, "chain broken before this entry"
    problem = check_entry(key, entry)
    return None if problem is None else (seq, problem)


def verify(session: Session, *, batch: int = 1000) -> Verification:
    """Walk the chain in order, from the genesis or the last keyed prune record; report the
    first entry that was edited, removed or moved, or rewritten with fresh hashes (its MAC,
    made with a key the database never held, differs)."""
    key = keys.of(session)
    start = chain_start(session, key)
    if isinstance(start, str):
        return Verification(False, 0, 1, start)
    pruned_through, prev_hash = start
    expected_seq, count, last_seq = pruned_through + 1, 0, pruned_through

    def failed(seq: int, detail: str) -> Verification:
        return Verification(False, count, seq, detail, pruned_through)

    while True:
        rows = entries_after(session, after=last_seq, limit=batch)
        for entry in rows:
            problem = check_next(key, entry, seq=expected_seq, prev_hash=prev_hash)
            if problem is not None:
                return failed(*problem)
            prev_hash, last_seq = entry.hash, entry.seq
            expected_seq += 1
            count += 1
        if len(rows) < batch:
            break
    head = session.get(AuditHead, keys.HEAD_ID)
    if head is not None and (head.seq != last_seq or head.hash != prev_hash):
        return failed(last_seq + 1, "newest entries were removed")
    if last_seq + 1 < key.keyed_from:
        # The key file says keyed entries were written; they are gone (or the file is not this
        # database's).
        return failed(last_seq + 1, "the keyed part of the chain is missing")
    return Verification(True, count, None, None, pruned_through)


def entries_after(
    session: Session, *, after: int, limit: int, upto: int | None = None
) -> Sequence[AuditEntry]:
    """Up to `limit` entries with seq above `after` (and at most `upto`), oldest first."""
    statement = select(AuditEntry).where(AuditEntry.seq > after)
    if upto is not None:
        statement = statement.where(AuditEntry.seq <= upto)
    return session.execute(statement.order_by(AuditEntry.seq).limit(limit)).scalars().all()


def seq_range(
    session: Session, *, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """The first and last seq written within [since, until), or None. An export streams the
    whole run of the chain between them, so its links can be checked even should the clock
    have stepped back in between."""
    statement = select(func.min(AuditEntry.seq), func.max(AuditEntry.seq))
    if since is not None:
        statement = statement.where(AuditEntry.at >= since)
    if until is not None:
        statement = statement.where(AuditEntry.at < until)
    first, last = session.execute(statement).one()
    return None if first is None else (first, last)


def entry(session: Session, *, seq: int) -> AuditEntry:
    found = session.get(AuditEntry, seq)
    if found is None:
        raise NotFound(f"audit entry {seq} not found")
    return found


def checkpoint(session: Session, *, entry: AuditEntry | None = None) -> dict[str, Any]:
    """A signed checkpoint of `entry` (default: the chain's head). The entry is checked
    against its hash and MAC first: Berth never signs a chain rewritten without the key (its
    hash chain covers every earlier entry, so the newest entry's MAC vouches for them all)."""
    key = keys.of(session)
    if entry is None:
        head = session.get(AuditHead, keys.HEAD_ID)
        entry = session.get(AuditEntry, head.seq) if head is not None and head.seq else None
        if head is not None and head.seq and (entry is None or entry.hash != head.hash):
            raise Conflict("the audit chain's head does not match its newest entry")
    if entry is None:
        return key.checkpoint(seq=0, hash_=GENESIS, at=utcnow().isoformat())
    problem = check_entry(key, entry)
    if problem is not None:
        raise Conflict(f"audit entry {entry.seq}: {problem}; see GET /audit/verify")
    return key.checkpoint(seq=entry.seq, hash_=entry.hash, at=utcnow().isoformat())


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
    projects: frozenset[str] | None = None,
) -> tuple[Sequence[AuditEntry], str | None]:
    """A page of entries; with `projects`, only those of these projects."""
    statement = select(AuditEntry)
    if projects is not None:
        statement = statement.where(AuditEntry.project_id.in_(sorted(projects)))
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

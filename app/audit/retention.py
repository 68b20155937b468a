"""Audit retention: entries older than `BERTH_AUDIT_RETENTION_DAYS` leave the database, but
only up to a signed checkpoint Berth has handed out (so the pruned range is vouched for by a
head that may be kept outside), only once that range verifies (pruning never destroys the
evidence of a rewrite), and with a keyed prune record where `verify` picks the chain up."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.audit import keys, service
from app.audit.models import AuditCheckpointIssued, AuditEntry, AuditPrune
from app.core.db import Database

log = logging.getLogger(__name__)

# Entries checked per read transaction while a range is verified before it is pruned.
_VERIFY_BATCH = 1000


def remember_issued(session: Session, *, seq: int, hash_: str) -> None:
    """Note that a signed checkpoint of entry `seq` left Berth."""
    if seq > 0:
        session.execute(
            Database.of(session).insert_ignore(AuditCheckpointIssued).values(seq=seq, hash=hash_)
        )


def _target(session: Session, *, older_than: datetime, after: int) -> AuditCheckpointIssued | None:
    """The newest issued checkpoint past `after` whose entry and every earlier one are older
    than `older_than`."""
    newest_old = session.execute(
        select(func.max(AuditEntry.seq)).where(AuditEntry.at < older_than)
    ).scalar_one_or_none()
    if newest_old is None or newest_old <= after:
        return None
    return session.execute(
        select(AuditCheckpointIssued)
        .where(AuditCheckpointIssued.seq > after, AuditCheckpointIssued.seq <= newest_old)
        .order_by(AuditCheckpointIssued.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def _range_problem(db: Database, *, start: tuple[int, str], through: int) -> str | None:
    """Why entries (start, through] do not verify, or None; read in short transactions, so the
    write lock is not held while a long range is walked."""
    seq, prev_hash = start
    while seq < through:
        with db.session(write=False) as session:
            key = keys.of(session)
            rows = service.entries_after(session, after=seq, upto=through, limit=_VERIFY_BATCH)
            if not rows:
                return f"entry {seq + 1} is missing"
            for entry in rows:
                problem = service.check_next(key, entry, seq=seq + 1, prev_hash=prev_hash)
                if problem is not None:
                    return f"entry {problem[0]}: {problem[1]}"
                seq, prev_hash = entry.seq, entry.hash
    return None


def prune(db: Database, *, older_than: datetime) -> int | None:
    """Prune what retention allows; the last pruned seq, or None when nothing was."""
    with db.session(write=False) as session:
        start = service.chain_start(session, keys.of(session))
        if isinstance(start, str):
            log.error("audit retention: not pruning, %s", start)
            return None
        target = _target(session, older_than=older_than, after=start[0])
        if target is None:
            return None
        through, checkpoint_hash = target.seq, target.hash
    problem = _range_problem(db, start=start, through=through)
    if problem is None:
        with db.session(write=False) as session:
            last = session.get(AuditEntry, through)
            if last is None or last.hash != checkpoint_hash:
                problem = f"entry {through} does not match the checkpoint issued for it"
    if problem is not None:
        log.error("audit retention: not pruning a chain that fails verification (%s)", problem)
        return None
    with db.session() as session:
        # The prune is itself an entry; appending first locks the chain's head, so two
        # processes pruning at once take turns, and the second finds the work done.
        service.append(
            session,
            actor="berth",
            token_id=None,
            action="prune_audit",
            method="SYSTEM",
            path="audit retention",
            resource=f"audit/through-{through}",
            request_id=None,
            source=None,
            outcome=200,
        )
        key = keys.of(session)
        if service.chain_start(session, key) != start:
            session.rollback()
            return None
        session.execute(delete(AuditEntry).where(AuditEntry.seq <= through))
        session.add(
            AuditPrune(
                through_seq=through,
                hash=checkpoint_hash,
                mac=service.prune_mac(key, through_seq=through, hash_=checkpoint_hash),
            )
        )
    log.info("audit retention: pruned entries up to %d", through)
    return through

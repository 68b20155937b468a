"""Where a process keeps its audit keys: loaded once at start-up, per database, from a file
outside the database (`BERTH_AUDIT_KEY_FILE`)."""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import AuditKeys
from app.audit.models import AuditEntry, AuditHead
from app.core.db import Database
from app.security.crypto import KeyUnavailable, publish_private_file

HEAD_ID = 1
_loaded: WeakKeyDictionary[Database, AuditKeys] = WeakKeyDictionary()


def load(db: Database, path: Path) -> AuditKeys:
    """Read the key file; create it (0600) only while no entry is keyed yet. A new key starts
    the keyed chain after the entries already there, which keep their plain hashes."""
    with db.session(write=False) as session:
        keyed = session.execute(
            select(AuditEntry.seq).where(AuditEntry.mac.is_not(None)).limit(1)
        ).first()
        head = session.get(AuditHead, HEAD_ID)
        head_seq = head.seq if head is not None else 0
    if path.exists():
        keys = AuditKeys.parse(path.read_bytes())
    elif keyed is not None:
        raise KeyUnavailable(
            f"audit key file {path} is missing but the audit trail holds keyed entries; "
            "restore the key file or set BERTH_AUDIT_KEY_FILE to it"
        )
    else:
        fresh = AuditKeys.generate(keyed_from=head_seq + 1).dump()
        keys = AuditKeys.parse(publish_private_file(path, fresh))
    _loaded[db] = keys
    return keys


def of(session: Session) -> AuditKeys:
    """The keys of the session's database; none loaded is an error, so that an entry is never
    written unkeyed (the commit that needed it fails instead)."""
    keys = _loaded.get(Database.of(session))
    if keys is None:
        raise RuntimeError("the audit keys are not loaded (runtime.prepare at start-up)")
    return keys

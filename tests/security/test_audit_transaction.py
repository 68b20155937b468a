"""The audit entry of a change commits with the change, in one transaction: no entry, no change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.core.config import Settings
from app.core.db import Database
from app.hosts.models import Host
from app.main import create_app
from tests.support import Api

HOST = {"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True}

_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_audit() RETURNS trigger AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ],
}
_ALLOW = {
    "sqlite": ["DROP TRIGGER refuse_audit"],
    "postgresql": [
        "DROP TRIGGER refuse_audit ON audit_entries",
        "DROP FUNCTION refuse_audit()",
    ],
}


def _run(db: Database, statements: list[str]) -> None:
    with db.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


@pytest.fixture
def refusing_audit(db: Database) -> Iterator[None]:
    dialect = db.engine.dialect.name
    _run(db, _REFUSE[dialect])
    yield
    _run(db, _ALLOW[dialect])


def test_a_change_whose_audit_entry_fails_is_not_made(
    settings: Settings, db: Database, refusing_audit: None
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = Api(client, db)
        response = api.post("/hosts", json=HOST)
        # Whatever the database calls the refusal (a constraint on SQLite), the change fails.
        assert response.status_code >= 400, response.text
        assert api.get("/hosts").json()["items"] == []


def test_the_entry_commits_in_the_changes_transaction(api: Api) -> None:
    committed: list[set[type[Any]]] = []

    def seen(session: Session, _context: Any) -> None:
        session.info.setdefault("test.types", set()).update(type(o) for o in session.new)

    def done(session: Session) -> None:
        committed.append(session.info.pop("test.types", set()))

    event.listen(Session, "after_flush", seen)
    event.listen(Session, "after_commit", done)
    try:
        host = api.post("/hosts", json=HOST)
    finally:
        event.remove(Session, "after_flush", seen)
        event.remove(Session, "after_commit", done)
    assert host.status_code == 201
    assert [AuditEntry in types for types in committed if Host in types] == [True]
    assert not any(types == {AuditEntry} for types in committed)  # no entry of its own
    with api.db.session(write=False) as session:
        entry = session.execute(select(AuditEntry)).scalar_one()
    assert (entry.action, entry.outcome, entry.resource) == (
        "create_host",
        201,
        f"hosts/{host.json()['id']}",
    )
    assert api.get("/audit/verify").json()["ok"]

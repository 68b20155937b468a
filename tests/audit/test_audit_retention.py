"""Audit retention: entries leave only up to a checkpoint that was handed out, only once their
range verifies, and verification still spans the pruned range through a keyed prune record."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from app.audit import chain, keys, retention
from app.audit.models import AuditEntry, AuditPrune
from app.audit.verify_export import verify_file
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.runtime import Housekeeping
from tests.support import Api

HOST = {"url": "tcp://10.203.0.2:2375", "insecure": True}
# Everything written so far counts as old.
EVERYTHING = timedelta(days=1)


@pytest.fixture(autouse=True)
def _keys_for_the_test_database(api: Api, db: Database, settings: Settings) -> None:
    """The server loaded its audit keys for its own engine; pruning from the test's needs
    them as well (the same key file)."""
    keys.load(db, settings.effective_audit_key_file)


def _hosts(api: Api, count: int) -> None:
    for i in range(count):
        response = api.post("/hosts", json={"name": f"r{i}-{utcnow().timestamp()}", **HOST})
        assert response.status_code == 201, response.text


def _seqs(db: Database) -> list[int]:
    with db.session(write=False) as session:
        return list(session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars())


def _checkpoint(api: Api) -> int:
    response = api.get("/audit/checkpoint")
    assert response.status_code == 200, response.text
    seq: int = response.json()["seq"]
    return seq


def test_nothing_is_pruned_before_a_checkpoint_has_been_handed_out(api: Api, db: Database) -> None:
    _hosts(api, 3)
    assert retention.prune(db, older_than=utcnow() + EVERYTHING) is None
    assert _seqs(db) == [1, 2, 3]


def test_pruning_stops_at_the_checkpoint_and_verification_spans_the_pruned_range(
    api: Api, db: Database, tmp_path: Path
) -> None:
    _hosts(api, 3)
    checkpointed = _checkpoint(api)
    assert checkpointed == 3
    _hosts(api, 2)  # entries 4 and 5: newer than the checkpoint, so they stay

    assert retention.prune(db, older_than=utcnow() + EVERYTHING) == 3
    # The prune is an entry of its own (6), by Berth.
    assert _seqs(db) == [4, 5, 6]
    verdict = api.get("/audit/verify").json()
    assert verdict == {
        "ok": True,
        "entries": 3,
        "first_bad": None,
        "detail": None,
        "pruned_through": 3,
    }
    prune_entry = api.get("/audit").json()["items"][-1]
    assert (prune_entry["actor"], prune_entry["action"]) == ("berth", "prune_audit")
    # Nothing new to prune up to: a second pass is a no-op.
    assert retention.prune(db, older_than=utcnow() + EVERYTHING) is None
    # What is left still exports and verifies offline.
    path = tmp_path / "after-prune.jsonl"
    path.write_bytes(api.get("/audit/export").content)
    public_key = chain.load_public_key(api.get("/audit/public-key").json()["public_key"])
    assert verify_file(path, public_key=public_key).ok
    assert [json.loads(line)["seq"] for line in path.read_bytes().splitlines()] == [4, 5, 6, 6]


def test_a_range_that_fails_verification_is_not_pruned(api: Api, db: Database) -> None:
    _hosts(api, 3)
    _checkpoint(api)
    with db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="someone"))
    assert retention.prune(db, older_than=utcnow() + EVERYTHING) is None
    assert _seqs(db) == [1, 2, 3]


def test_a_forged_or_removed_prune_record_fails_verification(api: Api, db: Database) -> None:
    _hosts(api, 2)
    _checkpoint(api)
    _hosts(api, 2)
    assert retention.prune(db, older_than=utcnow() + EVERYTHING) == 2
    # Someone with database access hides entries 3 and 4 by claiming a later prune, with a
    # record they cannot key.
    with db.session() as session:
        hidden = session.get(AuditEntry, 4)
        assert hidden is not None
        session.execute(delete(AuditEntry).where(AuditEntry.seq <= 4))
        session.execute(
            update(AuditPrune).values(
                through_seq=4, hash=hidden.hash, mac=chain.mac(b"guessed", hidden.hash)
            )
        )
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False and "audit key" in verdict["detail"]
    # Without any prune record, the chain visibly starts too late.
    with db.session() as session:
        session.execute(delete(AuditPrune))
    verdict = api.get("/audit/verify").json()
    assert (verdict["ok"], verdict["first_bad"], verdict["detail"]) == (
        False,
        1,
        "entry 1 is missing",
    )


def test_housekeeping_prunes_what_the_retention_setting_allows(
    api: Api, db: Database, settings: Settings
) -> None:
    _hosts(api, 2)
    exported = api.get("/audit/export")  # an export's final checkpoint counts as handed out
    assert exported.status_code == 200
    assert json.loads(exported.content.splitlines()[-1])["type"] == "checkpoint"
    kept = settings.model_copy(update={"audit_retention_days": 365})
    Housekeeping(AppContext(kept, db)).run_once()
    assert _seqs(db) == [1, 2]  # younger than a year
    # Ageing the entries in place would break their hashes; a retention shorter than their
    # age does the same for the test (0.1 s).
    time.sleep(0.2)
    briefly_kept = settings.model_copy(update={"audit_retention_days": 0.1 / 86400})
    Housekeeping(AppContext(briefly_kept, db)).run_once()
    with db.session(write=False) as session:
        assert session.execute(select(func.min(AuditEntry.seq))).scalar_one() == 3
    assert api.get("/audit/verify").json()["pruned_through"] == 2

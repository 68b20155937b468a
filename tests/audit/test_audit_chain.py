"""The keyed audit chain: PCI DSS 10.2.2 fields on every entry, a rewrite without the key
detected, signed checkpoints, and an export checked offline with only the public key."""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.audit import chain
from app.audit import router as audit_router
from app.audit.models import AuditEntry, AuditHead
from app.audit.verify_export import main as verify_export_main
from app.audit.verify_export import verify_file
from app.core.config import Settings
from app.core.db import Database, new_id, utcnow
from app.main import create_app
from app.security.crypto import KeyUnavailable
from app.security.roles import Role
from tests.support import Api

HOST = {"url": "tcp://10.203.0.2:2375", "insecure": True}


def _hosts(api: Api, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = api.post("/hosts", json={"name": f"h{i}", **HOST})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def _entries(db: Database) -> list[AuditEntry]:
    with db.session(write=False) as session:
        return list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())


def _export(api: Api, path: Path, **params: str) -> list[dict[str, Any]]:
    response = api.get("/audit/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    path.write_bytes(response.content)
    return [json.loads(line) for line in response.content.splitlines()]


def _public_key(api: Api) -> str:
    body = api.get("/audit/public-key").json()
    assert body["algorithm"] == "Ed25519"
    key: str = body["public_key"]
    return key


def test_an_entry_carries_the_pci_fields_for_a_success_and_a_refusal(api: Api) -> None:
    (host_id,) = _hosts(api, 1)
    changed = api.patch(f"/hosts/{host_id}", json={"name": "renamed"})
    assert changed.status_code == 200, changed.text
    refused = api.post("/hosts", json={"name": "x", **HOST}, role=Role.viewer)
    assert refused.status_code == 403
    invalid = api.patch(f"/hosts/{host_id}", json={"name": "x", "unknown": 1})
    assert invalid.status_code == 422
    assert api.delete(f"/hosts/{host_id}").status_code == 204
    items = api.get("/audit").json()["items"]
    created, renamed, forbidden, rejected, deleted = items
    admin = api.get("/tokens").json()["items"]
    assert created["token_id"] and created["token_id"] in {t["id"] for t in admin}
    assert created["actor"].endswith(f"({created['token_id']})")
    pci = ("action", "success", "outcome", "source", "resource_type", "resource_id")
    assert [created[k] for k in pci] == ["create_host", True, 201, "testclient", "hosts", host_id]
    assert (created["version_before"], created["version_after"]) == (None, 1)
    assert [renamed[k] for k in pci] == ["update_host", True, 200, "testclient", "hosts", host_id]
    assert (renamed["version_before"], renamed["version_after"]) == (1, 2)
    assert forbidden["token_id"] and forbidden["actor"].startswith("test-viewer")
    assert [forbidden[k] for k in pci] == [
        "create_host",
        False,
        403,
        "testclient",
        "hosts",
        None,
    ]
    assert [rejected[k] for k in ("success", "outcome", "resource_id")] == [False, 422, host_id]
    # Nothing changed: no version to speak of.
    assert (rejected["version_before"], rejected["version_after"]) == (None, None)
    assert (deleted["version_before"], deleted["version_after"]) == (2, None)
    assert all(entry["at"] and entry["mac"] for entry in items)
    assert api.get("/audit/verify").json()["ok"]


def test_rows_rewritten_and_rechained_without_the_key_fail_verification(
    api: Api, db: Database
) -> None:
    _hosts(api, 4)
    # What someone with write access to the database (but not the key file) can do: edit an
    # entry, then recompute every hash after it and the head, so that the plain chain holds.
    with db.session() as session:
        entries = list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())
        entries[1].actor = "someone else"
        prev_hash = entries[0].hash
        for entry in entries[1:]:
            entry.prev_hash = prev_hash
            record = {**_record(entry), "prev_hash": prev_hash}
            entry.hash = chain.entry_hash(record, keyed=True)
            # A MAC made with a guessed key is as good as none.
            entry.mac = chain.mac(b"guessed", entry.hash)
            prev_hash = entry.hash
        session.execute(update(AuditHead).values(hash=prev_hash))
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False
    assert verdict["first_bad"] == 2
    assert "MAC" in verdict["detail"]
    # Berth signs no checkpoint over a rewritten chain.
    assert api.get("/audit/checkpoint").status_code == 409


def _record(entry: AuditEntry) -> dict[str, Any]:
    values = {name: getattr(entry, name) for name in chain.KEYED_FIELDS}
    return {**values, "at": entry.at.isoformat(), "prev_hash": entry.prev_hash}


def test_an_export_verifies_offline_with_the_public_key_and_a_tampered_line_fails(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    _hosts(api, 3)
    public_key = chain.load_public_key(_public_key(api))
    path = tmp_path / "audit.jsonl"
    lines = _export(api, path)
    assert [line["type"] for line in lines] == ["entry"] * 3 + ["checkpoint"]
    assert lines[-1]["seq"] == 3 and lines[-1]["hash"] == lines[2]["hash"]
    assert verify_file(path, public_key=public_key).ok
    keys = chain.AuditKeys.parse(settings.effective_audit_key_file.read_bytes())
    with_macs = verify_file(path, public_key=public_key, keys=keys)
    assert with_macs.ok and with_macs.macs_checked and with_macs.entries == 3

    def tampered(change: Callable[[list[dict[str, Any]]], None]) -> Path:
        copy = [dict(line) for line in lines]
        change(copy)
        out = tmp_path / f"tampered-{new_id()}.jsonl"
        out.write_text("".join(json.dumps(line) + "\n" for line in copy))
        return out

    def edit(copy: list[dict[str, Any]]) -> None:
        copy[1]["actor"] = "nobody"

    def edit_and_rehash(copy: list[dict[str, Any]]) -> None:
        # Edited, and every later hash recomputed: the signed head no longer matches.
        copy[1]["actor"] = "nobody"
        for before, line in itertools.pairwise(copy[:3]):
            line["prev_hash"] = before["hash"]
            line["hash"] = chain.entry_hash(line, keyed=True)

    def drop_checkpoint(copy: list[dict[str, Any]]) -> None:
        copy.pop()

    def forge_checkpoint(copy: list[dict[str, Any]]) -> None:
        copy[-1]["seq"] = 2
        copy[-1]["hash"] = copy[1]["hash"]

    for change, first_bad in (
        (edit, 2),
        (edit_and_rehash, 3),
        (drop_checkpoint, 1),
        (forge_checkpoint, None),
    ):
        verdict = verify_file(tampered(change), public_key=public_key)
        assert not verdict.ok, change.__name__
        if first_bad is not None:
            assert verdict.first_bad == first_bad, (change.__name__, verdict)
    # The command an examiner runs: exit 0 for the export, 1 for a tampered copy.
    key_file = tmp_path / "public.key"
    key_file.write_text(_public_key(api))
    assert verify_export_main([str(path), "--public-key", str(key_file)]) == 0
    assert verify_export_main([str(tampered(edit)), "--public-key", str(key_file)]) == 1


def test_the_export_streams_a_time_range(
    api: Api, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hosts(api, 5)
    entries = _entries(db)
    since, until = entries[1].at, entries[4].at
    lines = _export(
        api, tmp_path / "range.jsonl", **{"from": since.isoformat(), "to": until.isoformat()}
    )
    assert [line["seq"] for line in lines if line["type"] == "entry"] == [2, 3, 4]
    assert lines[-1]["type"] == "checkpoint" and lines[-1]["seq"] == 4
    public_key = chain.load_public_key(_public_key(api))
    assert verify_file(tmp_path / "range.jsonl", public_key=public_key).ok
    # Read two entries at a time, the export is the same: every entry once, in order.
    monkeypatch.setattr(audit_router, "EXPORT_BATCH", 2)
    everything = _export(api, tmp_path / "all.jsonl")
    assert everything[:-1] == [{"type": "entry", **_as_exported(e)} for e in entries]
    assert everything[-1]["type"] == "checkpoint"
    empty = _export(api, tmp_path / "empty.jsonl", **{"from": utcnow().isoformat()})
    assert empty == []


def _as_exported(entry: AuditEntry) -> dict[str, Any]:
    return {**_record(entry), "hash": entry.hash, "mac": entry.mac}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-11-30T05:00:00Z", "to": "2026-11-30T04:00:00Z"},
        {"from": "2026-11-30T05:00:00"},  # no offset: not RFC 3339
        {"to": "yesterday"},
    ],
)
def test_a_bad_export_range_is_a_problem(api: Api, params: dict[str, str]) -> None:
    response = api.get("/audit/export", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_the_export_is_for_admins_only(api: Api) -> None:
    assert api.get("/audit/export", role=Role.operator).status_code == 403


def test_a_signed_checkpoint_of_the_head(api: Api) -> None:
    _hosts(api, 2)
    signed = api.get("/audit/checkpoint").json()
    head = api.get("/audit").json()["items"][-1]
    assert (signed["seq"], signed["hash"], signed["keyed_from"]) == (2, head["hash"], 1)
    assert chain.signature_matches(signed, chain.load_public_key(_public_key(api)))
    assert not chain.signature_matches(
        {**signed, "seq": 1}, chain.load_public_key(_public_key(api))
    )


def test_the_audit_key_file_is_private_and_never_replaced(
    settings_factory: Callable[..., Settings], db: Database, tmp_path: Path
) -> None:
    settings = settings_factory(audit_key_file=tmp_path / "keys" / "audit.key")
    with TestClient(create_app(settings)) as client:
        Api(client, db).post("/hosts", json={"name": "h", **HOST})
    path = settings.effective_audit_key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    # The database holds keyed entries: a new key would hide a rewrite, so Berth refuses.
    with (
        pytest.raises(KeyUnavailable, match="BERTH_AUDIT_KEY_FILE"),
        TestClient(create_app(settings)),
    ):
        pass


def test_entries_older_than_the_key_keep_their_plain_hashes(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    # Two entries as Berth wrote them before the chain was keyed (migration 0010).
    prev_hash = chain.GENESIS
    with db.session() as session:
        for seq in (1, 2):
            entry = AuditEntry(
                seq=seq,
                id=new_id(),
                at=utcnow(),
                actor="old (token)",
                action="create_host",
                method="POST",
                path="/api/v1/hosts",
                resource="hosts",
                request_id=None,
                source="10.0.0.1",
                outcome=201,
                prev_hash=prev_hash,
            )
            entry.hash = chain.entry_hash(_record(entry), keyed=False)
            session.add(entry)
            prev_hash = entry.hash
        session.add(AuditHead(id=1, seq=2, hash=prev_hash))
    with TestClient(create_app(settings)) as client:
        api = Api(client, db)
        _hosts(api, 1)
        assert api.get("/audit/verify").json() == {
            "ok": True,
            "entries": 3,
            "first_bad": None,
            "detail": None,
            "pruned_through": 0,
        }
        assert api.get("/audit/checkpoint").json()["keyed_from"] == 3
        path = tmp_path / "audit.jsonl"
        _export(api, path)
        public_key = chain.load_public_key(_public_key(api))
        keys = chain.AuditKeys.parse(settings.effective_audit_key_file.read_bytes())
        assert verify_file(path, public_key=public_key, keys=keys).ok
        # The plain part is still checked by its hashes.
        with db.session() as session:
            session.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(source="x"))
        verdict = api.get("/audit/verify").json()
        assert (verdict["ok"], verdict["first_bad"]) == (False, 1)


def test_an_audit_key_file_round_trips() -> None:
    keys = chain.AuditKeys.generate(keyed_from=7)
    again = chain.AuditKeys.parse(keys.dump())
    assert (again.mac_key, again.keyed_from, again.public_key) == (
        keys.mac_key,
        7,
        keys.public_key,
    )

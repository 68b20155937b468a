"""Tokens, roles on every endpoint, the audit chain, and secrets at rest."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from app.audit.models import AuditEntry
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.main import create_app
from app.runtime import ENCRYPTED_COLUMNS
from app.security.crypto import KeyUnavailable
from app.security.roles import Role
from tests.support import Api

PUBLIC = {"/healthz", "/readyz", "/metrics"}
# Mutations a viewer may not make; everything under /api/v1 that is not a GET.
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def api_routes(api: Api) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/v1, from its own OpenAPI document."""
    spec = api.client.get("/openapi.json").json()
    routes = []
    for template, operations in spec["paths"].items():
        if template.startswith("/api/v1"):
            path = re.sub(r"\{[^}]+\}", "x0", template)
            routes += [(method.upper(), path) for method in operations]
    return sorted(routes)


def test_every_endpoint_needs_a_token(api: Api) -> None:
    routes = api_routes(api)
    assert len(routes) >= 15
    for method, path in routes:
        response = api.client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        bad = api.client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, (method, path)


def test_viewers_cannot_mutate_anything(api: Api) -> None:
    mutating = [(m, p) for m, p in api_routes(api) if m in MUTATING]
    assert len(mutating) >= 8
    for method, path in mutating:
        response = api.client.request(method, path, headers=api.headers(Role.viewer))
        assert response.status_code == 403, (method, path, response.text)
        assert "role" in response.json()["detail"]


def test_public_endpoints_need_no_token(api: Api) -> None:
    for path in PUBLIC:
        assert api.client.get(path).status_code in (200, 503), path
    assert api.client.get("/metrics").text.count("berth_http_requests") > 0


def test_operators_are_not_admins(api: Api) -> None:
    assert (
        api.post("/tokens", role=Role.operator, json={"name": "x", "role": "admin"}).status_code
        == 403
    )
    assert (
        api.post(
            "/hosts",
            role=Role.operator,
            json={"name": "x", "url": "tcp://1.2.3.4:2375", "insecure": True},
        ).status_code
        == 403
    )
    assert api.get("/audit", role=Role.operator).status_code == 403
    assert (
        api.post("/debug/operations", role=Role.operator, json={"kind": "debug.noop"}).status_code
        == 202
    )


def test_token_lifecycle(api: Api) -> None:
    created = api.post("/tokens", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("berth_") and len(secret) > 40
    listed = api.get("/tokens").text
    assert secret not in listed and "token_hash" not in listed
    me = api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json() == {"token_id": created.json()["id"], "name": "ci", "role": "operator"}
    assert api.delete(f"/tokens/{created.json()['id']}").status_code == 204
    revoked = api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401


def test_expired_tokens_are_refused(api: Api, db: Database) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    created = api.post(
        "/tokens", json={"name": "short", "role": "viewer", "expires_at": soon.isoformat()}
    )
    assert created.status_code == 201
    past = datetime.now(UTC) - timedelta(days=1)
    assert (
        api.post(
            "/tokens", json={"name": "p", "role": "viewer", "expires_at": past.isoformat()}
        ).status_code
        == 422
    )
    from app.tokens.models import ApiToken

    with db.session() as session:
        session.execute(
            update(ApiToken).where(ApiToken.id == created.json()["id"]).values(expires_at=past)
        )
    response = api.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {created.json()['token']}"}
    )
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_every_mutation_is_audited(api: Api) -> None:
    host = api.post(
        "/hosts",
        json={"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True},
        headers={"X-Request-ID": "req-audit-1"},
    ).json()
    api.post(
        "/hosts",
        role=Role.viewer,
        json={"name": "v", "url": "tcp://10.203.0.2:2375", "insecure": True},
    )
    api.client.post("/api/v1/hosts", json={})
    entries = api.get("/audit").json()["items"]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("create_host", 201),
        ("create_host", 403),
        ("create_host", 401),
    ]
    first = entries[0]
    assert first["actor"].startswith("bootstrap")
    assert first["resource"] == f"hosts/{host['id']}"
    assert first["request_id"] == "req-audit-1"
    assert first["source"]
    assert entries[1]["actor"].startswith("test-viewer")
    assert entries[2]["actor"] == "anonymous"
    by_actor = api.get("/audit", params={"actor": first["actor"], "resource": "hosts/"}).json()
    assert [e["seq"] for e in by_actor["items"]] == [first["seq"]]
    verdict = api.get("/audit/verify").json()
    assert verdict == {
        "ok": True,
        "entries": 3,
        "first_bad": None,
        "detail": None,
        "pruned_through": 0,
    }


def _make_entries(api: Api, count: int) -> None:
    for i in range(count):
        api.post("/hosts", json={"name": f"h{i}", "url": "tcp://10.203.0.2:2375", "insecure": True})


def test_audit_verify_detects_an_edited_entry(api: Api, db: Database) -> None:
    _make_entries(api, 4)
    with db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="someone else"))
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False and verdict["first_bad"] == 2


def test_audit_verify_detects_a_removed_entry(api: Api, db: Database) -> None:
    _make_entries(api, 4)
    with db.session() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False and verdict["first_bad"] == 3


def test_audit_verify_detects_reordered_entries(api: Api, db: Database) -> None:
    _make_entries(api, 4)
    with db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(seq=-2))
        session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=2))
        session.execute(update(AuditEntry).where(AuditEntry.seq == -2).values(seq=3))
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False and verdict["first_bad"] == 2


def test_audit_verify_detects_dropped_newest_entries(api: Api, db: Database) -> None:
    _make_entries(api, 3)
    with db.session() as session:
        last = (
            session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()))
            .scalars()
            .first()
        )
        session.execute(delete(AuditEntry).where(AuditEntry.seq == last))
    verdict = api.get("/audit/verify").json()
    assert verdict["ok"] is False


def test_key_file_is_private_and_required_once_secrets_exist(
    api: Api, settings: Settings, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    key_file = settings.effective_key_file
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    tls = {
        "client_cert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
        "client_key": "-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----",
    }
    assert (
        api.post(
            "/hosts", json={"name": "t", "url": "tcp://127.0.0.1:2376", "tls": tls}
        ).status_code
        == 201
    )
    missing = settings_factory(key_file=tmp_path / "elsewhere" / "berth.key")
    context = AppContext(missing)
    with pytest.raises(KeyUnavailable, match="missing"):
        context.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    context.close()
    with pytest.raises(KeyUnavailable), TestClient(create_app(missing)):
        pass

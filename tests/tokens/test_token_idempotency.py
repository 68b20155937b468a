"""`Idempotency-Key` on the token routes: a replay needs a live token, and a response that
carried a secret is never stored."""

from __future__ import annotations

from sqlalchemy import select

from app.api.models import IdempotencyRecord
from app.security.roles import Role
from tests.support import Api


def test_a_new_tokens_secret_is_never_stored_for_a_replay(api: Api) -> None:
    key = {"Idempotency-Key": "new-token-1"}
    first = api.post("/tokens", json={"name": "ci", "role": "admin"}, headers=key)
    assert first.status_code == 201
    secret = first.json()["token"]
    with api.db.session(write=False) as session:
        records = session.execute(select(IdempotencyRecord)).scalars().all()
    assert len(records) == 1
    stored = records[0]
    assert stored.secret_withheld
    assert not stored.response_body
    assert secret not in repr(stored.response_headers)

    again = api.post("/tokens", json={"name": "ci", "role": "admin"}, headers=key)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "secret" in again.json()["detail"]
    assert secret not in again.text
    # The retry made no second token.
    names = [t["name"] for t in api.get("/tokens").json()["items"]]
    assert names.count("ci") == 1


def test_a_revoked_token_gets_no_replay(api: Api) -> None:
    made = api.post("/tokens", json={"name": "short-lived", "role": "operator"}).json()
    as_it = {"Authorization": f"Bearer {made['token']}", "Idempotency-Key": "op-1"}
    body = {"kind": "debug.noop"}
    first = api.post("/debug/operations", json=body, headers=as_it, role=None)
    assert first.status_code == 202
    assert api.delete(f"/tokens/{made['id']}").status_code == 204

    replay = api.post("/debug/operations", json=body, headers=as_it, role=None)
    assert replay.status_code == 401
    assert "idempotent-replayed" not in replay.headers
    # Another token's identical key is its own request, never the first one's answer.
    other = api.post(
        "/debug/operations", json=body, headers={"Idempotency-Key": "op-1"}, role=Role.operator
    )
    assert other.status_code == 202
    assert other.json()["operation"]["id"] != first.json()["operation"]["id"]

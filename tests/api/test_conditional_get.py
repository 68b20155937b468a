"""Conditional GET: a poller that sends back the ETag it was given hears 304 until the answer
changes (app/api/middleware/conditional.py)."""

from __future__ import annotations

from app.security.roles import Role
from tests.support import Api


def test_a_list_is_304_until_it_changes(api: Api) -> None:
    first = api.get("/tokens")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('W/"')

    again = api.get("/tokens", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert "content-type" not in again.headers
    assert again.headers["x-request-id"]
    # Unchanged: the same tag; a list of tags, or the tag sent strong, matches too.
    assert api.get("/tokens").headers["etag"] == etag
    assert api.get("/tokens", headers={"If-None-Match": f'"x", {etag}'}).status_code == 304
    assert api.get("/tokens", headers={"If-None-Match": etag[2:]}).status_code == 304

    assert api.post("/tokens", json={"name": "poller", "role": "viewer"}).status_code == 201
    changed = api.get("/tokens", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert any(t["name"] == "poller" for t in changed.json()["items"])
    assert api.get("/tokens", headers={"If-None-Match": changed.headers["etag"]}).status_code == 304


def test_a_get_is_304_until_it_changes(api: Api) -> None:
    me = api.get("/me", role=Role.viewer)
    assert me.status_code == 200
    assert (
        api.get("/me", role=Role.viewer, headers={"If-None-Match": me.headers["etag"]})
    ).status_code == 304

    verify = api.get("/audit/verify")
    etag = verify.headers["etag"]
    assert api.get("/audit/verify", headers={"If-None-Match": etag}).status_code == 304
    assert api.post("/tokens", json={"name": "audited", "role": "viewer"}).status_code == 201
    changed = api.get("/audit/verify", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["entries"] > verify.json()["entries"]


def test_a_versioned_get_keeps_its_version_and_is_answered_in_full(api: Api) -> None:
    """The version names the desired state (for If-Match); observed state changes without it,
    so If-None-Match never turns it into a 304."""
    created = api.post("/registries", json={"name": "r1", "url": "https://registry.example:5000"})
    assert created.status_code == 201, created.text
    path = f"/registries/{created.json()['id']}"
    get = api.get(path, headers={"If-None-Match": '"1"'})
    assert get.status_code == 200
    assert get.headers["etag"] == '"1"'
    assert get.json()["name"] == "r1"


def test_errors_and_other_methods_carry_no_content_etag(api: Api) -> None:
    missing = api.get("/hosts/nope", headers={"If-None-Match": "*"})
    assert missing.status_code == 404
    assert "etag" not in missing.headers
    created = api.post("/tokens", json={"name": "x", "role": "viewer"})
    assert "etag" not in created.headers

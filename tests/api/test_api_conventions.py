"""Conventions every endpoint shares: problem+json, request ids, limits, idempotency, docs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, insert, select, text

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.secrets.models import Secret
from app.security.roles import Role
from tests.support import BOOTSTRAP_TOKEN, Api, wait_for


def test_unknown_route_and_bad_json_are_problems(api: Api) -> None:
    missing = api.get("/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert set(missing.json()) >= {"type", "title", "status", "detail"}
    bad = api.post("/hosts", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["errors"]


def test_request_id_is_echoed_or_made(api: Api) -> None:
    echoed = api.get("/hosts", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = api.get("/hosts", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


def test_oversized_bodies_get_413_and_change_nothing(api: Api, settings: Settings) -> None:
    huge = {
        "name": "big",
        "url": "tcp://10.203.0.2:2375",
        "labels": {"k": "v" * settings.max_request_bytes},
    }
    response = api.post("/hosts", json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "url": "tcp://10.203.0.2:2375", "labels": {"k": "'
        for _ in range(settings.max_request_bytes // 65536 + 2):
            yield b"v" * 65536
        yield b'"}}'

    streamed = api.post("/hosts", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert api.get("/hosts").json()["items"] == []


def test_only_file_uploads_get_the_upload_limit(api: Api, settings: Settings) -> None:
    """/stacks takes build contexts, but a JSON body there is held to the JSON limit: 413
    before it is read, not parsed (a 200 MB one once grew the process by 600 MB)."""
    limit = settings.max_request_bytes
    compose = "services:\n  web:\n    image: busybox\n"
    body = {"name": "big", "compose": compose, "variables": {"PAD": "v" * (limit + 1)}}
    too_large = f"request body larger than {limit} bytes"
    for method, path in (("POST", "/stacks"), ("PUT", "/stacks/some-id")):
        response = api.request(method, path, json=body)
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == too_large

    def chunks() -> Iterator[bytes]:  # No Content-Length: counted as it streams.
        yield json.dumps(body).encode()

    streamed = api.post("/stacks", content=chunks(), headers={"content-type": "application/json"})
    assert (streamed.status_code, streamed.json()["detail"]) == (413, too_large)
    # A form field is no upload either, and neither is a Compose file sent as a file.
    fields = {"name": "big", "compose": compose, "variables": json.dumps(body["variables"])}
    form = api.post("/stacks", data=fields, files={"context.web": ("c.tar", b"x", "x/y")})
    assert form.status_code in (400, 413), form.text
    compose_file = ("compose.yaml", compose + "#" * settings.max_compose_bytes, "text/yaml")
    as_file = api.post("/stacks", data={"name": "big"}, files={"compose": compose_file})
    assert as_file.status_code == 413, as_file.text
    assert "the limit is 262144" in as_file.json()["detail"]
    # A build context larger than the JSON limit is an upload: past the limit, to the checks.
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    upload = api.post(
        "/stacks",
        data={"name": "big", "compose": "services:\n  web:\n    build: .\n", "host_id": host["id"]},
        files={"context.web": ("c.tar", b"\0" * (limit + 1), "application/x-tar")},
    )
    assert upload.status_code == 422, upload.text
    assert "compose.services.web.build" in upload.text
    assert api.get("/stacks").json()["items"] == []


def test_hostile_values_are_refused_not_crashed_on(api: Api) -> None:
    bodies: list[object] = [
        {"name": "x" * 10_000, "url": "tcp://10.203.0.2:2375"},
        {"name": "x", "url": "tcp://10.203.0.2:2375", "labels": ["not", "a", "dict"]},
        {"name": "x", "url": "unix:///tmp/\u0000evil"},
        {"name": None, "url": 5},
        [],
        "string",
    ]
    for body in bodies:
        response = api.post("/hosts", json=body)
        assert response.status_code == 422, (body, response.text)
    assert api.get("/hosts").json()["items"] == []
    assert api.get("/operations/" + "x" * 5000).status_code in (404, 414)


HOST = {"name": "h1", "url": "tcp://10.203.0.2:2375", "insecure": True}
CREATE_H1 = {"Idempotency-Key": "create-h1"}


def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    first = api.post("/hosts", json=HOST, headers=CREATE_H1)
    again = api.post("/hosts", json=HOST, headers=CREATE_H1)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert len(api.get("/hosts").json()["items"]) == 1


def test_idempotency_key_reused_for_a_different_request_is_a_409(api: Api) -> None:
    api.post("/hosts", json=HOST, headers=CREATE_H1)
    different = api.post("/hosts", json={**HOST, "name": "h2"}, headers=CREATE_H1)
    assert different.status_code == 409
    assert "different request" in different.json()["detail"]


def test_idempotency_keys_belong_to_their_caller(api: Api) -> None:
    api.post("/hosts", json=HOST, headers=CREATE_H1)
    # Another token's identical key is a new request.
    other = api.post(
        "/debug/operations", json={"kind": "debug.noop"}, headers=CREATE_H1, role=Role.operator
    )
    assert other.status_code == 202


def test_idempotency_key_replays_errors_too(api: Api) -> None:
    # A retry of a bad request stays the same bad request.
    bad_key = {"Idempotency-Key": "bad-1"}
    assert api.post("/hosts", json={"name": "!"}, headers=bad_key).status_code == 422
    assert (
        api.post("/hosts", json={"name": "!"}, headers=bad_key).headers["idempotent-replayed"]
        == "true"
    )


def test_an_overlong_idempotency_key_is_a_400(api: Api) -> None:
    assert api.post("/hosts", json=HOST, headers={"Idempotency-Key": "k" * 256}).status_code == 400


def test_idempotent_async_operation_is_queued_once(api: Api) -> None:
    key = {"Idempotency-Key": "op-1"}
    first = api.post("/debug/operations", json={"kind": "debug.noop"}, headers=key).json()
    second = api.post("/debug/operations", json={"kind": "debug.noop"}, headers=key).json()
    assert first["operation"]["id"] == second["operation"]["id"]
    assert len(api.get("/operations").json()["items"]) == 1


def test_openapi_describes_the_api(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/hosts" in spec["paths"]
    assert "/api/v1/operations/{operation_id}" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_readyz_needs_a_live_worker(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    with TestClient(create_app(settings_factory(), run_workers=False)) as client:
        assert client.get("/readyz").status_code == 503
    with TestClient(create_app(settings_factory())) as client:
        # The worker's first heartbeat is written by its own thread, maybe after this request.
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, what="a heartbeat")
        ready = client.get("/readyz")
        assert json.loads(ready.text)["workers"] >= 1


def test_metrics_report_requests_queue_and_hosts(api: Api) -> None:
    api.post("/hosts", json={"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True})
    operation = api.debug_operation("debug.noop")
    api.wait_operation(operation["id"])
    text = api.client.get("/metrics").text
    assert 'berth_http_requests_total{method="POST",route="/api/v1/hosts",status="201"}' in text
    assert "berth_http_request_duration_seconds_bucket" in text
    assert 'berth_operations{kind="debug.noop",status="succeeded"} 1.0' in text
    assert "berth_queue_depth" in text
    assert "berth_hosts{status=" in text


def test_metrics_can_require_a_token(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    with TestClient(create_app(settings_factory(metrics_require_token=True))) as client:
        assert client.get("/metrics").status_code == 401
        api = Api(client, db)
        assert client.get("/metrics", headers=api.headers(Role.viewer)).status_code == 200


def test_debug_operations_are_off_by_default(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings as a user gets them, from the environment, which says nothing about debug
    # operations; the test settings turn them on, so they cannot show the default.
    monkeypatch.delenv("BERTH_ENABLE_DEBUG_OPERATIONS", raising=False)
    monkeypatch.setenv("BERTH_DATABASE_URL", db.url)
    monkeypatch.setenv("BERTH_KEY_FILE", str(tmp_path / "berth.key"))
    monkeypatch.setenv("BERTH_BOOTSTRAP_TOKEN", BOOTSTRAP_TOKEN)
    monkeypatch.setenv("BERTH_REGISTER_LOCAL_HOST", "false")
    settings = Settings()
    assert settings.enable_debug_operations is False
    with TestClient(create_app(settings)) as client:
        api = Api(client, db)
        assert api.post("/debug/operations", json={"kind": "debug.noop"}).status_code == 404


def test_a_create_that_loses_a_race_is_a_409_not_a_500(api: Api, db: Database) -> None:
    """The request's own name check passes; a transaction that took the name first commits
    while the request writes. PostgreSQL then refuses the insert on the unique index."""
    answers: list[Response] = []
    with db.engine.connect() as rival:
        rival.execute(
            insert(Secret).values(
                id="01rival0000000000000000000", name="raced", value_encrypted="x", version=1
            )
        )
        body = {"name": "raced", "value": "v"}
        request = threading.Thread(target=lambda: answers.append(api.post("/secrets", json=body)))
        request.start()
        if db.engine.dialect.name == "postgresql":
            # Deterministic: commit only once the request's insert waits on the rival's row.
            # (SQLite's one writer makes the request wait at BEGIN and then see the name taken.)
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )

            def blocked() -> int:
                with db.engine.connect() as probe:  # a fresh snapshot of the activity view
                    return int(probe.execute(waiting).scalar_one())

            wait_for(blocked, timeout=10, what="the request's insert to wait")
        rival.commit()
        request.join(timeout=30)
    assert answers and answers[0].status_code == 409, answers and answers[0].text
    assert answers[0].headers["content-type"] == "application/problem+json"
    with db.session(write=False) as session:
        names = session.execute(select(func.count()).where(Secret.name == "raced")).scalar_one()
    assert names == 1

"""Secrets on a real engine: write-only and encrypted, delivered as files (or env when asked),
rotated by rolling the services that use them, and never seen in a response, a log or the
container's configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from app.core.db import Database
from app.models import Base
from app.security.roles import Role
from tests.support import HEALTHY, Api, Services, wait_for
from tests.testbed import Testbed

VALUE = "s3cr3t-Value-That-Must-Not-Leak-7f2c"
ROTATED = "r0tated-Value-That-Must-Not-Leak-91ab"
API_KEY = "api-key-delivered-as-env-5d1e"


def _exec(services: Services, svc: dict[str, Any], command: str) -> str:
    task = next(t for t in svc["tasks"] if t["desired_state"] == "running")
    docker_id = services.api.get(f"/containers/{task['container_id']}").json()["docker_id"]
    host = next(name for name, hid in services.hosts.items() if hid == task["host_id"])
    container = services.engines[host].containers.get(docker_id)
    result = container.exec_run(["sh", "-c", command])
    assert result.exit_code == 0, result.output
    assert isinstance(result.output, bytes)
    output: str = result.output.decode()
    return output


def _inspect(services: Services, svc: dict[str, Any]) -> dict[str, Any]:
    task = next(t for t in svc["tasks"] if t["desired_state"] == "running")
    docker_id = services.api.get(f"/containers/{task['container_id']}").json()["docker_id"]
    host = next(name for name, hid in services.hosts.items() if hid == task["host_id"])
    attrs: dict[str, Any] = services.engines[host].api.inspect_container(docker_id)
    return attrs


def _dump_database(db: Database) -> str:
    """Every row of every table, as text: what someone who steals the database file reads."""
    parts: list[str] = []
    with db.session(write=False) as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(text(f"SELECT * FROM {table.name}")).all()
            parts.extend(repr(tuple(row)) for row in rows)
    return "\n".join(parts)


def test_a_secret_shows_its_metadata_never_its_value(api: Api) -> None:
    created = api.post("/secrets", json={"name": "db_password", "value": VALUE})
    assert created.status_code == 201, created.text
    assert set(created.json()) == {
        "id",
        "name",
        "project",
        "version",
        "created_at",
        "updated_at",
        "used_by",
    }


def test_only_an_admin_manages_secrets_and_anyone_may_list_them(api: Api) -> None:
    refused = api.post("/secrets", json={"name": "x", "value": "y"}, role=Role.operator)
    assert refused.status_code == 403
    assert api.get("/secrets", role=Role.viewer).status_code == 200


def test_a_secret_name_is_taken_once(api: Api) -> None:
    assert api.post("/secrets", json={"name": "db_password", "value": VALUE}).status_code == 201
    duplicate = api.post("/secrets", json={"name": "db_password", "value": "other"})
    assert duplicate.status_code == 409


def test_a_service_naming_an_unknown_secret_is_a_422(api: Api, bed: Testbed) -> None:
    missing = api.post(
        "/services",
        json={"name": "no-such", "spec": {"image": bed.image, "secrets": [{"name": "nope"}]}},
    )
    assert missing.status_code == 422
    assert "nope" in missing.json()["detail"]


def test_secret_files_env_rotation_and_no_leaks(
    services: Services,
    api: Api,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """One scenario, not split: "never seen" must cover every response, log and row written
    over the secret's whole life, and only a test captures its own logs and output."""
    created = api.post("/secrets", json={"name": "db_password", "value": VALUE})
    assert created.status_code == 201, created.text
    secret = created.json()
    assert api.post("/secrets", json={"name": "api_key", "value": API_KEY}).status_code == 201

    body = services.create(
        replicas=1,
        healthcheck=HEALTHY,
        update_config={"monitor_s": 0.5, "order": "start-first"},
        secrets=[
            {"name": "db_password"},
            {"name": "db_password", "target": "app/db.pw", "mode": 0o400, "uid": 100},
            {"name": "api_key", "env": "API_KEY"},
        ],
    )
    service_id = body["service"]["id"]
    svc = services.settled(service_id, 1)

    assert _exec(services, svc, "cat /run/secrets/db_password") == VALUE
    assert _exec(services, svc, "stat -c '%a %u' /run/secrets/db_password").strip() == "444 0"
    assert _exec(services, svc, "cat /run/secrets/app/db.pw") == VALUE
    assert _exec(services, svc, "stat -c '%a %u' /run/secrets/app/db.pw").strip() == "400 100"
    assert _exec(services, svc, "echo -n $API_KEY") == API_KEY
    inspected = json.dumps(_inspect(services, svc))
    assert VALUE not in inspected  # a file secret is not in the container's config or env
    assert f"API_KEY={API_KEY}" in inspected  # an env secret is, as asked

    task = next(t for t in svc["tasks"] if t["desired_state"] == "running")
    shown = api.get(f"/containers/{task['container_id']}").json()["secrets"]
    assert [(r["name"], r["target"], r["env"]) for r in shown] == [
        ("db_password", None, None),
        ("db_password", "/run/secrets/app/db.pw", None),
        ("api_key", None, "API_KEY"),
    ]
    used = api.get(f"/secrets/{secret['id']}").json()
    assert used["used_by"] == [body["service"]["name"]]
    listed = {s["name"]: s["used_by"] for s in api.get("/secrets").json()["items"]}
    assert listed["db_password"] == [body["service"]["name"]]  # once, though named twice
    in_use = api.delete(f"/secrets/{secret['id']}")
    assert in_use.status_code == 409

    # Rotation: a new revision with the same spec rolls the replica; the file has the new value.
    rotated = api.request("PUT", f"/secrets/{secret['id']}", json={"value": ROTATED})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"]["version"] == 2
    [converge] = rotated.json()["operations"]
    assert api.wait_operation(converge["id"], timeout=60)["status"] == "succeeded"
    svc = services.settled(service_id, 1)
    assert svc["revision"] == 2
    assert _exec(services, svc, "cat /run/secrets/db_password") == ROTATED

    # Nowhere to be read: responses, operations and their logs, events, logs, the database.
    seen = [
        api.get(path).text
        for path in (
            "/secrets",
            f"/secrets/{secret['id']}",
            f"/services/{service_id}",
            f"/services/{service_id}/revisions",
            "/containers",
            "/operations?limit=500",
        )
    ]
    for operation in api.get("/operations?limit=500").json()["items"]:
        seen.append(api.get(f"/operations/{operation['id']}/logs").text)
    seen.append(rotated.text)
    seen.append(created.text)
    seen.append(caplog.text)
    out, err = capfd.readouterr()
    seen += [out, err]
    stored = _dump_database(db)
    for value in (VALUE, ROTATED):
        assert not any(value in text_ for text_ in seen)
        assert value not in stored
    assert API_KEY not in stored

    deleted = services.api.delete(f"/services/{service_id}")
    assert deleted.status_code == 202
    wait_for(
        lambda: services.api.get(f"/services/{service_id}").status_code == 404,
        timeout=60,
        what="service removed",
    )
    assert api.delete(f"/secrets/{secret['id']}").status_code == 204
    assert api.get(f"/secrets/{secret['id']}").status_code == 404

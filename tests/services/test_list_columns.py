"""`GET /services` reads its tasks as the columns the answer shows: a list of services with
thousands of replicas must not decode every replica's spec and labels. No engine involved."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from app.containers.models import Container
from app.core.config import Settings
from app.core.db import Database
from app.services.models import Service
from tests.statements import QuietApi, add_host


def test_listing_services_reads_no_task_spec(settings: Settings, db: Database) -> None:
    with db.session() as session:
        host = add_host(session, "host-columns")
        service = Service(name="columns", spec={"image": "busybox", "replicas": 1}, replicas=1)
        session.add(service)
        session.flush()
        task = Container(
            name="columns.1",
            host_id=host.id,
            service_id=service.id,
            slot=1,
            revision=1,
            spec={"image": "busybox", "env": {"BIG": "x" * 1000}},
            labels={"a": "b"},
            image="busybox",
            state="running",
        )
        session.add(task)
    api = QuietApi(settings, db)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(api.app_db.read_engine, "before_cursor_execute", record)
    try:
        response = api.get("/services")
    finally:
        event.remove(api.app_db.read_engine, "before_cursor_execute", record)

    assert response.status_code == 200, response.text
    [listed] = response.json()["items"]
    assert listed["replicas"] == {"desired": 1, "running": 1, "healthy": 1}
    assert listed["tasks"] == [
        {
            "slot": 1,
            "container_id": task.id,
            "host_id": host.id,
            "state": "running",
            "health": None,
            "revision": 1,
            "desired_state": "running",
            "error": None,
        }
    ]
    tasks_query = [s for s in statements if "FROM containers" in s]
    assert tasks_query, statements
    assert not any("containers.spec" in s or "containers.labels" in s for s in tasks_query)

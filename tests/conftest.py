"""Fixtures: a migrated database per backend, an app with its workers, tokens of every role.

`BERTH_TEST_DATABASE` picks the backend for the whole run: `sqlite` (default) or
`postgresql` (the testbed's). scripts/test.sh runs the suite once on each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import Database
from app.core.migrate import upgrade
from app.engine.docker_engine import DockerEngine
from app.main import create_app
from app.models import Base
from app.security.roles import Role
from app.tokens import service as tokens
from tests.testbed import Testbed, testbed

BOOTSTRAP_TOKEN = "berth_test_bootstrap_token_0123456789"


def backend() -> str:
    return os.environ.get("BERTH_TEST_DATABASE", "sqlite")


@pytest.fixture(scope="session")
def bed() -> Testbed:
    return testbed()


@pytest.fixture(scope="session")
def database_url(bed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the session; each test starts from empty tables."""
    if backend() == "postgresql":
        url = bed.pg_url
        database = Database(url)
        with database.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'berth.db'}"
        database = Database(url)
    upgrade(database)
    database.dispose()
    yield url


def clear_tables(url: str) -> None:
    database = Database(url)
    try:
        with database.session() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
    finally:
        database.dispose()


@pytest.fixture
def db_url(database_url: str) -> str:
    clear_tables(database_url)
    return database_url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def settings_factory(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "key_file": tmp_path / "berth.key",
            "bootstrap_token": BOOTSTRAP_TOKEN,
            "enable_debug_operations": True,
            "register_local_host": False,
            "host_probe_interval_seconds": 0.5,
            # A busy engine can be slow to answer; a dead one refuses at once anyway.
            "host_probe_timeout_seconds": 5,
            "host_unreachable_after": 2,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.2,
            "lease_seconds": 5,
            "image_sync_interval_seconds": 1,
            "reconcile_interval_seconds": 0.5,
            "host_down_grace_seconds": 3,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


class Api:
    """A TestClient with a token of each role, speaking the API as a user would."""

    def __init__(self, client: TestClient, db: Database) -> None:
        self.client = client
        self.db = db
        self.tokens = {Role.admin: BOOTSTRAP_TOKEN}
        with db.session() as session:
            for role in (Role.operator, Role.viewer):
                _, secret = tokens.create(session, name=f"test-{role.value}", role=role)
                self.tokens[role] = secret

    def headers(self, role: Role | None = Role.admin, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        role: Role | None = Role.admin,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        merged = self.headers(role)
        merged.update(headers or {})
        response: httpx.Response = self.client.request(
            method, f"/api/v1{path}", headers=merged, **kwargs
        )
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def wait_operation(self, operation_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, min(10.0, deadline - time.monotonic()))
            response = self.get(f"/operations/{operation_id}", params={"wait": left})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                return body
            if time.monotonic() >= deadline:
                raise AssertionError(f"operation still {body['status']} after {timeout}s: {body}")

    def debug_operation(self, kind: str, **fields: Any) -> dict[str, Any]:
        response = self.post("/debug/operations", json={"kind": kind, **fields})
        assert response.status_code == 202, response.text
        operation: dict[str, Any] = response.json()["operation"]
        return operation


@pytest.fixture
def api(settings: Settings, db: Database) -> Iterator[Api]:
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, db)


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until `condition()` is truthy; its value is returned. No fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app behind a real uvicorn on a free port, as `berth serve` runs it, for streams that
    outlive one request; yields its base URL."""
    port = free_port()
    # Open streams never end on their own, so shutdown gives them 2 s, not forever.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, as an operator stops Berth, then SIGKILL if it outlives `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PausedAfterListing(DockerEngine):
    """A real engine client that stalls between reading a listing and handing it back, so a
    test can make a slower writer's reading older than one stored meanwhile."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.listed = threading.Event()
        self.go_on = threading.Event()

    def _pause(self) -> None:
        self.listed.set()
        assert self.go_on.wait(30)

    def list_images(self) -> list[dict[str, Any]]:
        listing = super().list_images()
        self._pause()
        return listing

    def list_containers(self, *, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        listing = super().list_containers(labels=labels)
        self._pause()
        return listing

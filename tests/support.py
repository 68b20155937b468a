"""What the tests share besides fixtures: the API as a user speaks it, waiting for a condition,
a served app, the commands and checks the container and service tests run on the engines.

Fixtures live in conftest.py; test modules import helpers from here, never from each other.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import docker
import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.db import Database
from app.engine.docker_engine import DockerEngine
from app.security.roles import Role
from app.tokens import service as tokens
from tests.testbed import Testbed, remove_containers

BOOTSTRAP_TOKEN = "berth_test_bootstrap_token_0123456789"


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


HTTPD = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; mkdir -p /www; echo hello-from-$HOSTNAME > /www/index.html; "
    "httpd -f -p 8080 -h /www & wait",
]


def host_ready(api: Api, host_id: str) -> bool:
    status: str = api.get(f"/hosts/{host_id}").json()["status"]
    return status == "ready"


HEALTHY = {
    "test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ || exit 1"],
    "interval_s": 0.5,
    # Generous, so a busy engine's slow check never marks a serving replica unhealthy.
    "timeout_s": 5,
    "retries": 3,
}


class Services:
    def __init__(self, api: Api, bed: Testbed) -> None:
        self.api = api
        self.bed = bed
        self.hosts: dict[str, str] = {}
        self.engines: dict[str, docker.DockerClient] = {}
        for name, url in (("h1", bed.h1_url), ("h2", bed.h2_url)):
            self.hosts[name] = api.post(
                "/hosts", json={"name": name, "url": url, "labels": {"name": name}}
            ).json()["id"]
            self.engines[name] = docker.DockerClient(base_url=url, timeout=60)
        for host_id in self.hosts.values():
            wait_for(partial(host_ready, api, host_id), timeout=60, what="hosts ready")

    def create(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("image", self.bed.image)
        spec.setdefault("command", HTTPD)
        name = f"svc-{uuid.uuid4().hex[:6]}"
        response = self.api.post("/services", json={"name": name, "spec": spec})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, service_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get(f"/services/{service_id}").json()
        return body

    def settled(self, service_id: str, replicas: int, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            svc = self.get(service_id)
            live = [t for t in svc["tasks"] if t["desired_state"] == "running"]
            ok = (
                svc["status"] == "running"
                and svc["replicas"]["running"] == replicas
                and len(live) == replicas
            )
            return svc if ok else None

        result: dict[str, Any] = wait_for(
            check, timeout=timeout, interval=0.2, what=f"{replicas} replicas running"
        )
        return result

    def running_on_engines(self, service_id: str) -> dict[str, int]:
        counts = {}
        for name, engine in self.engines.items():
            try:
                counts[name] = len(
                    engine.containers.list(
                        filters={"label": f"berth.service={service_id}", "status": "running"}
                    )
                )
            except docker.errors.DockerException:
                counts[name] = -1
        return counts

    def per_host(self, svc: dict[str, Any]) -> dict[str, int]:
        names = {v: k for k, v in self.hosts.items()}
        counts: dict[str, int] = {}
        for task in svc["tasks"]:
            if task["desired_state"] == "running":
                counts[names[task["host_id"]]] = counts.get(names[task["host_id"]], 0) + 1
        return counts

    def cleanup(self) -> None:
        for engine in self.engines.values():
            # The second engine may be down after a failure test; it is cleaned when it returns.
            with contextlib.suppress(docker.errors.DockerException):
                remove_containers(engine, "berth.managed=true")
            engine.close()

"""What the tests share besides fixtures: the API as a user speaks it, waiting for a condition,
a served app, the commands, checks and drivers the container, service and image tests use on
the engines.

Fixtures live in conftest.py; test modules import helpers from here, never from each other.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import docker
import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.engine.docker_engine import DockerEngine
from app.security.roles import Role
from app.tokens import service as tokens
from tests.testbed import Testbed, remove_containers

BOOTSTRAP_TOKEN = "berth_test_bootstrap_token_0123456789"
# The converge deadline of `impatient_api`: short, so that a wait that cannot finish fails
# within a test, yet long enough that a loaded machine's first failed start (whose reason the
# failure names) comes before it: at 3 s, the PostgreSQL pass of a CI run once gave up first.
IMPATIENT_DEADLINE_S = 10


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
def served(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """The app behind a real uvicorn on `port` (default: a free one), as `berth serve` runs it,
    for streams that outlive one request; yields its base URL."""
    port = port or free_port()
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


def start_serve(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    name: str = "serve",
    ready_path: str = "/healthz",
    timeout: float = 30,
) -> tuple[subprocess.Popen[bytes], int]:
    """A `berth serve` process run in `tmp_path` with `env` added to this one's, its output in
    `<name>.log` there; returns it, ready, and its port."""
    port = free_port()
    with (tmp_path / f"{name}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env={**os.environ, **env},
            stderr=log,
            stdout=log,
        )

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{ready_path}").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=timeout, what=f"berth serve {name} to be ready")
    except BaseException:
        stop_process(process, grace=5)
        raise
    return process, port


def berth_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `berth` subprocess on the test's database and key file."""
    env = dict(os.environ)
    env.update(
        BERTH_DATABASE_URL=settings.database_url,
        BERTH_KEY_FILE=str(settings.key_file),
        BERTH_BOOTSTRAP_TOKEN=BOOTSTRAP_TOKEN,
        BERTH_REGISTER_LOCAL_HOST="false",
        BERTH_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


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


class BothHosts:
    """The testbed's two engines registered as hosts h1 and h2 (labelled name=h1|h2) and ready,
    with a docker client for each."""

    def __init__(self, api: Api, bed: Testbed) -> None:
        self.api = api
        self.bed = bed
        self.hosts: dict[str, str] = {}
        self.engines: dict[str, docker.DockerClient] = {}
        for name, url in (("h1", bed.h1_url), ("h2", bed.h2_url)):
            response = api.post(
                "/hosts", json={"name": name, **bed.host(name), "labels": {"name": name}}
            )
            self.hosts[name] = response.json()["id"]
            self.engines[name] = docker.DockerClient(base_url=url, timeout=60)
        for host_id in self.hosts.values():
            wait_for(partial(host_ready, api, host_id), timeout=60, what="hosts ready")


class Fleet(BothHosts):
    """Containers on both hosts, and everything a test made removed afterwards."""

    def create(self, *, expect: int = 202, **spec: Any) -> dict[str, Any]:
        spec.setdefault("image", self.bed.image)
        spec.setdefault("name", f"t-{uuid.uuid4().hex[:8]}")
        response = self.api.post("/containers", json=spec)
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, **spec: Any) -> dict[str, Any]:
        body = self.create(**spec)
        done = self.api.wait_operation(body["operation"]["id"], timeout=60)
        assert done["status"] == "succeeded", done
        container: dict[str, Any] = self.api.get(f"/containers/{body['container']['id']}").json()
        return container

    def state(self, container_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get(f"/containers/{container_id}").json()
        return body

    def wait_state(self, container_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
        result: dict[str, Any] = wait_for(
            lambda: (c := self.state(container_id))["state"] == state and c,
            timeout=timeout,
            what=f"state {state}",
        )
        return result

    def act(self, container_id: str, action: str, **body: Any) -> dict[str, Any]:
        response = self.api.post(f"/containers/{container_id}/{action}", json=body or None)
        assert response.status_code == 202, response.text
        done = self.api.wait_operation(response.json()["operation"]["id"], timeout=60)
        assert done["status"] == "succeeded", done
        return done

    def cleanup(self) -> None:
        for engine in self.engines.values():
            remove_containers(engine, "berth.managed=true")
            for volume in engine.volumes.list(filters={"label": "berth.managed=true"}):
                with contextlib.suppress(docker.errors.DockerException):
                    volume.remove(force=True)
            for network in engine.networks.list(filters={"label": "berth.managed=true"}):
                with contextlib.suppress(docker.errors.DockerException):
                    network.remove()
            engine.close()


def fetch(url: str) -> str:
    def answer() -> str | None:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            return None

    text: str = wait_for(answer, timeout=15, what=f"an answer from {url}")
    return text


HEALTHY = {
    "test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ || exit 1"],
    "interval_s": 0.5,
    # Generous, so a busy engine's slow check never marks a serving replica unhealthy.
    "timeout_s": 5,
    "retries": 3,
}


class Services(BothHosts):
    """Services of the web server over both hosts, and their containers removed afterwards."""

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


BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox")
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
"""


def context_tar(files: dict[str, bytes], *, gzip: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def send_project(api: Api, method: str, path: str, archive: bytes, **fields: Any) -> Any:
    """A stack request with the project directory (a tar.gz) as its multipart `project`."""
    data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    return api.request(method, path, data=data, files={"project": ("project.tar.gz", archive)})


def deployed(api: Api, response: Any) -> Any:
    """The 202 answer of a stack's create or update, once its deploy succeeded."""
    assert response.status_code == 202, response.text
    done = api.wait_operation(response.json()["operation"]["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return response.json()


def busybox_context(dockerfile: str = DOCKERFILE, *, gzip: bool = True) -> bytes:
    return context_tar(
        {"Dockerfile": dockerfile.encode(), "busybox": BUSYBOX.read_bytes()}, gzip=gzip
    )


class Images:
    """Drives the image endpoints and remembers what to clean off the engines."""

    def __init__(self, api: Api, bed: Testbed) -> None:
        self.api = api
        self.bed = bed
        self.engines = {"h1": docker.DockerClient(base_url=bed.h1_url, timeout=120)}
        self.host_ids: dict[str, str] = {}
        self.created: set[str] = set()

    def host(self, name: str = "h1") -> str:
        if name not in self.host_ids:
            url = self.bed.h1_url if name == "h1" else self.bed.h2_url
            response = self.api.post("/hosts", json={"name": name, **self.bed.host(name)})
            assert response.status_code == 201, response.text
            self.host_ids[name] = response.json()["id"]
            if name not in self.engines:
                self.engines[name] = docker.DockerClient(base_url=url, timeout=120)
        return self.host_ids[name]

    def reference(self, registry: str, tag: str = "1.0") -> str:
        reference = f"{registry}/berth-test/app-{uuid.uuid4().hex[:10]}:{tag}"
        self.created.add(reference)
        return reference

    def build(
        self, tags: list[str], *, context: bytes | None = None, host: str = "h1", **form: str
    ) -> dict[str, Any]:
        self.created.update(tags)
        response = self.api.post(
            "/images/build",
            files={"context": ("context.tar.gz", context or busybox_context(), "application/gzip")},
            data={"host_id": self.host(host), "tags[]": tags, **form},
        )
        assert response.status_code == 202, response.text
        return self.api.wait_operation(response.json()["operation"]["id"], timeout=120)

    def registry(self, password: str) -> str:
        response = self.api.post(
            "/registries",
            json={
                "name": f"auth-{uuid.uuid4().hex[:6]}",
                "url": f"http://{self.bed.auth_registry}",
                "username": self.bed.registry_user,
                "password": password,
            },
        )
        assert response.status_code == 201, response.text
        registry_id: str = response.json()["id"]
        return registry_id

    def cleanup(self) -> None:
        for engine in self.engines.values():
            for reference in self.created:
                with contextlib.suppress(docker.errors.DockerException):
                    engine.images.remove(reference, force=True)
            engine.close()


class Published:
    """Images pushed from `engine` under one tag of a new repository (`name-<random>`) of a
    testbed registry, each a commit of the testbed's busybox with a label; `auth` for the
    registry that needs credentials."""

    def __init__(
        self,
        engine: docker.DockerClient,
        bed: Testbed,
        *,
        registry: str,
        name: str,
        auth: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.base = f"{bed.registry}/berth-test/busybox:latest"
        self.repository = f"{registry}/berth-test/{name}-{uuid.uuid4().hex[:8]}"
        self.tag = f"{self.repository}:1"
        self.label = f"berth.test.{name}"
        self.auth = auth
        self.ids: list[str] = []

    def push(self, label: str) -> tuple[str, str]:
        """The tag moved to a new image: its `repo@sha256:...` and its image id."""
        self.engine.images.pull(self.base)
        made = self.engine.containers.create(self.base, command=["true"])
        try:
            image = made.commit(
                repository=self.repository, tag="1", changes=[f"LABEL {self.label}={label}"]
            )
        finally:
            made.remove()
        pushed = self.engine.images.push(
            self.repository, tag="1", stream=True, decode=True, auth_config=self.auth
        )
        for line in pushed:
            assert "error" not in line, line
        image.reload()
        digest = next(d for d in image.attrs["RepoDigests"] if d.startswith(self.repository))
        self.ids.append(str(image.id))
        return digest, str(image.id)

    def cleanup(self) -> None:
        for image_id in self.ids:
            with contextlib.suppress(docker.errors.DockerException):
                self.engine.images.remove(image_id, force=True)


def inventory(api: Api, reference: str, host_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        "/images", params={"reference": reference, "host_id": host_id}
    ).json()["items"]
    return items

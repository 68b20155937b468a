"""Berth's image as an operator runs it: built on h1 by docker/Dockerfile with no network in the
build (its wheels come in the context, scripts/wheelhouse.sh), from a base given as a build
argument: no registry is reachable here, so the base is a minimal Debian made by docker/base.sh.
It runs as a non-root user managing h1 through the engine's socket, alone and as the processes
of the production layout (docker/compose.yaml).

It runs once per CI run (it uses no database fixture, so the PostgreSQL pass leaves it out),
and everything it makes on h1 (images, containers, volumes) is removed afterwards. The base
tarball and the dependency wheels are cached between runs (~/.cache/berth)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import yaml
from docker.models.containers import Container
from sqlalchemy import make_url

from tests.support import free_port, wait_for
from tests.testbed import ROOT, Testbed, remove_containers

TOKEN = "berth_image_test_token_0123456789abcdef"
LAYOUT_DB = "berth_image_layout_test"
# A first run builds the base from a Debian mirror and the wheels from PyPI (both cached after).
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Built:
    """Berth's image on h1, and how to reach that engine from inside a container."""

    engine: docker.DockerClient
    image: str
    socket: str
    socket_group: str

    def run(self, name: str, **options: Any) -> Container:
        """A container of the image, with h1's socket where the Dockerfile expects an engine's
        and that socket's group: how the README says to run it."""
        options.setdefault("environment", {})["DOCKER_HOST"] = "unix:///var/run/docker.sock"
        options.setdefault("volumes", {})[self.socket] = {
            "bind": "/var/run/docker.sock",
            "mode": "rw",
        }
        container: Container = self.engine.containers.run(
            self.image, name=name, group_add=[self.socket_group], **options
        )
        return container


@pytest.fixture(scope="module")
def built(bed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    # Long: an image build on a busy engine.
    engine = docker.DockerClient(base_url=bed.h1_url, timeout=600)
    run_id = uuid.uuid4().hex[:8]
    base = f"berth-image-test/base:{run_id}"
    image = f"berth-image-test/berth:{run_id}"
    # Removed newest first; the install stage gets a name of its own so that it can be.
    made: list[str] = []
    try:
        tarball = command(str(ROOT / "docker" / "base.sh")).strip()
        engine.api.import_image_from_file(tarball, repository=base.split(":")[0], tag=run_id)
        made.append(base)
        context = build_context(tmp_path_factory.mktemp("image") / "context")
        made.append(f"{image}-install")
        build(engine, context, f"{image}-install", buildargs={"BASE": base}, target="install")
        made.append(image)
        build(engine, context, image, buildargs={"BASE": base})
        socket = Path(bed.h1_url.removeprefix("unix://"))
        yield Built(engine, image, str(socket), str(socket.stat().st_gid))
    finally:
        for reference in reversed(made):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(reference, force=True)
        engine.close()


def command(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=800, check=False)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def build_context(directory: Path) -> Path:
    """What `docker build` gets: the Dockerfile and the wheelhouse, nothing of the checkout."""
    directory.mkdir()
    shutil.copy(ROOT / "docker" / "Dockerfile", directory / "Dockerfile")
    command(str(ROOT / "scripts" / "wheelhouse.sh"), str(directory / "wheelhouse"))
    return directory


def build(engine: docker.DockerClient, context: Path, tag: str, **options: Any) -> None:
    # network_mode none: a step that reaches for a registry or an index fails the build.
    engine.images.build(
        path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True, **options
    )


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def operation_done(url: str, operation_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{url}/api/v1/operations/{operation_id}",
        params={"wait": 10},
        headers={"Authorization": f"Bearer {TOKEN}"},
        # A loaded CI machine: the long-poll's 10 s and then some.
        timeout=60,
    )
    body: dict[str, Any] = response.json()
    return body if body["status"] in ("succeeded", "failed", "cancelled") else None


def test_the_image_builds_offline_runs_as_non_root_and_manages_h1(
    built: Built, bed: Testbed
) -> None:
    port = free_port()
    berth = built.run(
        f"berth-image-test-{uuid.uuid4().hex[:8]}",
        detach=True,
        environment={"BERTH_BOOTSTRAP_TOKEN": TOKEN},
        ports={"8000/tcp": ("127.0.0.1", port)},
    )
    made: str | None = None
    try:
        uid = berth.exec_run(["id", "-u"]).output
        assert isinstance(uid, bytes)
        assert uid.decode().strip() != "0", "Berth runs as root in its image"
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(url), timeout=120, interval=0.5, what="the image's /readyz")
        response = httpx.post(
            f"{url}/api/v1/containers",
            json={"image": bed.image, "name": f"image-test-{port}", "command": ["sleep", "300"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        made = response.json()["container"]["id"]
        operation = response.json()["operation"]["id"]
        done = wait_for(lambda: operation_done(url, operation), timeout=120, what="the create")
        assert done["status"] == "succeeded", done
        # Seen on h1 itself, not through Berth: the container runs there, labelled as Berth's.
        [container] = built.engine.containers.list(filters={"label": f"berth.container={made}"})
        assert container.status == "running"
    finally:
        if made is not None:
            remove_containers(built.engine, f"berth.container={made}")
        # v: the image's state volume (database, key) goes with it.
        berth.remove(force=True, v=True)


@pytest.fixture
def layout_database(bed: Testbed) -> Iterator[str]:
    """A PostgreSQL database of the test's own, reachable from h1's host network."""
    url = make_url(bed.pg_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {LAYOUT_DB} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {LAYOUT_DB}")
    yield url.set(database=LAYOUT_DB).render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {LAYOUT_DB} WITH (FORCE)")


def test_the_production_layout_runs_from_the_image(built: Built, layout_database: str) -> None:
    """docker/compose.yaml's Berth processes, each with its command and environment from the
    file: `migrate` once, then two `serve --no-workers` that are ready only once the `worker`
    heartbeats through PostgreSQL, all sharing one state volume (the key file). The testbed's
    PostgreSQL stands in for the file's `db` service (no postgres image can be pulled here), and
    the host network for the published ports."""
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    berth = {name: s for name, s in services.items() if s.get("image") == "berth:local"}
    run_id = uuid.uuid4().hex[:8]
    state = built.engine.volumes.create(f"berth-image-test-state-{run_id}")
    ports: dict[str, int] = {}
    containers: list[Container] = []

    def start(name: str, **options: Any) -> Container:
        service = berth[name]
        environment = dict(service["environment"])
        environment |= {"BERTH_DATABASE_URL": layout_database, "BERTH_BOOTSTRAP_TOKEN": TOKEN}
        if service.get("ports"):
            ports[name] = free_port()
            environment["BERTH_PORT"] = str(ports[name])
        [mount] = [v for v in service["volumes"] if v.startswith("state:")]
        container = built.run(
            f"berth-image-test-{name}-{run_id}",
            command=service["command"],
            environment=environment,
            volumes={state.name: {"bind": mount.split(":")[1], "mode": "rw"}},
            network_mode="host",
            **options,
        )
        containers.append(container)
        return container

    try:
        migrate = start("migrate", detach=True)
        assert migrate.wait(timeout=120)["StatusCode"] == 0, migrate.logs()[-3000:]
        for name in sorted(berth.keys() - {"migrate"}):
            start(name, detach=True)
        assert len(ports) == 2, "two API processes"
        for port in ports.values():
            wait_for(
                partial(ready, f"http://127.0.0.1:{port}"),
                timeout=120,
                interval=0.5,
                what="an API process of the layout to be ready (its worker heartbeating)",
            )
    finally:
        for container in containers:
            container.remove(force=True)
        state.remove(force=True)

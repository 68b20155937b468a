"""Berth's image as an operator runs it: built on h1 by docker/Dockerfile with no network in the
build (its wheels come in the context, scripts/wheelhouse.sh), from a base given as a build
argument: no registry is reachable here, so the base is a minimal Debian made by docker/base.sh.
It then runs as a non-root user managing h1 through the engine's socket.

It runs once per CI run (it uses no database fixture, so the PostgreSQL pass leaves it out),
and everything it makes on h1 (images, containers, volumes) is removed afterwards. The base
tarball and the dependency wheels are cached between runs (~/.cache/berth)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.models.containers import Container

from tests.support import free_port, wait_for
from tests.testbed import ROOT, Testbed, remove_containers

TOKEN = "berth_image_test_token_0123456789abcdef"
# A first run builds the base from a Debian mirror and the wheels from PyPI (both cached after).
pytestmark = pytest.mark.timeout(900)


@dataclass
class H1:
    """h1's engine, and the images a test made there (removed newest first at the end)."""

    engine: docker.DockerClient
    images: list[str] = field(default_factory=list)


@pytest.fixture
def h1(bed: Testbed) -> Iterator[H1]:
    # Long: an image build on a busy engine.
    h1 = H1(docker.DockerClient(base_url=bed.h1_url, timeout=600))
    try:
        yield h1
    finally:
        for reference in reversed(h1.images):
            with contextlib.suppress(docker.errors.ImageNotFound):
                h1.engine.images.remove(reference, force=True)
        h1.engine.close()


def build_context(directory: Path) -> Path:
    """What `docker build` gets: the Dockerfile and the wheelhouse, nothing of the checkout."""
    directory.mkdir()
    shutil.copy(ROOT / "docker" / "Dockerfile", directory / "Dockerfile")
    run(str(ROOT / "scripts" / "wheelhouse.sh"), str(directory / "wheelhouse"))
    return directory


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=800, check=False)
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def build(h1: docker.DockerClient, context: Path, tag: str, **options: Any) -> None:
    # network_mode none: a step that reaches for a registry or an index fails the build.
    h1.images.build(
        path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True, **options
    )


def start_berth(h1: docker.DockerClient, image: str, bed: Testbed, port: int) -> Container:
    socket = bed.h1_url.removeprefix("unix://")
    return h1.containers.run(
        image,
        detach=True,
        name=f"berth-image-test-{uuid.uuid4().hex[:8]}",
        # The socket's group, not root: what the Dockerfile and the README tell an operator.
        group_add=[str(Path(socket).stat().st_gid)],
        volumes={socket: {"bind": "/var/run/docker.sock", "mode": "rw"}},
        environment={
            "BERTH_BOOTSTRAP_TOKEN": TOKEN,
            "DOCKER_HOST": "unix:///var/run/docker.sock",
        },
        ports={"8000/tcp": ("127.0.0.1", port)},
    )


def operation_done(base: str, operation_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{base}/api/v1/operations/{operation_id}",
        params={"wait": 10},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20,
    )
    body: dict[str, Any] = response.json()
    return body if body["status"] in ("succeeded", "failed", "cancelled") else None


def test_the_image_builds_offline_runs_as_non_root_and_manages_h1(
    h1: H1, bed: Testbed, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex[:8]
    base = f"berth-image-test/base:{run_id}"
    tarball = run(str(ROOT / "docker" / "base.sh")).strip()
    h1.engine.api.import_image_from_file(tarball, repository=base.split(":")[0], tag=run_id)
    h1.images.append(base)

    context = build_context(tmp_path / "context")
    image = f"berth-image-test/berth:{run_id}"
    # The install stage under a name of its own first, so that it can be removed afterwards;
    # the full build then takes it from the cache.
    h1.images.append(f"{image}-install")
    build(h1.engine, context, f"{image}-install", buildargs={"BASE": base}, target="install")
    h1.images.append(image)
    build(h1.engine, context, image, buildargs={"BASE": base})

    port = free_port()
    berth = start_berth(h1.engine, image, bed, port)
    made: str | None = None
    try:
        uid = berth.exec_run(["id", "-u"]).output
        assert isinstance(uid, bytes)
        assert uid.decode().strip() != "0", "Berth runs as root in its image"
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=90, interval=0.5, what="the image's /readyz")
        name = f"image-test-{run_id}"
        response = httpx.post(
            f"{url}/api/v1/containers",
            json={"image": bed.image, "name": name, "command": ["sleep", "300"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=20,
        )
        assert response.status_code == 202, response.text
        made = response.json()["container"]["id"]
        operation = response.json()["operation"]["id"]
        done = wait_for(lambda: operation_done(url, operation), timeout=90, what="the create")
        assert done["status"] == "succeeded", done
        # Seen on h1 itself, not through Berth: the container runs there, labelled as Berth's.
        [container] = h1.engine.containers.list(filters={"label": f"berth.container={made}"})
        assert container.status == "running"
    finally:
        if made is not None:
            remove_containers(h1.engine, f"berth.container={made}")
        # v: the image's state volume (database, key) goes with it.
        berth.remove(force=True, v=True)

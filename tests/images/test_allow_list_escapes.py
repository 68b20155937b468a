"""With BERTH_ALLOWED_REGISTRIES set, neither a build nor a tag brings in an image from a
refused registry: not through COPY --from, RUN --mount from=, the syntax frontend, nor by
tagging a refused image with an allowed name. Against the testbed's real engine: the open
registry is allowed, Docker Hub (where the testbed's busybox is named) is not."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.operations import queue
from tests.support import DOCKERFILE, Api, busybox_context, wait_for
from tests.testbed import Testbed


@pytest.fixture
def allowed(
    settings_factory: Callable[..., Settings], db: Database, bed: Testbed
) -> Iterator[tuple[Api, str]]:
    """An API that allows only the open registry, and h1's id."""
    with TestClient(create_app(settings_factory(allowed_registries=bed.registry))) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        yield api, host


@pytest.fixture
def engine(bed: Testbed) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=bed.h1_url, timeout=60)
    yield client
    client.close()


@pytest.mark.parametrize(
    "dockerfile",
    [
        DOCKERFILE + "COPY --from=evil.example.com/x:1 /x /x\n",
        DOCKERFILE + "ARG SOURCE=evil.example.com/x:1\nCOPY --from=${SOURCE} /x /x\n",
        DOCKERFILE + "RUN --mount=type=bind,from=evil.example.com/x,target=/x true\n",
        "# syntax=evil.example.com/frontend:1\n" + DOCKERFILE,
    ],
)
def test_a_build_uses_no_image_from_a_refused_registry(
    allowed: tuple[Api, str], bed: Testbed, dockerfile: str
) -> None:
    api, host = allowed
    response = api.post(
        "/images/build",
        files={"context": ("c.tar.gz", busybox_context(dockerfile), "application/gzip")},
        data={"host_id": host, "tags[]": [f"{bed.registry}/berth-test/escape:1"]},
    )
    assert response.status_code == 422, response.text
    assert "evil.example.com" in response.json()["detail"]
    assert "BERTH_ALLOWED_REGISTRIES" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == "body.dockerfile"
    assert api.get("/operations").json()["items"] == []


def test_a_tag_does_not_launder_an_image_from_a_refused_registry(
    allowed: tuple[Api, str], bed: Testbed, engine: docker.DockerClient
) -> None:
    api, host = allowed
    suffix = uuid.uuid4().hex[:8]
    laundered = f"{bed.registry}/berth-test/laundered-{suffix}:1"
    ours = f"{bed.registry}/berth-test/ours-{suffix}"
    refused = engine.images.get(bed.image)  # named on Docker Hub, which is not allowed
    refused.tag(ours, tag="1")  # and the same content under an allowed name
    try:
        by_name = api.post(
            "/images/tag", json={"host_id": host, "source": bed.image, "target": laundered}
        )
        assert by_name.status_code == 422, by_name.text
        assert by_name.json()["errors"][0]["loc"] == "body.source"
        assert "docker.io" in by_name.json()["detail"]

        # By id, once the inventory knows the image: its Docker Hub name counts.
        wait_for(
            lambda: api.get("/images", params={"reference": bed.image, "host_id": host}).json()[
                "items"
            ],
            timeout=30,
            what="the inventory to list the image",
        )
        by_id = api.post(
            "/images/tag", json={"host_id": host, "source": refused.id, "target": laundered}
        )
        assert by_id.status_code == 422, by_id.text

        # Queued before (or past a stale inventory): the worker asks the engine and refuses.
        with api.db.session() as session:
            operation_id = queue.enqueue(
                session,
                kind="image.tag",
                params={"source": refused.id, "target": laundered},
                target_type="image",
                host_id=host,
            ).id
        done = api.wait_operation(operation_id, timeout=60)
        assert done["status"] == "failed" and "docker.io" in done["error"], done
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(laundered)

        # A source from an allowed registry is tagged as before.
        fine = api.post(
            "/images/tag", json={"host_id": host, "source": f"{ours}:1", "target": laundered}
        )
        assert fine.status_code == 202, fine.text
        assert api.wait_operation(fine.json()["operation"]["id"])["status"] == "succeeded"
    finally:
        for name in (laundered, f"{ours}:1"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(name)

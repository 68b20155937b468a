"""A service made through the API records the digest its tag named when it was deployed, on a
real engine and the testbed's registry: its replicas run those bits after the tag moves (a
replica added by scaling included), and the image check sees the moved tag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support import Published, Services, wait_for
from tests.testbed import Testbed


def _replicas(engine: docker.DockerClient, service_id: str, count: int) -> list[str]:
    """`Config.Image image-id` of each of the service's running replicas, once there are `count`."""

    def found() -> list[str] | None:
        running = engine.containers.list(
            filters={"label": f"berth.service={service_id}", "status": "running"}
        )
        if len(running) != count:
            return None
        return sorted(f"{c.attrs['Config']['Image']} {c.attrs['Image']}" for c in running)

    result: list[str] = wait_for(found, timeout=90, what=f"{count} replicas")
    return result


def _done(services: Services, body: dict[str, Any]) -> None:
    finished = services.api.wait_operation(body["operation"]["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]


@pytest.fixture
def images(services: Services, bed: Testbed) -> Iterator[Published]:
    """Tags pushed from h1 to the open registry, removed afterwards."""
    published = Published(services.engines["h1"], bed, registry=bed.registry, name="pin")
    yield published
    published.cleanup()


def test_a_service_from_a_tag_runs_the_digest_it_was_deployed_with(
    services: Services, images: Published
) -> None:
    engine = images.engine
    first, first_id = images.push("first")
    body = services.create(
        image=images.tag, command=["sleep", "3600"], placement={"constraints": ["name==h1"]}
    )
    service_id = body["service"]["id"]
    try:
        _done(services, body)
        revisions = services.api.get(f"/services/{service_id}/revisions").json()["items"]
        assert [r["image_digest"] for r in revisions] == [first]
        assert _replicas(engine, service_id, 1)[0].endswith(f" {first_id}")

        # The tag moves, here on h1 too; a replica added now runs the recorded bits.
        second, _ = images.push("second")
        scaled = services.api.post(f"/services/{service_id}/scale", json={"replicas": 2})
        assert scaled.status_code == 202, scaled.text
        _done(services, scaled.json())
        assert f"{first} {first_id}" in _replicas(engine, service_id, 2)
        assert all(line.endswith(f" {first_id}") for line in _replicas(engine, service_id, 2))
        revisions = services.api.get(f"/services/{service_id}/revisions").json()["items"]
        assert [r["image_digest"] for r in revisions] == [first]  # a scale resolves nothing

        checked = services.api.post(f"/services/{service_id}/check-image")
        assert checked.status_code == 200, checked.text
        update = checked.json()["service"]["update_available"]
        assert (update["image"], update["digest"]) == (images.tag, second)
    finally:  # its replicas hold the images
        removed = services.api.delete(f"/services/{service_id}")
        assert removed.status_code == 202, removed.text
        _done(services, removed.json())

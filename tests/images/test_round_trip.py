"""An image's round trip through Berth on a real engine and an authenticated registry, run once
for the module: built, pushed, deleted, pulled back. Each test checks one behaviour against what
that run saw."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from tests.support import Api, Images, inventory
from tests.testbed import Testbed


@dataclass(frozen=True)
class Trip:
    reference: str
    built: dict[str, Any]  # the build operation
    build_logs: list[str]
    image: dict[str, Any]  # the built image in the inventory
    inspected: dict[str, Any]  # the engine's own view of it
    pushed: dict[str, Any]  # the push operation
    inventory_after_delete: list[dict[str, Any]]
    lookup_after_delete: Exception | None  # what asking the engine for it raised
    pulled: dict[str, Any]  # the pull operation
    inventory_after_pull: list[dict[str, Any]]


@pytest.fixture(scope="module")
def trip(module_api: Api, bed: Testbed) -> Iterator[Trip]:
    api = module_api
    images = Images(api, bed)
    try:
        h1 = images.host()
        reference = images.reference(bed.auth_registry)
        built = images.build([reference])
        assert built["status"] == "succeeded", built
        logs = api.get(f"/operations/{built['id']}/logs").json()["items"]
        [image] = inventory(api, reference, h1)
        engine = images.engines["h1"]
        inspected = engine.api.inspect_image(reference)  # type: ignore[no-untyped-call]

        registry_id = images.registry(bed.registry_password)
        push = api.post(
            "/images/push", json={"host_id": h1, "reference": reference, "registry_id": registry_id}
        )
        assert push.status_code == 202
        pushed = api.wait_operation(push.json()["operation"]["id"], timeout=60)
        assert pushed["status"] == "succeeded", pushed

        deleted = api.delete(f"/images/{image['id']}")
        assert deleted.status_code == 202
        assert api.wait_operation(deleted.json()["operation"]["id"])["status"] == "succeeded"
        inventory_after_delete = inventory(api, reference, h1)
        lookup_after_delete: Exception | None = None
        try:
            engine.images.get(reference)
        except docker.errors.ImageNotFound as missing:
            lookup_after_delete = missing

        pull = api.post("/images/pull", json={"reference": reference, "host_id": h1})
        assert pull.status_code == 202
        pulled = api.wait_operation(pull.json()["operation"]["id"], timeout=60)
        yield Trip(
            reference=reference,
            built=built,
            build_logs=[line["message"] for line in logs],
            image=image,
            inspected=inspected,
            pushed=pushed,
            inventory_after_delete=inventory_after_delete,
            lookup_after_delete=lookup_after_delete,
            pulled=pulled,
            inventory_after_pull=inventory(api, reference, h1),
        )
    finally:
        images.cleanup()


def test_a_build_logs_each_step(trip: Trip) -> None:
    assert any(line.startswith("Step 2/") and "COPY busybox" in line for line in trip.build_logs), (
        trip.build_logs
    )


def test_the_inventory_shows_a_built_image_as_the_engine_does(trip: Trip) -> None:
    image, inspected = trip.image, trip.inspected
    assert image["docker_id"] == inspected["Id"]
    assert [layer["digest"] for layer in image["layers"]] == inspected["RootFS"]["Layers"]
    assert (
        image["size_bytes"]
        == inspected["Size"]
        == sum(layer["size_bytes"] for layer in image["layers"])
    )
    assert image["size_bytes"] > 1_000_000  # busybox itself


def test_a_push_answers_with_the_digest(trip: Trip) -> None:
    assert trip.pushed["result"]["digest"].startswith("sha256:")


def test_a_delete_removes_the_image_from_the_inventory_and_the_engine(trip: Trip) -> None:
    assert trip.inventory_after_delete == []
    assert isinstance(trip.lookup_after_delete, docker.errors.ImageNotFound)


def test_a_pull_finds_the_stored_credentials_by_the_registry_host(trip: Trip) -> None:
    assert trip.pulled["status"] == "succeeded", trip.pulled
    assert trip.pulled["progress"]["layers_total"] == 2


def test_the_pulled_image_is_the_one_pushed(trip: Trip) -> None:
    [again] = trip.inventory_after_pull
    assert again["docker_id"] == trip.inspected["Id"]
    assert again["layers"] == trip.image["layers"]
    assert again["size_bytes"] == trip.image["size_bytes"]
    assert again["repo_digests"] == [
        f"{trip.reference.rsplit(':', 1)[0]}@{trip.pushed['result']['digest']}"
    ]

"""Releases on a real engine: a stack deployed from a tag in the testbed registry keeps
running the digest it was deployed with after the tag moves (a new replica too), a second
deploy records the new digest, and a rollback to the first release brings its digest back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support import Api, BothHosts, Published, wait_for
from tests.testbed import Testbed

COMPOSE = """
services:
  app:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    pull_policy: always
"""


@pytest.fixture
def hosts(api: Api, bed: Testbed) -> Iterator[BothHosts]:
    both = BothHosts(api, bed)
    yield both
    for engine in both.engines.values():
        engine.close()


def _done(api: Api, body: dict[str, Any]) -> None:
    finished = api.wait_operation(body["operation"]["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]


def _running_images(engine: docker.DockerClient, service_id: str, count: int) -> set[str]:
    """The images (`Config.Image`, image id) of the service's running replicas, once there
    are `count` of them and all of the service's current revision."""

    def settled() -> set[tuple[str, str]] | None:
        found = engine.containers.list(
            filters={"label": f"berth.service={service_id}", "status": "running"}
        )
        if len(found) != count:
            return None
        return {(c.attrs["Config"]["Image"], c.attrs["Image"]) for c in found}

    result: set[tuple[str, str]] = wait_for(settled, timeout=90, what=f"{count} replicas")
    return {f"{name} {image_id}" for name, image_id in result}


def test_a_moved_tag_changes_nothing_that_runs_and_a_rollback_restores_the_digest(
    api: Api, bed: Testbed, hosts: BothHosts
) -> None:
    engine = hosts.engines["h1"]
    images = Published(engine, bed, registry=bed.registry, name="release")
    stack_id = None
    try:
        first, first_id = images.push("first")
        response = api.post(
            "/stacks",
            json={
                "name": f"rel-{uuid.uuid4().hex[:6]}",
                "host_id": hosts.hosts["h1"],
                "compose": COMPOSE,
                "variables": {"IMAGE": images.tag, "DB_PASSWORD": "hunter2"},
            },
        )
        assert response.status_code == 202, response.text
        stack_id = response.json()["stack"]["id"]
        _done(api, response.json())
        (service_id,) = api.get(f"/stacks/{stack_id}").json()["services"]
        assert _running_images(engine, service_id, 1) == {f"{first} {first_id}"}

        second, second_id = images.push("second")  # the tag moves in the registry
        scaled = api.post(f"/services/{service_id}/scale", json={"replicas": 2})
        assert scaled.status_code == 202, scaled.text
        # The new replica is created by the recorded digest: without it, pull_policy always
        # would have pulled what the tag names now.
        assert _running_images(engine, service_id, 2) == {f"{first} {first_id}"}

        redeploy = api.request(
            "PUT",
            f"/stacks/{stack_id}",
            json={"compose": COMPOSE, "variables": {"IMAGE": images.tag, "DB_PASSWORD": "x"}},
        )
        assert redeploy.status_code == 202, redeploy.text
        _done(api, redeploy.json())
        # The file's one replica again (the scale was not in it), of the digest the tag names now.
        assert _running_images(engine, service_id, 1) == {f"{second} {second_id}"}

        page = api.get(f"/stacks/{stack_id}/releases").json()
        assert [r["release"] for r in page["items"]] == [2, 1]  # newest first
        assert page["items"][1]["digests"] == {"app": first}
        assert page["items"][0]["digests"] == {"app": second}
        assert page["items"][0]["variables"] == {"IMAGE": images.tag, "DB_PASSWORD": "***"}
        changed = api.get(f"/stacks/{stack_id}/releases/1/diff/2").json()
        assert changed["services"] == [
            {
                "compose_name": "app",
                "change": "changed",
                "digest_before": first,
                "digest_after": second,
                "fields": [],
            }
        ]
        revisions = api.get(f"/services/{service_id}/revisions").json()["items"]
        assert [r["image_digest"] for r in revisions] == [first, second]

        assert api.get(f"/stacks/{stack_id}/releases/9").status_code == 404
        unknown = api.post(f"/stacks/{stack_id}/rollback", json={"release": 9})
        assert unknown.status_code == 422, unknown.text
        assert api.post("/stacks/nope/rollback", json={"release": 1}).status_code == 404

        back = api.post(f"/stacks/{stack_id}/rollback", json={"release": 1})
        assert back.status_code == 202, back.text
        assert back.json()["stack"]["generation"] == 3
        _done(api, back.json())
        # Release 1's digest, not what the tag names (the second image, still on h1 by tag).
        assert _running_images(engine, service_id, 1) == {f"{first} {first_id}"}
        latest = api.get(f"/stacks/{stack_id}/releases/3").json()
        assert (latest["rollback_of"], latest["digests"]) == (1, {"app": first})
        audited = api.get("/audit", params={"action": "rollback_stack"}).json()["items"]
        path = f"/api/v1/stacks/{stack_id}/rollback"
        assert [e["outcome"] for e in audited if e["path"] == path] == [422, 202]
    finally:
        if stack_id is not None:
            removed = api.delete(f"/stacks/{stack_id}")
            assert removed.status_code == 202, removed.text
            _done(api, removed.json())
        images.cleanup()

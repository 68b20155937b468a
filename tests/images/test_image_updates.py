"""New-image detection on a real engine and the testbed's registry that needs credentials: a
stack's service deployed from a tag keeps running its recorded digest after the tag moves,
the check (conditional, with the stored credentials) shows `update_available`, and with
`auto_update` the new digest is rolled out as an ordinary update and the mark clears."""

from __future__ import annotations

import uuid
from typing import Any

import docker

from tests.support import Api, Images, Published, deployed, wait_for
from tests.testbed import Testbed

COMPOSE = """
services:
  app:
    image: ${IMAGE}
    command: ["sleep", "3600"]
"""


def _done(api: Api, operation: dict[str, Any]) -> None:
    finished = api.wait_operation(operation["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]


def _running(engine: docker.DockerClient, service_id: str) -> set[str]:
    """`Config.Image image-id` of the service's running replica, once there is one only."""

    def one() -> set[str] | None:
        found = engine.containers.list(
            filters={"label": f"berth.service={service_id}", "status": "running"}
        )
        if len(found) != 1:
            return None
        return {f"{c.attrs['Config']['Image']} {c.attrs['Image']}" for c in found}

    result: set[str] = wait_for(one, timeout=90, what="one replica")
    return result


def _check(api: Api, service_id: str) -> dict[str, Any]:
    response = api.post(f"/services/{service_id}/check-image")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_moved_tag_shows_as_update_available_and_auto_update_rolls_it_out(
    api: Api, bed: Testbed
) -> None:
    hosts = Images(api, bed)
    host_id = hosts.host("h1")
    engine = hosts.engines["h1"]
    auth = {"username": bed.registry_user, "password": bed.registry_password}
    images = Published(engine, bed, registry=bed.auth_registry, name="watch", auth=auth)
    registry = api.post(
        "/registries",
        json={
            "name": f"watch-{uuid.uuid4().hex[:6]}",
            "url": f"http://{bed.auth_registry}",
            "username": bed.registry_user,
            "password": bed.registry_password,
        },
    )
    assert registry.status_code == 201, registry.text
    stack_id = None
    try:
        first, first_id = images.push("first")
        stack = {"host_id": host_id, "compose": COMPOSE, "variables": {"IMAGE": images.tag}}
        name = f"watch-{uuid.uuid4().hex[:6]}"
        stack_id = deployed(api, api.post("/stacks", json={"name": name, **stack}))["stack"]["id"]
        (service_id,) = api.get(f"/stacks/{stack_id}").json()["services"]
        assert _running(engine, service_id) == {f"{first} {first_id}"}

        # The registry needs credentials: the stored ones answer it.
        checked = _check(api, service_id)
        assert (checked["image"], checked["outcome"]) == (images.tag, "changed"), checked
        assert checked["service"]["update_available"] is None
        # Asked again, conditionally: the tag still names the same manifest.
        assert _check(api, service_id)["outcome"] == "not_modified"

        second, second_id = images.push("second")  # the tag moves in the registry
        checked = _check(api, service_id)
        assert checked["outcome"] == "changed", checked
        update = checked["service"]["update_available"]
        assert (update["image"], update["digest"]) == (images.tag, second)
        assert checked["operation"] is None  # auto_update is off: nothing rolls
        for read in (
            api.get(f"/services/{service_id}").json(),
            api.get("/services", params={"stack_id": stack_id}).json()["items"][0],
        ):
            assert read["update_available"] == update
            assert read["revision"] == 1
        assert _running(engine, service_id) == {f"{first} {first_id}"}

        # auto_update alone is no new revision, so it rolls nothing.
        turned_on = api.patch(f"/services/{service_id}", json={"spec": {"auto_update": True}})
        assert turned_on.status_code == 202, turned_on.text
        assert turned_on.json()["service"]["revision"] == 1
        assert turned_on.json()["service"]["spec"]["auto_update"] is True
        _done(api, turned_on.json()["operation"])

        checked = _check(api, service_id)
        assert checked["outcome"] == "not_modified", checked  # the digest known is the new one
        assert checked["operation"] is not None
        _done(api, checked["operation"])
        assert _running(engine, service_id) == {f"{second} {second_id}"}
        read = api.get(f"/services/{service_id}").json()
        assert read["update_available"] is None
        revisions = api.get(f"/services/{service_id}/revisions").json()["items"]
        assert [(r["image_digest"], r["created_by"]) for r in revisions][-1] == (
            second,
            "system:image-check",
        )
        assert revisions[-1]["spec"] == revisions[0]["spec"] | {"auto_update": True}
        audited = api.get("/audit", params={"action": "auto_update_service"}).json()["items"]
        assert [(e["actor"], e["resource"]) for e in audited] == [
            ("system:image-check", f"services/{service_id}")
        ]

        metrics = api.client.get("/metrics").text
        assert f'berth_registry_checks_total{{registry="{bed.auth_registry}"}}' in metrics
        assert f'berth_registry_checks_not_modified_total{{registry="{bed.auth_registry}"}}' in (
            metrics
        )
    finally:
        if stack_id is not None:
            removed = api.delete(f"/stacks/{stack_id}")
            assert removed.status_code == 202, removed.text
            _done(api, removed.json()["operation"])
        images.cleanup()
        hosts.cleanup()

"""A registry's stored credentials go only to that registry's host: naming its registry_id for
an image on any other host is a 422 at the request, and a refusal in the worker for work queued
before (the testbed's open registry stands for the attacker's)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.operations import queue
from app.registries.schemas import same_registry
from tests.support import Api, Images
from tests.testbed import Testbed


@pytest.fixture
def images(api: Api, bed: Testbed) -> Iterator[Images]:
    helper = Images(api, bed)
    yield helper
    helper.cleanup()


def _names_both_hosts(response: httpx.Response, bed: Testbed, field: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert bed.registry in problem["detail"] and bed.auth_registry in problem["detail"]
    assert [error["loc"] for error in problem["errors"]] == [field]


def test_credentials_for_another_host_are_refused_at_the_request(
    images: Images, api: Api, bed: Testbed
) -> None:
    h1 = images.host()
    registry_id = images.registry(bed.registry_password)
    elsewhere = f"{bed.registry}/berth-test/elsewhere:1"

    pull = api.post(
        "/images/pull", json={"reference": elsewhere, "host_id": h1, "registry_id": registry_id}
    )
    _names_both_hosts(pull, bed, "body.registry_id")
    push = api.post(
        "/images/push", json={"reference": elsewhere, "host_id": h1, "registry_id": registry_id}
    )
    _names_both_hosts(push, bed, "body.registry_id")
    container = api.post(
        "/containers", json={"image": elsewhere, "host_id": h1, "registry_id": registry_id}
    )
    _names_both_hosts(container, bed, "body.registry_id")
    service = api.post(
        "/services",
        json={"name": "creds", "spec": {"image": elsewhere, "registry_id": registry_id}},
    )
    _names_both_hosts(service, bed, "body.registry_id")
    assert api.get("/operations").json()["items"] == []
    assert api.get("/containers").json()["items"] == []
    assert api.get("/services").json()["items"] == []


def test_the_worker_refuses_a_pull_queued_with_another_hosts_credentials(
    images: Images, api: Api, bed: Testbed
) -> None:
    h1 = images.host()
    registry_id = images.registry(bed.registry_password)
    with api.db.session() as session:
        operation = queue.enqueue(
            session,
            kind="image.pull",
            params={"reference": f"{bed.registry}/berth-test/x:1", "registry_id": registry_id},
            target_type="image",
            host_id=h1,
        )
        operation_id = operation.id
    done = api.wait_operation(operation_id, timeout=60)
    assert done["status"] == "failed" and done["attempts"] == 1, done
    assert "credentials go only to their own registry" in done["error"]
    logs = api.get(f"/operations/{operation_id}/logs").json()["items"]
    assert not any("with stored credentials" in line["message"] for line in logs)


def test_the_registrys_own_images_still_pull_with_its_credentials(
    images: Images, api: Api, bed: Testbed
) -> None:
    h1 = images.host()
    registry_id = images.registry(bed.registry_password)
    reference = images.reference(bed.auth_registry)
    assert images.build([reference])["status"] == "succeeded"
    # The stored URL (http://host:port) and the reference's host name one registry.
    for verb in ("push", "pull"):
        response = api.post(
            f"/images/{verb}",
            json={"reference": reference, "host_id": h1, "registry_id": registry_id},
        )
        assert response.status_code == 202, response.text
        done = api.wait_operation(response.json()["operation"]["id"], timeout=60)
        assert done["status"] == "succeeded", done


@pytest.mark.parametrize(
    ("stored", "referenced", "same"),
    [
        ("docker.io", "docker.io", True),
        ("docker.io", "registry-1.docker.io", True),
        ("registry.hub.docker.com", "docker.io", True),
        ("reg.example.com", "Reg.Example.com", True),
        ("reg.example.com:443", "reg.example.com", True),
        ("reg.example.com", "reg.example.com:80", True),
        ("reg.example.com", "reg.example.com:5000", False),
        ("10.203.0.1:5001", "10.203.0.1:5000", False),
        ("reg.example.com", "attacker.example", False),
        ("reg.example.com", "reg.example.com.attacker.example", False),
        ("docker.io", "attacker.example", False),
    ],
)
def test_same_registry(stored: str, referenced: str, same: bool) -> None:
    assert same_registry(stored, referenced) is same

"""No spec reaches the host's network namespace, or another container's, by a side door: the
`networks` list (whose first entry becomes the network mode) and `container:<x>` modes are
refused wherever a spec enters, before anything is queued or created on an engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from sqlalchemy import update

from app.containers.policy import check_container
from app.containers.schemas import ContainerSpec
from app.core.config import Settings
from app.core.errors import PolicyViolation
from app.services.models import Service, ServiceRevision
from tests.support import Api, wait_for
from tests.testbed import Testbed, remove_containers

HOST_NETWORK = ({"networks": ["host"]}, "networks.0", "BERTH_ALLOW_HOST_NAMESPACES")
OTHER_CONTAINER = (
    {"network_mode": "container:berth-test-anything"},
    "network_mode",
    "another container's namespace",
)


@pytest.fixture
def engine(bed: Testbed) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=bed.h1_url, timeout=60)
    yield client
    client.close()


@pytest.fixture
def host_id(api: Api, bed: Testbed) -> str:
    response = api.post("/hosts", json={"name": "h1", "url": bed.h1_url})
    assert response.status_code == 201, response.text
    host: str = response.json()["id"]
    return host


def _refused(response: Any, field: str, rule: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert rule in problem["detail"]
    assert field in [error["loc"] for error in problem["errors"]], problem


@pytest.mark.parametrize(("spec", "field", "rule"), [HOST_NETWORK, OTHER_CONTAINER])
def test_a_container_cannot_join_the_host_or_another_container(
    api: Api,
    bed: Testbed,
    engine: docker.DockerClient,
    host_id: str,
    spec: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    name = f"ns-{uuid.uuid4().hex[:8]}"
    try:
        response = api.post(
            "/containers", json={"image": bed.image, "host_id": host_id, "name": name, **spec}
        )
        _refused(response, f"body.{field}", rule)
        assert api.get("/operations").json()["items"] == []
        assert engine.containers.list(all=True, filters={"name": name}) == []
    finally:  # Only where the rule failed is there anything to remove.
        for made in engine.containers.list(all=True, filters={"name": name}):
            made.remove(force=True)


def test_a_service_cannot_reach_the_host_network_on_any_path(
    api: Api, bed: Testbed, engine: docker.DockerClient, host_id: str
) -> None:
    spec, field, rule = HOST_NETWORK
    base = {"image": bed.image, "replicas": 0}
    created = api.post("/services", json={"name": "ns-create", "spec": {**base, **spec}})
    _refused(created, f"body.{field}", rule)

    service = api.post("/services", json={"name": "ns-ok", "spec": base}).json()["service"]
    path = f"/services/{service['id']}"
    replaced = api.request("PUT", path, json={"spec": {**base, **spec}})
    _refused(replaced, f"body.{field}", rule)
    patched = api.patch(path, json={"spec": spec})
    _refused(patched, f"body.{field}", rule)

    # A revision stored before the rule existed is no way back in: rolling back to it is
    # checked like any new spec.
    assert api.patch(path, json={"spec": {"env": {"A": "1"}}}).status_code == 202
    with api.db.session() as session:
        session.execute(
            update(ServiceRevision)
            .where(ServiceRevision.service_id == service["id"], ServiceRevision.revision == 1)
            .values(spec={**base, **spec})
        )
    rolled_back = api.post(f"{path}/rollback")
    _refused(rolled_back, f"body.{field}", rule)

    assert api.get(path).json()["revision"] == 2
    made = engine.containers.list(all=True, filters={"label": f"berth.service={service['id']}"})
    assert made == []


def test_a_spec_stored_before_the_rule_starts_no_replica(
    api: Api, bed: Testbed, engine: docker.DockerClient, host_id: str
) -> None:
    base = {"image": bed.image, "replicas": 0, "command": ["sleep", "300"]}
    service = api.post("/services", json={"name": "ns-old", "spec": base}).json()["service"]
    stored = {**base, "networks": ["host"]}
    with api.db.session() as session:
        session.execute(update(Service).where(Service.id == service["id"]).values(spec=stored))
        session.execute(
            update(ServiceRevision)
            .where(ServiceRevision.service_id == service["id"])
            .values(spec=stored)
        )
    try:
        scaled = api.post(f"/services/{service['id']}/scale", json={"replicas": 1})
        assert scaled.status_code == 202, scaled.text

        def refused() -> bool:
            creates = api.get("/operations", params={"kind": "container.create"}).json()["items"]
            return any(
                op["status"] == "failed" and "BERTH_ALLOW_HOST_NAMESPACES" in (op["error"] or "")
                for op in creates
            )

        wait_for(refused, timeout=60, what="the worker to refuse the replica")
        made = engine.containers.list(all=True, filters={"label": f"berth.service={service['id']}"})
        assert made == []
    finally:
        api.post(f"/services/{service['id']}/scale", json={"replicas": 0})
        remove_containers(engine, f"berth.service={service['id']}")


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        ({"networks": ["host"]}, True),
        ({"network_mode": "container:other"}, False),
        ({"networks": ["hosted", "bridge"]}, True),
    ],
)
def test_the_setting_relaxes_the_host_network_but_never_a_container_namespace(
    settings: Settings, spec: dict[str, Any], allowed: bool
) -> None:
    relaxed = settings.model_copy(update={"allow_host_namespaces": True})
    container = ContainerSpec.model_validate({"image": "busybox", **spec})
    if allowed:
        check_container(container, relaxed)
    else:
        with pytest.raises(PolicyViolation):
            check_container(container, relaxed)

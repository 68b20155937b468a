"""Containers on the testbed's two real engines: lifecycle, live state, logs, stats, policy."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from fastapi.testclient import TestClient

from app.containers.watcher import StateWriter
from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.security.roles import Role
from tests.support import (
    Api,
    Fleet,
    PausedAfterListing,
    free_port,
    wait_for,
)
from tests.testbed import Testbed, remove_containers


@pytest.fixture
def fleet(api: Api, bed: Testbed) -> Iterator[Fleet]:
    helper = Fleet(api, bed)
    yield helper
    helper.cleanup()


def test_removed_behind_berths_back_shows_missing(fleet: Fleet) -> None:
    container = fleet.run(host_id=fleet.hosts["h1"], command=["sleep", "300"])
    fleet.engines["h1"].containers.get(container["docker_id"]).remove(force=True)
    fleet.wait_state(container["id"], "missing", timeout=30)


def test_crashing_container_shows_its_exit_code(fleet: Fleet) -> None:
    container = fleet.run(host_id=fleet.hosts["h2"], command=["sh", "-c", "exit 3"])
    crashed = fleet.wait_state(container["id"], "exited")
    assert crashed["exit_code"] == 3


def test_an_older_reading_never_overwrites_a_newer_one(fleet: Fleet, bed: Testbed) -> None:
    """A re-list that read the engine before the container died writes after the follower
    stored the death: the death stays (else the state is wrong until the next re-list)."""
    container = fleet.run(host_id=fleet.hosts["h1"], command=["sleep", "300"])
    slow = PausedAfterListing(bed.h1_url)
    context = fleet.api.client.app.state.context  # type: ignore[attr-defined]
    stale = StateWriter(context, fleet.hosts["h1"])
    relist = threading.Thread(target=stale.relist, args=(slow,))
    relist.start()
    try:
        assert slow.listed.wait(30)
        fleet.engines["h1"].containers.get(container["docker_id"]).kill()
        fleet.wait_state(container["id"], "exited")
    finally:
        slow.go_on.set()
        relist.join()
        slow.close()
    assert fleet.state(container["id"])["state"] == "exited"


def test_foreign_containers_are_listed_and_never_touched(fleet: Fleet) -> None:
    engine = fleet.engines["h1"]
    foreign = engine.containers.run(
        fleet.bed.image, ["sleep", "300"], detach=True, labels={"berth.test": "foreign"}
    )
    try:
        found = wait_for(
            lambda: [
                c
                for c in fleet.api.get("/containers", params={"host_id": fleet.hosts["h1"]}).json()[
                    "items"
                ]
                if c["docker_id"] == foreign.id and c["state"] == "running"
            ],
            timeout=30,
            # Its create event may be read before its start: listed `created` for a moment.
            what="the foreign container to be listed as running",
        )
        assert found[0]["managed"] is False
        refused = fleet.api.post(f"/containers/{found[0]['id']}/stop")
        assert refused.status_code == 409
        assert fleet.api.delete(f"/containers/{found[0]['id']}").status_code == 409
        foreign.reload()
        assert foreign.status == "running"
    finally:
        foreign.remove(force=True)
    wait_for(
        lambda: (
            not [
                c
                for c in fleet.api.get("/containers").json()["items"]
                if c["docker_id"] == foreign.id
            ]
        ),
        timeout=30,
        what="the foreign container to drop off the list",
    )


def test_stats_sample(fleet: Fleet) -> None:
    container = fleet.run(
        host_id=fleet.hosts["h1"], command=["sleep", "300"], resources={"memory_bytes": 64 * 2**20}
    )
    stats = fleet.api.get(f"/containers/{container['id']}/stats")
    assert stats.status_code == 200, stats.text
    sample = stats.json()
    assert sample["memory_used_bytes"] > 0
    assert sample["memory_limit_bytes"] == 64 * 2**20
    assert sample["cpu_percent"] >= 0 and sample["pids"] >= 1


@pytest.mark.parametrize(
    ("spec", "field", "rule"),
    [
        ({"privileged": True}, "body.privileged", "BERTH_ALLOW_PRIVILEGED"),
        ({"network_mode": "host"}, "body.network_mode", "BERTH_ALLOW_HOST_NAMESPACES"),
        ({"pid_mode": "host"}, "body.pid_mode", "BERTH_ALLOW_HOST_NAMESPACES"),
        ({"ipc_mode": "host"}, "body.ipc_mode", "BERTH_ALLOW_HOST_NAMESPACES"),
        ({"cap_add": ["SYS_ADMIN"]}, "body.cap_add", "BERTH_ALLOWED_CAPABILITIES"),
        ({"devices": ["/dev/fuse"]}, "body.devices", "BERTH_ALLOW_DEVICES"),
        (
            {"volumes": [{"source": "/etc", "target": "/host-etc"}]},
            "body.volumes.0.source",
            "BERTH_ALLOWED_BIND_PATHS",
        ),
        (
            {"volumes": [{"source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}]},
            "body.volumes.0.source",
            "BERTH_ALLOW_PRIVILEGED",
        ),
        ({"image": "evil.example.com/miner:1"}, "body.image", "BERTH_ALLOWED_REGISTRIES"),
    ],
)
def test_security_policy_refuses_each_rule(
    settings_factory: Callable[..., Settings],
    db: Database,
    bed: Testbed,
    spec: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    settings = settings_factory(allowed_registries=f"docker.io,{bed.registry}")
    with TestClient(create_app(settings)) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        body = {"image": "busybox:1.36", "host_id": host, **spec}
        response = api.post("/containers", json=body)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert rule in problem["detail"]
        assert field in [error["loc"] for error in problem["errors"]]
        assert api.get("/containers").json()["items"] == []
        assert api.get("/operations").json()["items"] == []


def test_an_admin_setting_relaxes_a_rule(
    settings_factory: Callable[..., Settings], db: Database, bed: Testbed, tmp_path: Any
) -> None:
    settings = settings_factory(allowed_bind_paths=str(tmp_path), allowed_capabilities="NET_ADMIN")
    with TestClient(create_app(settings)) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        body = {
            "image": bed.image,
            "host_id": host,
            "start": False,
            "cap_add": ["NET_ADMIN"],
            "volumes": [{"source": str(tmp_path / "data"), "target": "/data", "read_only": True}],
        }
        response = api.post("/containers", json=body)
        assert response.status_code == 202, response.text
        engine = docker.DockerClient(base_url=bed.h1_url)
        try:
            api.wait_operation(response.json()["operation"]["id"])
        finally:
            remove_containers(engine, "berth.managed=true")
            engine.close()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"ports": [{"container_port": 0}]}, "body.ports.0.container_port"),
        ({"ports": [{"container_port": 80, "host_port": 70000}]}, "body.ports.0.host_port"),
        ({"ports": [{"container_port": 80, "host_ip": "not-an-ip"}]}, "body.ports.0.host_ip"),
        ({"name": "bad name"}, "body.name"),
        ({"env": {"1BAD": "x"}}, "body.env.1BAD.[key]"),
        ({"resources": {"memory_bytes": 1000}}, "body.resources.memory_bytes"),
        ({"resources": {"cpus": -1}}, "body.resources.cpus"),
        ({"restart_policy": "sometimes"}, "body.restart_policy"),
        ({"healthcheck": {"test": ["RUN", "x"]}}, "body.healthcheck.test"),
        ({"volumes": [{"source": "data", "target": "relative"}]}, "body.volumes.0.target"),
        ({"image": "UPPER:case"}, "body.image"),
        ({"labels": {"berth.container": "x"}}, "body.labels"),
        ({"unknown_field": 1}, "body.unknown_field"),
    ],
)
def test_invalid_specs_name_the_field(fleet: Fleet, spec: dict[str, Any], field: str) -> None:
    body = fleet.create(expect=422, host_id=fleet.hosts["h1"], **spec)
    assert field in [error["loc"] for error in body["errors"]], body
    assert fleet.api.get("/operations").json()["items"] == []


def test_viewer_cannot_create(fleet: Fleet) -> None:
    response = fleet.api.post("/containers", role=Role.viewer, json={"image": fleet.bed.image})
    assert response.status_code == 403


def test_port_clash_on_a_host_is_refused(fleet: Fleet) -> None:
    port = free_port()
    ports = [{"container_port": 8080, "host_port": port, "host_ip": "127.0.0.1"}]
    fleet.create(host_id=fleet.hosts["h1"], command=["sleep", "300"], ports=ports)
    clash = fleet.create(
        expect=409,
        host_id=fleet.hosts["h1"],
        command=["sleep", "300"],
        ports=[{"container_port": 9090, "host_port": port}],
    )
    assert "already published" in clash["detail"]
    # Another host is another set of ports.
    fleet.create(host_id=fleet.hosts["h2"], command=["sleep", "300"], ports=ports)


def test_scheduler_places_by_constraints_and_fewest_containers(fleet: Fleet) -> None:
    on_h2 = fleet.create(command=["sleep", "300"], placement={"constraints": ["name==h2"]})
    assert on_h2["container"]["host_id"] == fleet.hosts["h2"]
    # h1 now runs fewer containers, so it gets the next one; and the one after goes to h2 again.
    first = fleet.create(command=["sleep", "300"])
    second = fleet.create(command=["sleep", "300"])
    assert first["container"]["host_id"] == fleet.hosts["h1"]
    assert second["container"]["host_id"] in (fleet.hosts["h1"], fleet.hosts["h2"])
    nowhere = fleet.create(
        expect=409, command=["sleep", "300"], placement={"constraints": ["name==h9"]}
    )
    assert "constraint name==h9 not met" in nowhere["detail"]
    too_big = fleet.create(expect=409, command=["sleep", "300"], resources={"cpus": 512})
    assert "not enough CPU" in too_big["detail"]


def test_named_volume_and_network_are_created_on_the_host(fleet: Fleet) -> None:
    volume = f"berth-test-vol-{uuid.uuid4().hex[:6]}"
    network = f"berth-test-net-{uuid.uuid4().hex[:6]}"
    container = fleet.run(
        host_id=fleet.hosts["h2"],
        command=["sh", "-c", "echo kept > /data/file; sleep 300"],
        volumes=[{"source": volume, "target": "/data"}],
        networks=[network],
        healthcheck={"test": ["CMD-SHELL", "test -f /data/file"], "interval_s": 0.5, "retries": 2},
    )
    engine = fleet.engines["h2"]
    assert engine.volumes.get(volume).attrs["Labels"]["berth.managed"] == "true"
    assert (
        network
        in engine.containers.get(container["docker_id"]).attrs["NetworkSettings"]["Networks"]
    )
    healthy = wait_for(
        lambda: fleet.state(container["id"])["health"] == "healthy", timeout=15, what="healthy"
    )
    assert healthy


def test_missing_image_is_pulled_first_with_the_registry_credentials(
    fleet: Fleet, bed: Testbed
) -> None:
    engine = fleet.engines["h1"]
    reference = f"{bed.auth_registry}/berth-test/run-{uuid.uuid4().hex[:8]}:1"
    image = engine.images.get(bed.image)
    image.tag(reference)
    auth = {"username": bed.registry_user, "password": bed.registry_password}
    for line in engine.images.push(reference, auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
    engine.images.remove(reference)
    fleet.api.post(
        "/registries",
        json={
            "name": "auth",
            "url": f"http://{bed.auth_registry}",
            "username": bed.registry_user,
            "password": bed.registry_password,
        },
    )
    try:
        container = fleet.run(host_id=fleet.hosts["h1"], image=reference, command=["sleep", "300"])
        assert container["state"] == "running"
        operations = fleet.api.get("/operations", params={"target_id": container["id"]}).json()[
            "items"
        ]
        logs = fleet.api.get(f"/operations/{operations[0]['id']}/logs").json()["items"]
        assert any("with stored credentials" in line["message"] for line in logs)
    finally:
        remove_containers(engine, "berth.managed=true")
        engine.images.remove(reference, force=True)


def test_create_is_idempotent_across_a_retry(fleet: Fleet, db: Database) -> None:
    """A second run of the create operation (as after a crash) finds the first's container."""
    from app.operations import queue

    container = fleet.run(host_id=fleet.hosts["h1"], command=["sleep", "300"])
    with db.session() as session:
        queue.enqueue(
            session,
            kind="container.create",
            target_type="container",
            target_id=container["id"],
            host_id=fleet.hosts["h1"],
        )
    time.sleep(0.1)
    operations = fleet.api.get("/operations", params={"target_id": container["id"]}).json()["items"]
    done = fleet.api.wait_operation(operations[-1]["id"])
    assert done["status"] == "succeeded"
    assert (
        len(
            fleet.engines["h1"].containers.list(
                all=True, filters={"label": f"berth.container={container['id']}"}
            )
        )
        == 1
    )


def test_list_items_match_single_reads(fleet: Fleet) -> None:
    """Lists are serialised on a fast path; they must say exactly what a single read says."""
    made = fleet.run(
        host_id=fleet.hosts["h1"],
        command=["sleep", "300"],
        healthcheck=HEALTHY_CHECK,
        resources={"cpus": 0.5},
    )
    foreign = fleet.engines["h1"].containers.run(
        fleet.bed.image, ["sleep", "300"], detach=True, labels={"berth.test": "list"}
    )
    try:
        wait_for(
            lambda: len(fleet.api.get("/containers").json()["items"]) >= 2,
            timeout=30,
            what="both listed",
        )

        def same() -> bool:
            # The watcher may record a health change between the two reads: compare again.
            items = fleet.api.get("/containers").json()["items"]
            return all(i == fleet.api.get(f"/containers/{i['id']}").json() for i in items)

        wait_for(same, timeout=15, what="list items equal to single reads")
        assert any(
            item["id"] == made["id"] for item in fleet.api.get("/containers").json()["items"]
        )
    finally:
        foreign.remove(force=True)


HEALTHY_CHECK = {"test": ["CMD-SHELL", "true"], "interval_s": 1}

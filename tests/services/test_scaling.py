"""One service of four replicas over both engines, run once for the module: spread, healed
after a replica is killed and after one is removed behind Berth's back, scaled up and down,
deleted. Each test checks one behaviour against what that run saw."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import HEALTHY, Api, Services, wait_for
from tests.testbed import Testbed


@dataclass(frozen=True)
class Life:
    spread: dict[str, int]  # running replicas per host, once the four ran
    create_operation: dict[str, Any]
    killed: dict[str, Any]  # the task whose container was killed on h1
    after_kill: dict[str, Any]
    removed: dict[str, Any]  # the task whose container was removed on h2
    after_removal: dict[str, Any]
    spread_scaled_up: dict[str, int]
    running_after_scale_down: dict[str, int]
    revisions: list[dict[str, Any]]
    running_after_delete: dict[str, int]


def _gone(services: Services, service_id: str, task: dict[str, Any]) -> bool:
    return task["container_id"] not in [
        t["container_id"] for t in services.get(service_id)["tasks"]
    ]


@pytest.fixture(scope="module")
def life(module_api: Api, bed: Testbed) -> Iterator[Life]:
    services = Services(module_api, bed)
    api = module_api
    try:
        body = services.create(replicas=4, healthcheck=HEALTHY)
        service_id = body["service"]["id"]
        created = services.settled(service_id, 4)
        create_operation = api.wait_operation(body["operation"]["id"], timeout=30)

        killed = next(t for t in created["tasks"] if services.per_host({"tasks": [t]}) == {"h1": 1})
        docker_id = api.get(f"/containers/{killed['container_id']}").json()["docker_id"]
        services.engines["h1"].containers.get(docker_id).kill()
        wait_for(
            lambda: _gone(services, service_id, killed),
            timeout=30,
            what="the killed replica replaced",
        )
        after_kill = services.settled(service_id, 4)

        removed = next(
            t for t in after_kill["tasks"] if services.per_host({"tasks": [t]}) == {"h2": 1}
        )
        docker_id = api.get(f"/containers/{removed['container_id']}").json()["docker_id"]
        services.engines["h2"].containers.get(docker_id).remove(force=True)
        wait_for(
            lambda: _gone(services, service_id, removed),
            timeout=30,
            what="the removed replica recreated",
        )
        after_removal = services.settled(service_id, 4)

        assert api.post(f"/services/{service_id}/scale", json={"replicas": 6}).status_code == 202
        scaled_up = services.settled(service_id, 6)
        assert api.post(f"/services/{service_id}/scale", json={"replicas": 1}).status_code == 202
        services.settled(service_id, 1)

        def one_left() -> dict[str, int] | None:
            # An engine that did not answer reads -1, which would make 2 + -1 look like 1:
            # only a reading of both engines counts.
            counts = services.running_on_engines(service_id)
            return counts if min(counts.values()) >= 0 and sum(counts.values()) == 1 else None

        running_after_scale_down = wait_for(one_left, timeout=30, what="surplus removed")
        revisions = api.get(f"/services/{service_id}/revisions").json()["items"]

        deleted = api.delete(f"/services/{service_id}")
        assert deleted.status_code == 202
        wait_for(
            lambda: api.get(f"/services/{service_id}").status_code == 404,
            timeout=30,
            what="service removed",
        )
        yield Life(
            spread=services.per_host(created),
            create_operation=create_operation,
            killed=killed,
            after_kill=after_kill,
            removed=removed,
            after_removal=after_removal,
            spread_scaled_up=services.per_host(scaled_up),
            running_after_scale_down=running_after_scale_down,
            revisions=revisions,
            running_after_delete=services.running_on_engines(service_id),
        )
    finally:
        services.cleanup()


def test_replicas_spread_evenly_over_both_hosts(life: Life) -> None:
    assert life.spread == {"h1": 2, "h2": 2}


def test_the_create_operation_succeeds_with_every_replica_healthy(life: Life) -> None:
    assert life.create_operation["status"] == "succeeded"
    assert life.create_operation["result"]["healthy"] == 4


def test_a_killed_replica_is_replaced_in_its_slot(life: Life) -> None:
    tasks = life.after_kill["tasks"]
    assert life.killed["container_id"] not in [t["container_id"] for t in tasks]
    assert sorted(t["slot"] for t in tasks) == [1, 2, 3, 4]


def test_a_replica_removed_behind_berths_back_is_recreated(life: Life) -> None:
    tasks = life.after_removal["tasks"]
    assert life.removed["container_id"] not in [t["container_id"] for t in tasks]
    assert life.after_removal["replicas"]["running"] == 4


def test_scaling_up_spreads_the_new_replicas(life: Life) -> None:
    assert life.spread_scaled_up == {"h1": 3, "h2": 3}


def test_scaling_down_removes_the_surplus_from_the_engines(life: Life) -> None:
    assert sum(life.running_after_scale_down.values()) == 1


def test_scaling_is_no_revision(life: Life) -> None:
    assert life.revisions[0]["revision"] == 1
    assert len(life.revisions) == 1, "scaling is no revision"


def test_deleting_removes_every_replica_from_the_engines(life: Life) -> None:
    assert life.running_after_delete == {"h1": 0, "h2": 0}

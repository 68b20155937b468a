"""Services on the real engines where starting is the hard part: replicas created together on a
new network, a network the engine already holds twice, and a replica the engine will not start
(its host port is taken), which is replaced with backoff, said why, and given up on by its
`service.converge` after the deadline."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support import IMPATIENT_DEADLINE_S, Services, wait_for


def networks_named(engine: docker.DockerClient, name: str) -> list[Any]:
    # The engine's name filter matches parts of names.
    return [n for n in engine.networks.list(names=[name]) if n.name == name]


@contextlib.contextmanager
def network_removed(services: Services, name: str) -> Iterator[str]:
    try:
        yield name
    finally:
        for engine in services.engines.values():
            for network in networks_named(engine, name):
                with contextlib.suppress(docker.errors.DockerException):
                    network.remove()


@pytest.mark.parametrize("attempt", range(3))
def test_services_created_together_share_one_new_network(services: Services, attempt: int) -> None:
    # The race is a matter of timing: each attempt is a new network, created by nine
    # replicas at once on both hosts.
    with network_removed(services, f"shared-{uuid.uuid4().hex[:8]}") as name:
        bodies = [services.create(replicas=3, networks=[name]) for _ in range(3)]
        for body in bodies:
            services.settled(body["service"]["id"], 3, timeout=90)
        for done in (services.api.wait_operation(b["operation"]["id"]) for b in bodies):
            assert done["status"] == "succeeded", done["error"]
        used = {
            host
            for body in bodies
            for host in services.per_host(services.get(body["service"]["id"]))
        }
        for host in used:
            assert len(networks_named(services.engines[host], name)) == 1, host


def test_a_network_the_engine_holds_twice_is_repaired(services: Services) -> None:
    engine = services.engines["h1"]
    with network_removed(services, f"twice-{uuid.uuid4().hex[:8]}") as name:
        # What an earlier race left: two networks of one name, both Berth's.
        labels = {"berth.managed": "true"}
        first = engine.networks.create(name, driver="bridge", labels=labels)
        engine.networks.create(name, driver="bridge", labels=labels)
        assert len(networks_named(engine, name)) == 2
        body = services.create(replicas=2, networks=[name], placement={"constraints": ["name==h1"]})
        services.settled(body["service"]["id"], 2)
        left = networks_named(engine, name)
        assert [n.id for n in left] == [first.id]  # the older one stays
        replicas = engine.containers.list(
            filters={"label": f"berth.service={body['service']['id']}", "status": "running"}
        )
        attached = [c.attrs["NetworkSettings"]["Networks"][name]["NetworkID"] for c in replicas]
        assert attached == [first.id, first.id]


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    """A port on h1's loopback held by the test, as another program would hold it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder


def test_a_replica_that_cannot_start_is_replaced_and_says_why(
    impatient: Services, taken_port: socket.socket
) -> None:
    services = impatient
    port = taken_port.getsockname()[1]
    body = services.create(
        replicas=1,
        ports=[{"container_port": 8080, "host_port": port, "host_ip": "127.0.0.1"}],
        placement={"constraints": ["name==h1"]},
        update_config={"monitor_s": 0},
    )
    service_id = body["service"]["id"]

    # The converge gives up after the deadline, with the engine's reason.
    done = services.api.wait_operation(body["operation"]["id"], timeout=60)
    assert done["status"] == "failed", done
    assert f"no further replica became ready in {IMPATIENT_DEADLINE_S} s" in done["error"]
    assert "address already in use" in done["error"], done["error"]

    # The service says why, and keeps replacing the replica (with backoff) meanwhile.
    seen: set[str] = set()

    def replaced() -> dict[str, Any] | None:
        svc = services.get(service_id)
        seen.update(t["container_id"] for t in svc["tasks"])
        return svc if len(seen) >= 2 else None

    svc = wait_for(replaced, timeout=60, what="the replica replaced")
    assert svc["status"] == "converging"
    assert "replica 1: " in svc["status_detail"]
    assert "address already in use" in svc["status_detail"], svc["status_detail"]

    # Once the port is free, a replacement runs.
    taken_port.close()
    svc = services.settled(service_id, 1, timeout=90)
    assert svc["status_detail"] is None
    assert [t["error"] for t in svc["tasks"]] == [None]

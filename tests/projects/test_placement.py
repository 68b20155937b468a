"""Projects on the real engines: h2 dedicated to project beta, h1 shared. A project's replicas
land only on hosts it may use, a container pinned elsewhere is refused, and a policy relaxation
lets a privileged container through in its own project only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import HTTPD, Api, BothHosts, wait_for
from tests.testbed import Testbed, remove_containers


@pytest.fixture
def hosts(api: Api, bed: Testbed) -> Iterator[BothHosts]:
    both = BothHosts(api, bed)
    for name in ("alpha", "beta"):
        assert api.post("/projects", json={"name": name}).status_code == 201
    dedicated = api.request("PUT", f"/projects/beta/hosts/{both.hosts['h2']}")
    assert dedicated.status_code == 204, dedicated.text
    assert api.get("/projects/beta").json()["hosts"] == [both.hosts["h2"]]
    yield both
    # Only what this test made: other tests may be using the engines meanwhile.
    made = api.get("/containers", params={"limit": 500}).json()["items"]
    for engine in both.engines.values():
        for container in made:
            remove_containers(engine, f"berth.container={container['id']}")
        engine.close()
    # h2 shared again (the database is emptied for the next test anyway).
    api.delete(f"/projects/beta/hosts/{both.hosts['h2']}")


def _tasks_by_host(api: Api, service_id: str, replicas: int) -> dict[str, str]:
    def settled() -> dict[str, str] | None:
        service = api.get(f"/services/{service_id}").json()
        tasks = [t for t in service["tasks"] if t["desired_state"] == "running"]
        running = service["replicas"]["running"] == replicas == len(tasks)
        return {t["container_id"]: t["host_id"] for t in tasks} if running else None

    found: dict[str, str] = wait_for(settled, timeout=90, interval=0.3, what="replicas running")
    return found


def test_replicas_land_only_on_hosts_their_project_may_use(
    api: Api, bed: Testbed, hosts: BothHosts
) -> None:
    spec = {"image": bed.image, "command": HTTPD, "replicas": 2}
    alpha = api.post("/services", json={"name": "web-a", "project": "alpha", "spec": spec})
    beta = api.post("/services", json={"name": "web-b", "project": "beta", "spec": spec})
    assert alpha.status_code == beta.status_code == 202, (alpha.text, beta.text)
    # Alpha may not use h2: both its replicas on h1. Beta spreads over h1 and its own h2.
    alpha_hosts = _tasks_by_host(api, alpha.json()["service"]["id"], 2)
    assert set(alpha_hosts.values()) == {hosts.hosts["h1"]}
    beta_hosts = _tasks_by_host(api, beta.json()["service"]["id"], 2)
    assert set(beta_hosts.values()) == {hosts.hosts["h1"], hosts.hosts["h2"]}
    replica = api.get(f"/containers/{next(iter(alpha_hosts))}").json()
    assert replica["project"] == "alpha"

    pinned = api.post(
        "/containers",
        json={
            "image": bed.image,
            "command": HTTPD,
            "host_id": hosts.hosts["h2"],
            "project": "alpha",
        },
    )
    assert pinned.status_code == 422
    assert "dedicated to other projects" in pinned.json()["detail"]


def test_a_relaxation_lets_a_privileged_container_through_in_its_project_only(
    api: Api, bed: Testbed, hosts: BothHosts
) -> None:
    assert api.patch("/projects/alpha", json={"relaxations": ["privileged"]}).status_code == 200
    # Created, not started: the testbed's engines may not grant a privileged container its
    # capabilities, and the engine's own record is what shows the relaxation reached it.
    body = {"image": bed.image, "privileged": True, "host_id": hosts.hosts["h1"], "start": False}
    refused = api.post("/containers", json={**body, "project": "beta"})
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("policy-violation")
    accepted = api.post("/containers", json={**body, "project": "alpha"})
    assert accepted.status_code == 202, accepted.text
    done = api.wait_operation(accepted.json()["operation"]["id"], timeout=60)
    assert done["status"] == "succeeded", done
    container = api.get(f"/containers/{accepted.json()['container']['id']}").json()
    inspected = hosts.engines["h1"].containers.get(container["docker_id"])
    assert inspected.attrs["HostConfig"]["Privileged"] is True

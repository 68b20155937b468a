"""Services on the testbed's two real engines: replicas, self-healing, host failure, rolling
updates with rollback, scaling, placement, drain, and a restart of Berth mid-update."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support import (
    BOOTSTRAP_TOKEN,
    HEALTHY,
    HTTPD,
    Api,
    Services,
    free_port,
    stop_process,
    wait_for,
)
from tests.testbed import ROOT, Testbed, remove_containers

FAST_UPDATE = {
    "parallelism": 1,
    "delay_s": 0,
    "order": "start-first",
    "failure_action": "rollback",
    "monitor_s": 1,
}


@pytest.fixture
def h2_restored(bed: Testbed) -> Iterator[None]:
    yield
    bed.start_engine("h2")


def test_replicas_move_off_a_dead_host_and_settle_when_it_returns(
    services: Services, api: Api, bed: Testbed, h2_restored: None
) -> None:
    body = services.create(replicas=2, placement={"constraints": [], "max_per_host": 2})
    svc = services.settled(body["service"]["id"], 2)
    assert services.per_host(svc) == {"h1": 1, "h2": 1}
    bed.stop_engine("h2")
    moved = wait_for(
        lambda: (
            (s := services.get(svc["id"]))["replicas"]["running"] == 2
            and services.per_host(
                {
                    "tasks": [
                        t
                        for t in s["tasks"]
                        if t["state"] == "running" and t["host_id"] == services.hosts["h1"]
                    ]
                }
            )
            == {"h1": 2}
        ),
        timeout=60,
        interval=0.3,
        what="both replicas running on h1",
    )
    assert moved
    bed.start_engine("h2")
    wait_for(
        lambda: api.get(f"/hosts/{services.hosts['h2']}").json()["status"] == "ready",
        timeout=60,
        what="h2 back",
    )
    wait_for(
        lambda: services.running_on_engines(svc["id"]) in ({"h1": 2, "h2": 0}, {"h1": 1, "h2": 1}),
        timeout=60,
        interval=0.5,
        what="exactly two replicas across the engines",
    )
    final = services.settled(svc["id"], 2)
    assert len([t for t in final["tasks"] if t["desired_state"] == "running"]) == 2
    assert sum(services.running_on_engines(svc["id"]).values()) == 2


def test_failed_update_rolls_back_while_the_old_revision_serves(
    services: Services, api: Api, bed: Testbed
) -> None:
    port = free_port()
    spec = {
        "replicas": 1,
        "ports": [{"container_port": 8080, "host_port": port}],
        "healthcheck": HEALTHY,
        "update_config": FAST_UPDATE,
    }
    body = services.create(**spec)
    svc = services.settled(body["service"]["id"], 1)
    urls = [f"http://127.0.0.1:{port}/", f"http://10.203.0.2:{port}/"]
    answered = wait_for(
        lambda: any(_answers(u) for u in urls), timeout=30, what="the service to answer"
    )
    assert answered

    outages: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        # Two failed probes in a row, 0.1 s apart, is an outage: a removed replica refuses at
        # once and stays gone, whereas one slow answer on a busy machine is not an outage.
        failed_before = False
        while not stop.is_set():
            failed = not any(_answers(url) for url in urls)
            if failed and failed_before:
                outages.append(time.monotonic())
            failed_before = failed
            stop.wait(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        bad = {
            **svc["spec"],
            "healthcheck": {**HEALTHY, "test": ["CMD-SHELL", "exit 1"]},
            "env": {"REVISION": "2"},
        }
        response = api.request("PUT", f"/services/{svc['id']}", json={"spec": bad})
        assert response.status_code == 202, response.text
        done = api.wait_operation(response.json()["operation"]["id"], timeout=90)
        assert done["status"] == "failed"
        assert "rolled back" in done["error"] or "being rolled back" in done["error"]
        final = services.settled(svc["id"], 1)
    finally:
        stop.set()
        prober.join()
    assert final["revision"] == 1
    assert final["status_detail"].startswith("rolled back")
    assert outages == [], "the old revision must serve throughout a start-first update"
    assert [r["revision"] for r in api.get(f"/services/{svc['id']}/revisions").json()["items"]] == [
        1,
        2,
    ]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def test_rolling_update_and_rollback_endpoint(services: Services, api: Api) -> None:
    body = services.create(
        replicas=2, healthcheck=HEALTHY, update_config=FAST_UPDATE, env={"V": "1"}
    )
    svc = services.settled(body["service"]["id"], 2)
    plan = api.post(
        f"/services/{svc['id']}/plan",
        json={"spec": {**svc["spec"], "env": {"V": "2"}, "replicas": 3}},
    ).json()
    assert plan["revision_change"] is True
    assert len(plan["replace"]) == 2 and len(plan["start"]) == 1 and plan["stop"] == []
    patched = api.patch(f"/services/{svc['id']}", json={"spec": {"env": {"V": "2"}}})
    assert patched.status_code == 202
    assert (
        api.wait_operation(patched.json()["operation"]["id"], timeout=90)["status"] == "succeeded"
    )
    svc = services.settled(svc["id"], 2)
    assert svc["revision"] == 2 and {t["revision"] for t in svc["tasks"]} == {2}
    back = api.post(f"/services/{svc['id']}/rollback")
    assert back.status_code == 202
    assert api.wait_operation(back.json()["operation"]["id"], timeout=90)["status"] == "succeeded"
    svc = services.settled(svc["id"], 2)
    assert svc["revision"] == 3 and svc["spec"]["env"] == {"V": "1"}


def test_unplaceable_replicas_are_reported(services: Services) -> None:
    body = services.create(replicas=2, placement={"constraints": ["name==nowhere"]})
    svc = wait_for(
        lambda: (s := services.get(body["service"]["id"]))["status"] == "degraded" and s,
        timeout=30,
        what="degraded",
    )
    assert "constraint name==nowhere not met" in svc["status_detail"]
    assert svc["replicas"] == {"desired": 2, "running": 0, "healthy": 0}


def test_drain_moves_replicas_off_first(services: Services, api: Api) -> None:
    body = services.create(replicas=2, update_config=FAST_UPDATE)
    svc = services.settled(body["service"]["id"], 2)
    drained = api.post(f"/hosts/{services.hosts['h2']}/drain")
    assert drained.status_code == 202
    done = api.wait_operation(drained.json()["operation"]["id"], timeout=90)
    assert done["status"] == "succeeded", done
    svc = services.settled(svc["id"], 2)
    assert services.per_host(svc) == {"h1": 2}
    assert api.get(f"/hosts/{services.hosts['h2']}").json()["schedulable"] is False


def test_invalid_service_specs(services: Services, api: Api) -> None:
    bad = api.post("/services", json={"name": "Bad Name", "spec": {"image": "x"}})
    assert bad.status_code == 422
    policy = api.post(
        "/services", json={"name": "p", "spec": {"image": services.bed.image, "privileged": True}}
    )
    assert policy.status_code == 422
    secret = api.post(
        "/services",
        json={"name": "s", "spec": {"image": services.bed.image, "secrets": [{"name": "db"}]}},
    )
    assert secret.status_code == 422
    assert api.get("/services").json()["items"] == []


def test_berth_killed_mid_update_finishes_it(bed: Testbed, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "BERTH_DATABASE_URL": f"sqlite:///{tmp_path / 'berth.db'}",
            "BERTH_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
            "BERTH_REGISTER_LOCAL_HOST": "false",
            "BERTH_LEASE_SECONDS": "3",
            "BERTH_RECONCILE_INTERVAL_SECONDS": "0.5",
            "BERTH_HOST_PROBE_INTERVAL_SECONDS": "0.5",
            "BERTH_LOG_LEVEL": "WARNING",
        }
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    client = httpx.Client(base_url=base, headers=headers, timeout=30)

    def up() -> bool:
        try:
            return client.get("/me").status_code == 200
        except httpx.HTTPError:
            return False

    engines = {
        "h1": docker.DockerClient(base_url=bed.h1_url),
        "h2": docker.DockerClient(base_url=bed.h2_url),
    }
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_for(up, timeout=30, what="berth serve")
        for name in ("h1", "h2"):
            client.post("/hosts", json={"name": name, **bed.host(name)})
        wait_for(
            lambda: all(h["status"] == "ready" for h in client.get("/hosts").json()["items"]),
            timeout=60,
            what="hosts",
        )
        spec = {
            "image": bed.image,
            "command": HTTPD,
            "replicas": 2,
            "healthcheck": HEALTHY,
            "update_config": {**FAST_UPDATE, "monitor_s": 2},
        }
        created = client.post("/services", json={"name": "crash", "spec": spec}).json()
        service_id = created["service"]["id"]
        wait_for(
            lambda: client.get(f"/services/{service_id}").json()["status"] == "running",
            timeout=60,
            what="running",
        )
        update = client.put(f"/services/{service_id}", json={"spec": {**spec, "env": {"V": "2"}}})
        assert update.status_code == 202
        wait_for(
            lambda: any(
                t["revision"] == 2 for t in client.get(f"/services/{service_id}").json()["tasks"]
            ),
            timeout=30,
            interval=0.05,
            what="the update to start",
        )
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
        wait_for(up, timeout=30, what="berth serve again")

        def finished() -> bool:
            svc = client.get(f"/services/{service_id}").json()
            live = [t for t in svc["tasks"] if t["desired_state"] == "running"]
            return (
                svc["status"] == "running"
                and svc["revision"] == 2
                and len(live) == 2
                and {t["revision"] for t in live} == {2}
            )

        wait_for(
            finished, timeout=90, interval=0.3, what="the update to complete after the restart"
        )
        done = client.get(
            f"/operations/{update.json()['operation']['id']}", params={"wait": 30}
        ).json()
        assert done["status"] == "succeeded", done

        def on_engines() -> int:
            return sum(
                len(
                    e.containers.list(
                        filters={"label": f"berth.service={service_id}", "status": "running"}
                    )
                )
                for e in engines.values()
            )

        wait_for(lambda: on_engines() == 2, timeout=30, what="no duplicate replicas on the engines")
    finally:
        stop_process(server, grace=30)
        client.close()
        for engine in engines.values():
            remove_containers(engine, "berth.managed=true")
            engine.close()

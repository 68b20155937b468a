"""The hollow engine (bench/hollow) stays usable: Berth's own docker client talks to it, and a
container run through Berth's API lands on it. A scale instrument only; functional tests of
Berth run on real engines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.engine.docker_engine import DockerEngine
from app.engine.errors import EngineError, ObjectNotFound
from bench.hollow.fleet import SEED_IMAGE, HollowFleet, running
from tests.support import Api, host_ready, wait_for


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[HollowFleet, asyncio.AbstractEventLoop]]:
    hollow = HollowFleet(2, socket_dir=tmp_path)
    with running(hollow) as loop:
        yield hollow, loop


def test_docker_client_runs_a_container_and_hears_its_events(
    fleet: tuple[HollowFleet, asyncio.AbstractEventLoop],
) -> None:
    hollow, _ = fleet
    engine = DockerEngine(hollow.engines[0].url, timeout=5)
    try:
        engine.ping()
        assert engine.facts().engine_version == "27.0.0-hollow"
        stream = engine.events()
        heard: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: heard.extend(stream), daemon=True)
        reader.start()
        docker_id = engine.create_container_raw(
            "web-1", {"Image": SEED_IMAGE, "Labels": {"berth.container": "c1"}}
        )
        engine.start_container(docker_id)
        assert engine.inspect_container(docker_id)["State"]["Status"] == "running"
        listed = engine.list_containers(labels={"berth.container": "c1"})
        assert [c["Id"] for c in listed] == [docker_id]
        assert engine.ensure_network("net", {"berth.managed": "true"})
        assert not engine.ensure_network("net", {"berth.managed": "true"})
        assert engine.ensure_volume("vol", {"berth.managed": "true"})
        engine.stop_container(docker_id, timeout=1)
        engine.remove_container(docker_id)
        with pytest.raises(ObjectNotFound):
            engine.inspect_container(docker_id)
        wait_for(lambda: len(heard) >= 5, timeout=5, what="events")
        stream.close()
        assert [e["Action"] for e in heard[:5]] == ["create", "start", "stop", "die", "destroy"]
    finally:
        engine.close()


def test_a_dead_engine_refuses(fleet: tuple[HollowFleet, asyncio.AbstractEventLoop]) -> None:
    hollow, loop = fleet
    engine = DockerEngine(hollow.engines[1].url, timeout=5)
    try:
        engine.ping()
        asyncio.run_coroutine_threadsafe(hollow.engines[1].die(), loop).result(5)
        with pytest.raises(EngineError):
            engine.ping()
    finally:
        engine.close()


def test_berth_runs_a_container_on_a_hollow_host(
    api: Api, fleet: tuple[HollowFleet, asyncio.AbstractEventLoop]
) -> None:
    hollow, _ = fleet
    host_id = api.post("/hosts", json={"name": "hollow", "url": hollow.engines[0].url}).json()["id"]
    wait_for(partial(host_ready, api, host_id), timeout=30, what="hollow host ready")
    response = api.post(
        "/containers", json={"name": "web", "image": SEED_IMAGE, "host_id": host_id}
    )
    assert response.status_code == 202, response.text
    done = api.wait_operation(response.json()["operation"]["id"], timeout=30)
    assert done["status"] == "succeeded", done
    container_id = response.json()["container"]["id"]
    assert api.get(f"/containers/{container_id}").json()["state"] == "running"
    [hollow_container] = hollow.engines[0].containers.values()
    assert hollow_container.status == "running"
    assert hollow_container.labels["berth.container"] == container_id

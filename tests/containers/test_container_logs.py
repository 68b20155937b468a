"""A container's logs through a real server (uvicorn, as `berth serve` runs it): followers that
stream and disconnect, and a tail with timestamps. One ticking container serves the module."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import httpx
import pytest

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, served, wait_for
from tests.testbed import Testbed, remove_containers

HEADERS = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}


@dataclass(frozen=True)
class Ticker:
    """A container printing line-1, line-2, ... a second apart, and the server it is seen by."""

    base: str  # the API's base URL
    host_id: str
    container_id: str


@contextmanager
def _running(client: httpx.Client, bed: Testbed, body: dict[str, Any]) -> Iterator[str]:
    """Create a container through the API, wait for its operation, remove it afterwards."""
    accepted = client.post("/containers", json={"image": bed.image, **body}).json()
    container_id: str = accepted["container"]["id"]
    engine = docker.DockerClient(base_url=bed.h1_url)
    try:
        op = client.get(f"/operations/{accepted['operation']['id']}", params={"wait": 30}).json()
        assert op["status"] == "succeeded", op
        yield container_id
    finally:
        remove_containers(engine, f"berth.container={container_id}")
        engine.close()


@pytest.fixture(scope="module")
def ticker(module_settings: Settings, module_db: Database, bed: Testbed) -> Iterator[Ticker]:
    with (
        served(create_app(module_settings)) as server,
        httpx.Client(base_url=f"{server}/api/v1", headers=HEADERS, timeout=30) as client,
    ):
        host = client.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        ticking = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 1; done"]
        with _running(client, bed, {"host_id": host, "command": ticking}) as container_id:
            engine = docker.DockerClient(base_url=bed.h1_url)
            try:
                label = f"berth.container={container_id}"
                [running] = engine.containers.list(filters={"label": label})
                # Enough lines that a tail of two is a choice, whichever test runs first.
                wait_for(lambda: running.logs().count(b"\n") >= 3, timeout=30, what="three lines")
            finally:
                engine.close()
            yield Ticker(base=f"{server}/api/v1", host_id=host, container_id=container_id)


def test_two_followers_each_get_their_lines_and_may_disconnect(ticker: Ticker) -> None:
    lines: dict[str, list[str]] = {"a": [], "b": []}

    def follow(name: str, count: int) -> None:
        with (
            httpx.Client(base_url=ticker.base, headers=HEADERS, timeout=30) as own,
            own.stream(
                "GET",
                f"/containers/{ticker.container_id}/logs",
                params={"follow": "true", "tail": 0},
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            for line in response.iter_lines():
                if line.strip():
                    lines[name].append(line)
                if len(lines[name]) >= count:
                    return  # leaving the block disconnects this follower

    short = threading.Thread(target=follow, args=("a", 2))
    long = threading.Thread(target=follow, args=("b", 4))
    short.start()
    long.start()
    short.join(30)
    long.join(30)
    assert len(lines["a"]) == 2 and len(lines["b"]) == 4
    assert all(line.startswith("line-") for line in lines["a"] + lines["b"])
    numbers = [int(line.split("-")[1]) for line in lines["b"]]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] == 3
    # The server still answers promptly after a follower went away.
    with httpx.Client(base_url=ticker.base, headers=HEADERS, timeout=30) as client:
        assert client.get("/containers", params={"host_id": ticker.host_id}).status_code == 200


def test_a_tail_with_timestamps(ticker: Ticker) -> None:
    with httpx.Client(base_url=ticker.base, headers=HEADERS, timeout=30) as client:
        tail = client.get(
            f"/containers/{ticker.container_id}/logs", params={"tail": 2, "timestamps": "true"}
        )
    assert len(tail.text.strip().splitlines()) == 2
    assert tail.text[:4].isdigit()  # an RFC 3339 timestamp leads each line


def test_logs_the_engine_cannot_give_are_a_conflict_that_says_why(
    ticker: Ticker, bed: Testbed
) -> None:
    """A container whose logging driver keeps nothing: the engine answers 501, Berth a 409
    naming the reason (it was a 500 while the engine's refusal went untranslated)."""
    silent = {"host_id": ticker.host_id, "command": ["sleep", "300"], "logging": {"driver": "none"}}
    with (
        httpx.Client(base_url=ticker.base, headers=HEADERS, timeout=30) as client,
        _running(client, bed, silent) as container_id,
    ):
        answer = client.get(f"/containers/{container_id}/logs")
        assert answer.status_code == 409, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "logging driver does not support reading" in answer.json()["detail"]

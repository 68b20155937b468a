"""The inspects that a host's container events ask for are batched: events a few ms apart
about one container cost one inspect, and the readings of a burst one store (one write
transaction). Pure logic, with a stand-in engine and writer; following itself is tested on
real engines (test_containers.py) and on hollow ones (test_followers.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from app.containers.watcher import Followers, Reading, StateWriter, _Batch
from app.core.context import AppContext
from app.engine.errors import ObjectNotFound
from app.engine.protocol import LiveClient


class _Engine:
    """Answers inspects, and counts them."""

    def __init__(self, gone: set[str]) -> None:
        self.gone = gone
        self.inspected: list[str] = []

    async def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.inspected.append(container_id)
        if container_id in self.gone:
            raise ObjectNotFound(f"no container {container_id}")
        return {"Id": container_id, "State": {"Status": "running"}}


class _Writer:
    """Records what would be stored."""

    host_id = "h1"
    to_reread = staticmethod(StateWriter.to_reread)

    def __init__(self) -> None:
        self.stored: list[list[Reading]] = []

    def store_readings(self, readings: list[Reading]) -> None:
        self.stored.append(readings)


def _event(action: str, docker_id: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": docker_id, "Attributes": {}}}


def test_a_burst_of_events_costs_one_inspect_per_container_and_one_store() -> None:
    followers = Followers(cast(AppContext, object()))
    engine, writer = _Engine(gone={"c"}), _Writer()

    async def burst() -> None:
        batch = _Batch()
        for event in (
            _event("create", "a"),
            _event("start", "a"),
            _event("create", "b"),
            _event("start", "b"),
            _event("destroy", "c"),
        ):
            followers._on_event(cast(LiveClient, engine), cast(StateWriter, writer), batch, event)
        assert batch.task is not None
        await batch.task

    try:
        asyncio.run_coroutine_threadsafe(burst(), followers._loop).result(10)
    finally:
        followers.close(5)
    assert sorted(engine.inspected) == ["a", "b", "c"]
    assert len(writer.stored) == 1
    stored = {docker_id: details for docker_id, details, _ in writer.stored[0]}
    assert stored["c"] is None  # gone: stored as vanished, in the same transaction
    assert stored["a"] is not None and stored["b"] is not None
    assert all(isinstance(read_at, datetime) for _, _, read_at in writer.stored[0])

"""The container followers of a process share one event loop: fifty followed hosts add one
thread for following (and a few for its database work), not one each; and a hanging engine's
silent event stream is re-opened while the other hosts' events keep flowing.

Hollow engines (bench/hollow) play the fleet: fifty real engines are not to be had here, and
a half-open connection cannot be made on a real engine without stopping it under the other
tests. The functional tests of following run on real engines (test_containers.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.containers.models import Container
from app.containers.watcher import ContainerWatcher
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.engine.docker_engine import DockerEngine
from app.hosts.models import Host
from app.runtime import ENCRYPTED_COLUMNS
from bench.hollow.fleet import SEED_IMAGE, HollowFleet, running
from tests.support import wait_for

HOSTS = 50
SILENCE = 2.0


@pytest.fixture
def hollow(tmp_path: Path) -> Iterator[tuple[HollowFleet, asyncio.AbstractEventLoop]]:
    fleet = HollowFleet(HOSTS, socket_dir=tmp_path)
    with running(fleet) as loop:
        yield fleet, loop


@pytest.fixture
def context(settings: Settings, db: Database) -> AppContext:
    context = AppContext(settings, db)
    context.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    return context


def _register(context: AppContext, fleet: HollowFleet) -> None:
    with context.db.session() as session:
        session.add_all(
            Host(name=f"hollow-{index}", url=engine.url, status="ready")
            for index, engine in enumerate(fleet.engines)
        )


def _run_foreign(url: str, name: str) -> str:
    """A container made behind Berth's back: only a follower brings it into the table."""
    engine = DockerEngine(url, timeout=5)
    try:
        docker_id = engine.create_container_raw(name, {"Image": SEED_IMAGE})
        engine.start_container(docker_id)
        return docker_id
    finally:
        engine.close()


def _seen(context: AppContext, docker_ids: list[str]) -> int:
    with context.db.session(write=False) as session:
        return session.execute(
            select(func.count())
            .select_from(Container)
            .where(Container.docker_id.in_(docker_ids), Container.state == "running")
        ).scalar_one()


def test_fifty_hosts_are_followed_on_one_thread(
    context: AppContext, hollow: tuple[HollowFleet, asyncio.AbstractEventLoop]
) -> None:
    fleet, loop = hollow
    _register(context, fleet)
    before = {thread.ident for thread in threading.enumerate()}
    watcher = ContainerWatcher(context, silence_seconds=SILENCE)
    watcher.start()
    try:
        wait_for(lambda: len(watcher.followers) == HOSTS, timeout=30, what="a follower per host")
        first = [_run_foreign(engine.url, "first") for engine in fleet.engines]
        wait_for(lambda: _seen(context, first) == HOSTS, timeout=30, what="every host's event")

        added = [t.name for t in threading.enumerate() if t.ident not in before]
        # The watcher's own loop, the followers' event loop, and the database pool (at most
        # four threads, however many hosts).
        assert added.count("berth-followers") == 1, added
        assert len(added) <= 6, added

        # Engine 0 keeps its connections open and stops answering: a half-open stream.
        stuck = fleet.engines[0]
        asyncio.run_coroutine_threadsafe(stuck.set_mode("hanging"), loop).result(5)
        asked = stuck.requests
        others = [_run_foreign(engine.url, "during") for engine in fleet.engines[1:]]
        wait_for(lambda: _seen(context, others) == HOSTS - 1, timeout=10, what="the others")
        # Its silent stream is given up after SILENCE seconds and opened again.
        wait_for(lambda: stuck.requests > asked, timeout=SILENCE + 5, what="the stream re-opened")

        asyncio.run_coroutine_threadsafe(stuck.set_mode("ok"), loop).result(5)
        back = [_run_foreign(stuck.url, "after")]
        wait_for(lambda: _seen(context, back) == 1, timeout=SILENCE + 10, what="engine 0 again")
    finally:
        watcher.stop(10)
        asyncio.run_coroutine_threadsafe(fleet.engines[0].set_mode("ok"), loop).result(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("berth-follow")]

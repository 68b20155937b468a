"""The host prober: the rules of a probe (table tests), and a fleet of hollow engines (bench/hollow)
for what a real engine cannot show without being stopped under the other tests: a hanging engine
delays no other host's probes, and a dying one is noticed within a few seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.engine.docker_engine import EngineFacts
from app.engine.errors import EngineUnavailable
from app.engine.live import LiveEngine
from app.hosts.loops import HostProber, ProbeResult, Target, apply, needs_facts
from app.hosts.models import Host
from app.runtime import ENCRYPTED_COLUMNS
from bench.hollow.fleet import HollowFleet, running
from tests.support import wait_for
from tests.testbed import Testbed

FACTS = EngineFacts("27.0", "1.46", "linux", "x86_64", 4, 1 << 30, 2)


def _target(status: str = "ready", api_version: str | None = "1.46") -> Target:
    return Target("h", "unix:///x", None, False, status, api_version, 0)


@pytest.mark.parametrize(
    ("target", "ping_version", "rounds_since", "expected"),
    [
        (_target(), "1.46", 0, False),  # ready, nothing new: the ping is the whole probe
        (_target(), None, 11, False),  # the engine sends no API-Version header
        (_target(), "1.46", 12, True),  # every twelfth round
        (_target(), "1.47", 0, True),  # upgraded
        (_target("pending", None), None, 0, True),
        (_target("unreachable"), "1.46", 0, True),
    ],
)
def test_when_a_probe_reads_the_facts(
    target: Target, ping_version: str | None, rounds_since: int, expected: bool
) -> None:
    assert needs_facts(target, ping_version, rounds_since=rounds_since) is expected


def test_a_result_on_the_host_row() -> None:
    host = Host(name="h", url="unix:///x", status="pending", consecutive_failures=0)
    now = utcnow()
    apply(host, ProbeResult("h", ok=True, facts=FACTS), threshold=3, now=now)
    assert (host.status, host.last_seen_at, host.cpus, host.api_version) == (
        "ready",
        now,
        4,
        "1.46",
    )
    for failures in (1, 2):
        apply(host, ProbeResult("h", ok=False, error="refused"), threshold=3, now=now)
        assert (host.status, host.consecutive_failures) == ("ready", failures)
    apply(host, ProbeResult("h", ok=False, error="refused"), threshold=3, now=now)
    assert (host.status, host.error) == ("unreachable", "refused")
    apply(host, ProbeResult("h", ok=True), threshold=3, now=now)  # facts kept from before
    assert (host.status, host.consecutive_failures, host.cpus) == ("ready", 0, 4)


def test_a_ping_answers_on_the_real_engines_and_fails_plainly(bed: Testbed, tmp_path: Path) -> None:
    async def pings(url: str, insecure: bool) -> tuple[list[str | None], str]:
        async with LiveEngine(url, insecure=insecure) as engine:
            # Three pings on the one kept connection, then the facts through httpx.
            answers = [await engine.ping(timeout=5) for _ in range(3)]
            return answers, (await engine.facts(timeout=5)).api_version

    for url, insecure in ((bed.h1_url, False), (bed.h2_url, True)):
        answers, api_version = asyncio.run(pings(url, insecure))
        assert answers == [api_version] * 3, url

    async def nobody() -> None:
        async with LiveEngine(f"unix://{tmp_path}/absent.sock") as engine:
            await engine.ping(timeout=5)

    with pytest.raises(EngineUnavailable, match=r"^ping: engine unreachable"):
        asyncio.run(nobody())


HOSTS = 5


@pytest.fixture
def probed(
    settings_factory: Callable[..., Settings], db: Database, tmp_path: Path
) -> Iterator[tuple[HollowFleet, asyncio.AbstractEventLoop]]:
    """A hollow fleet, registered and probed by a HostProber."""
    fleet = HollowFleet(HOSTS, socket_dir=tmp_path)
    # A probe timeout far longer than the interval: the old prober's round waited for it.
    settings = settings_factory(host_probe_interval_seconds=0.5, host_probe_timeout_seconds=5)
    app = AppContext(settings, db)
    app.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    with running(fleet) as loop:
        with db.session() as session:
            session.add_all(
                Host(name=f"hollow-{index}", url=engine.url, status="pending")
                for index, engine in enumerate(fleet.engines)
            )
        prober = HostProber(app)
        prober.start()
        try:
            yield fleet, loop
        finally:
            prober.stop(10)


def _hosts(db: Database) -> dict[str, tuple[str, datetime | None]]:
    with db.session(write=False) as session:
        rows = session.execute(select(Host.name, Host.status, Host.last_seen_at)).all()
    return {row.name: (row.status, row.last_seen_at) for row in rows}


def test_a_hanging_engine_delays_no_other_host_and_a_dead_one_is_noticed(
    probed: tuple[HollowFleet, asyncio.AbstractEventLoop], db: Database
) -> None:
    fleet, loop = probed
    ready = lambda: all(s == "ready" for s, _ in _hosts(db).values())  # noqa: E731
    wait_for(ready, timeout=20, what="every host ready")

    asyncio.run_coroutine_threadsafe(fleet.engines[0].set_mode("hanging"), loop).result(5)
    seen: set[datetime | None] = set()

    def rounds() -> bool:
        seen.add(_hosts(db)["hollow-1"][1])
        return len(seen) >= 4

    # Within one probe timeout (5 s) of the hanging engine, the others are probed round after
    # round: nothing waits for its answer.
    wait_for(rounds, timeout=4, interval=0.1, what="rounds of the other hosts")

    began = time.monotonic()
    asyncio.run_coroutine_threadsafe(fleet.engines[2].die(), loop).result(5)
    wait_for(lambda: _hosts(db)["hollow-2"][0] == "unreachable", timeout=10, what="the dead engine")
    # Three failures: the next round (0.5 s), then 2 s apart (refused at once: no timeout).
    assert time.monotonic() - began < 7
    wait_for(lambda: _hosts(db)["hollow-0"][0] == "unreachable", timeout=30, what="the hanging one")
    asyncio.run_coroutine_threadsafe(fleet.engines[0].set_mode("ok"), loop).result(5)
    wait_for(lambda: _hosts(db)["hollow-0"][0] == "ready", timeout=15, what="hollow-0 back")
    assert _hosts(db)["hollow-3"][0] == "ready"

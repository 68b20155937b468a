"""The host health loop: a ping for every host each round, on an event loop, with short timeouts.

A round costs one request per host (`GET /_ping` on a kept connection). The engine's facts
(`/info`: versions, CPUs, memory, running containers; `/version` too when the ping does not
say the API version) are read only when they may have changed: for a host not `ready`, when
the ping's API version differs from the stored one, and every `_FACTS_EVERY` rounds otherwise.
Every probe is a coroutine, each request with its own timeout, so a slow or hanging engine
delays no other host's result: a round records what has answered after at most
`_SETTLE_SECONDS`, and a late answer is recorded by a later round.

A host that failed a probe is probed again every `_RETRY_SECONDS` (not only every interval)
until it answers or reaches `host_unreachable_after` failures: with the defaults (5 s interval,
3 failures), an engine that dies is probed within 5 s, fails at once (connection refused) and
twice more 2 s apart: unreachable after at most 5 + 2 + 2 s and one write, at any fleet size
(docs/hosts.md has the arithmetic).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from app.core.context import AppContext
from app.core.db import utcnow
from app.engine.docker_engine import EngineFacts
from app.engine.errors import EngineError, EngineUnavailable
from app.engine.protocol import LiveClient
from app.hosts.models import Host
from app.hosts.service import tls_material
from app.security.crypto import KeyUnavailable
from app.workers.loops import LeasedLoop

log = logging.getLogger("berth.hosts")

PROBE_LEASE = "hosts.probe"

# The loop ticks this often (at most): a failed host's re-probe and late answers wait for a tick.
_TICK_SECONDS = 1.0
# A host that failed a probe is probed again after this long, until it answers or is unreachable.
_RETRY_SECONDS = 2.0
# A ready host's facts are re-read every this many rounds (60 s at the default interval).
_FACTS_EVERY = 12
# A round waits this long at most for its probes before it records what has answered.
_SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class Target:
    """A host as the prober sees it: where to reach it, and what the last probes stored."""

    id: str
    url: str
    tls_encrypted: str | None
    insecure: bool
    status: str
    api_version: str | None
    consecutive_failures: int

    @property
    def address(self) -> tuple[str, str | None, bool]:
        return (self.url, self.tls_encrypted, self.insecure)

    @property
    def quiet(self) -> bool:
        """Ready with no failure: a successful ping changes nothing but `last_seen_at`."""
        return self.status == "ready" and self.consecutive_failures == 0


@dataclass(frozen=True)
class ProbeResult:
    host_id: str
    ok: bool
    facts: EngineFacts | None = None
    error: str | None = None


def needs_facts(target: Target, ping_api_version: str | None, *, rounds_since: int) -> bool:
    """Whether a probe that pinged `target` also reads its facts."""
    if target.status != "ready" or rounds_since >= _FACTS_EVERY:
        return True
    return ping_api_version is not None and ping_api_version != target.api_version


def apply(host: Host, result: ProbeResult, *, threshold: int, now: datetime) -> None:
    """A probe's result on the host's row: ready with its facts, or one more failure."""
    if result.ok:
        host.status = "ready"
        host.error = None
        host.consecutive_failures = 0
        host.last_seen_at = now
        facts = result.facts
        if facts is not None:
            host.engine_version = facts.engine_version
            host.api_version = facts.api_version
            host.os = facts.os
            host.arch = facts.arch
            host.cpus = facts.cpus
            host.memory_bytes = facts.memory_bytes
            host.containers_running = facts.containers_running
        return
    host.consecutive_failures += 1
    host.error = result.error
    if host.consecutive_failures >= threshold:
        host.status = "unreachable"


class HostProber(LeasedLoop):
    """Keeps every host's status and figures current. One process probes at a time (a lease).

    The probes run on an event loop of the prober's own, one async client per host kept
    between rounds (dropped after a failure, so a dead engine's connection is not reused;
    closed when the host is deleted). Only the loop's thread touches `_clients`, `_flight`,
    `_answered`, `_pinging` and `_overdue`; the leased loop's thread plans rounds and writes
    their results."""

    name = "host-prober"
    lease = PROBE_LEASE

    def __init__(self, app: AppContext) -> None:
        self.period = app.settings.host_probe_interval_seconds
        super().__init__(app.db, min(self.period, _TICK_SECONDS))
        self.app = app
        self.timeout = app.settings.host_probe_timeout_seconds
        self._targets: dict[str, Target] = {}
        self._next_read = 0.0
        # Host id -> when it is pinged next (monotonic; the leased loop's thread only).
        self._ping_at: dict[str, float] = {}
        self._rounds_since_facts: dict[str, int] = {}
        self._aio = asyncio.new_event_loop()
        self._clients: dict[str, tuple[tuple[str, str | None, bool], LiveClient]] = {}
        self._flight: dict[str, asyncio.Task[ProbeResult]] = {}
        # Host id -> when its ping in flight is given up (loop time); those being given up.
        self._pinging: dict[str, float] = {}
        self._overdue: set[str] = set()
        self._answered: list[ProbeResult] = []
        self._aio_thread = threading.Thread(
            target=self._aio.run_forever, name="berth-probe", daemon=True
        )

    def start(self) -> None:
        self._start_probe_loop()
        super().start()

    def _start_probe_loop(self) -> None:
        # Also from a round run without start() (run_once, as a test or a one-off check does).
        if self._aio_thread.ident is None:
            self._aio_thread.start()

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        if self._aio_thread.ident is None:
            self._aio.close()
            return
        if self._aio.is_running():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._close(), self._aio).result(timeout)
            self._aio.call_soon_threadsafe(self._aio.stop)
        self._aio_thread.join(timeout)
        if not self._aio_thread.is_alive():
            self._aio.close()

    def wake(self) -> None:
        self._next_read = 0.0
        self._ping_at.clear()
        super().wake()

    def run_leased(self) -> None:
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + self.period
            self._targets = self._read_targets()
            for host_id in [h for h in self._ping_at if h not in self._targets]:
                del self._ping_at[host_id]
            for target in self._targets.values():
                if target.id not in self._ping_at:
                    self._ping_at[target.id] = now + self._offset(target)
        due = [t for t in self._targets.values() if self._ping_at[t.id] <= now]
        for target in due:
            self._ping_at[target.id] = now + self.period
        plan = [(t, self._facts_due(t)) for t in due]
        self._start_probe_loop()
        results = asyncio.run_coroutine_threadsafe(
            self._round(plan, set(self._targets)), self._aio
        ).result()
        if results:
            self._record(results)

    def _offset(self, target: Target) -> float:
        """When a host's pings fall in the interval: a host not ready yet at once, the others
        spread over it by their id, so that a round's pings do not all leave in one burst (a
        thousand at once kept the prober's loop busy past the probe timeout on a loaded
        machine)."""
        if target.status != "ready":
            return 0.0
        return self.period * (zlib.crc32(target.id.encode()) % 997) / 997

    def _read_targets(self) -> dict[str, Target]:
        with self.app.db.session(write=False) as session:
            rows = session.execute(
                select(
                    Host.id,
                    Host.url,
                    Host.tls_encrypted,
                    Host.insecure,
                    Host.status,
                    Host.api_version,
                    Host.consecutive_failures,
                )
            ).all()
        return {row.id: Target(*row) for row in rows}

    def _facts_due(self, target: Target) -> int:
        """Rounds since the host's facts were read (staggered, so that not every host's
        facts fall due in the same round)."""
        seed = zlib.crc32(target.id.encode()) % _FACTS_EVERY
        return self._rounds_since_facts.setdefault(target.id, seed)

    # On the prober's event loop.

    async def _round(self, plan: list[tuple[Target, int]], hosts: set[str]) -> list[ProbeResult]:
        """Start the planned probes (a host whose last probe is still out is not probed twice),
        wait for them a moment, and hand over every answer in so far, late ones included."""
        for host_id in [h for h in self._clients if h not in hosts]:
            await self._forget(host_id)
        now = self._aio.time()
        for host_id, deadline in list(self._pinging.items()):
            if deadline <= now and host_id not in self._overdue:
                self._overdue.add(host_id)
                self._flight[host_id].cancel()
        started = []
        for target, rounds_since in plan:
            if target.id not in self._flight:
                task = asyncio.create_task(self._probe(target, rounds_since))
                task.add_done_callback(self._answer)
                self._flight[target.id] = task
                started.append(task)
        if started:
            await asyncio.wait(started, timeout=min(_SETTLE_SECONDS, self.timeout))
        answered, self._answered = self._answered, []
        return answered

    def _answer(self, task: asyncio.Task[ProbeResult]) -> None:
        if task.cancelled():
            return
        result = task.result()
        self._flight.pop(result.host_id, None)
        self._answered.append(result)

    async def _probe(self, target: Target, rounds_since: int) -> ProbeResult:
        try:
            engine = await self._client(target)
            version = await self._ping(target.id, engine)
            # The facts' requests bounded by httpx's timeouts (cancelling httpx from outside
            # mid-request leaves its connection pool confused).
            facts = None
            if needs_facts(target, version, rounds_since=rounds_since):
                facts = await engine.facts(timeout=self.timeout, api_version=version)
        except (EngineError, KeyUnavailable) as exc:
            await self._forget(target.id)
            return ProbeResult(target.id, ok=False, error=str(exc))
        except Exception as exc:
            await self._forget(target.id)
            log.exception("probe crashed", extra={"host_id": target.id})
            return ProbeResult(target.id, ok=False, error=f"probe failed: {type(exc).__name__}")
        return ProbeResult(target.id, ok=True, facts=facts)

    async def _ping(self, host_id: str, engine: LiveClient) -> str | None:
        """A ping without a timer of its own (one per ping was the largest part of a round's
        cost): `_round` cancels it once it is `timeout` old, checking at every tick."""
        self._pinging[host_id] = self._aio.time() + self.timeout
        try:
            return await engine.ping(timeout=None)
        except asyncio.CancelledError:
            if host_id not in self._overdue:
                raise  # the prober is stopping
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise EngineUnavailable(
                f"ping: engine unreachable (no answer in {self.timeout:g} s)"
            ) from None
        finally:
            self._pinging.pop(host_id, None)
            self._overdue.discard(host_id)

    async def _client(self, target: Target) -> LiveClient:
        cached = self._clients.get(target.id)
        if cached is not None and cached[0] == target.address:
            return cached[1]
        await self._forget(target.id)
        tls = tls_material(self.app.cipher, target.tls_encrypted)
        engine = self.app.engine_factory.live(target.url, tls=tls, insecure=target.insecure)
        self._clients[target.id] = (target.address, engine)
        return engine

    async def _forget(self, host_id: str) -> None:
        cached = self._clients.pop(host_id, None)
        if cached is not None:
            with contextlib.suppress(Exception):
                await cached[1].aclose()

    async def _close(self) -> None:
        for task in list(self._flight.values()):
            task.cancel()
        await asyncio.gather(*self._flight.values(), return_exceptions=True)
        for host_id in list(self._clients):
            await self._forget(host_id)

    # Back on the leased loop's thread.

    def _record(self, results: Sequence[ProbeResult]) -> None:
        threshold = self.app.settings.host_unreachable_after
        now = utcnow()
        retry_at = time.monotonic() + min(_RETRY_SECONDS, self.period)
        for result in results:
            if result.facts is not None:
                self._rounds_since_facts[result.host_id] = 0
            elif result.host_id in self._rounds_since_facts:
                self._rounds_since_facts[result.host_id] += 1
        # A ping of a host that was ready and healthy changes only `last_seen_at`: one
        # statement for all of them. The rest (facts read, failures, status changes) row by row.
        quiet = {
            r.host_id
            for r in results
            if r.ok and r.facts is None and (t := self._targets.get(r.host_id)) and t.quiet
        }
        loud = [r for r in results if r.host_id not in quiet]
        with self.app.db.session() as session:
            if not self.holds_lease(session):
                return  # another process probes now; its results are the current ones
            if quiet:
                session.execute(
                    update(Host)
                    .where(
                        Host.id.in_(quiet), Host.status == "ready", Host.consecutive_failures == 0
                    )
                    .values(last_seen_at=now)
                    .execution_options(synchronize_session=False)
                )
            # Locked (in id order), so a host deleted meanwhile is skipped here rather than
            # failing the whole round's update on PostgreSQL.
            locked = (
                session.execute(
                    select(Host)
                    .where(Host.id.in_([r.host_id for r in loud]))
                    .order_by(Host.id)
                    .with_for_update()
                ).scalars()
                if loud
                else ()
            )
            hosts = {h.id: h for h in locked}
            for result in loud:
                host = hosts.get(result.host_id)
                if host is None:  # deleted while we probed
                    continue
                before = host.status
                apply(host, result, threshold=threshold, now=now)
                if host.status != before:
                    host.updated_at = now
                    log.info(
                        "host status changed",
                        extra={"host_id": host.id, "from": before, "to": host.status},
                    )
                if not result.ok and host.status != "unreachable":
                    self._ping_at[host.id] = retry_at
                self._targets[host.id] = Target(
                    host.id,
                    host.url,
                    host.tls_encrypted,
                    host.insecure,
                    host.status,
                    host.api_version,
                    host.consecutive_failures,
                )

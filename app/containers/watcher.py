"""Live container state: a follower per host reads the engine's event stream and re-lists the
host's containers on every (re)connect, so state follows reality within a second or two and a
missed event is repaired by the next re-list. A stream silent for 2 minutes is re-opened with
the engine replaying from when it was last heard, without a re-list; a host is re-listed at
least every 5 minutes all the same. One process follows each host (a lease per host).

The followers of a process are coroutines on one event loop in one thread, reading through
the async engine client (LiveClient): a thread and a blocking client per host made a thousand
threads at a thousand hosts (bench/README.md has the figures). Their database work (short,
blocking) runs in a small pool of threads beside the loop, so a write waiting for SQLite's
lock does not stop the reading of every other host's stream.

Managed containers (labelled `berth.container=<id>`) get their observed state updated; a managed
container that vanished shows `missing`. Containers Berth did not create are listed with
`managed: false` and only ever observed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeAlias, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.containers.engine_config import is_newer, not_newer_than, observed
from app.containers.models import Container
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.engine.errors import EngineError, ObjectNotFound, StreamSilent
from app.engine.protocol import Engine, LiveClient
from app.events import recorder as events
from app.hosts.models import Host
from app.hosts.service import tls_material
from app.images import inventory
from app.images.loops import refresh as refresh_images
from app.workers import leases, wakeups
from app.workers.loops import LoopService

log = logging.getLogger("berth.containers")

_LEASE_SECONDS = 10.0
# A silent event stream is re-opened after this long (replaying from when it was last heard).
# Long: an engine that is gone ends its TCP streams by keep-alive within about a minute, and
# one that hangs is marked unreachable by the prober (its follower stopped) within half a
# minute; this catches the rest. At 30 s, re-opens were most of the followers' idle cost.
_SILENCE_SECONDS = 120.0
# A followed host is re-listed at least this often, whatever its streams did.
_RELIST_SECONDS = 300.0
# An image inventory re-read waits this long after the image event that asked for it, so that
# a burst of events (a pull's tags) costs one re-read.
_IMAGES_SETTLE_SECONDS = 2.0
# At most this many of the followers' inventory re-reads at once (each blocks a database
# thread on its engine reads): a thousand hosts followed at once are read a few at a time, and
# the other threads stay free for the containers' state.
_IMAGE_SYNCS = 2
# How many containers use each image (shown by `GET /images`) is recounted this long after a
# container was created or removed: one container list for a burst of replicas placed on the
# host, not a re-read of the inventory per burst. So a count lags by at most about this long.
_USAGE_SETTLE_SECONDS = 5.0
# The containers that events within this long name are inspected together and their readings
# stored in one transaction (a foreign container's create and start events come a few ms
# apart: one inspect; a burst of replicas started on a host: one write).
_INSPECT_BATCH_SECONDS = 0.02
# Threads for the followers' database work: enough that one write waiting for the lock does
# not hold up the others, few enough that they do not grow with the hosts.
_DB_THREADS = 4
_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_ACTIONS = {
    "create",
    "start",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "restart",
    "oom",
    "rename",
    "update",
}


def _summary_state(summary: dict[str, Any]) -> dict[str, Any]:
    """State from a `GET /containers/json` entry, without an inspect per container."""
    state = str(summary.get("State", "unknown"))
    status = str(summary.get("Status", ""))
    exit_code = _EXIT_CODE.match(status)
    health = _HEALTH.search(status)
    return {
        "docker_id": summary.get("Id"),
        "state": state,
        "health": None if health is None else health.group(1).replace("health: ", ""),
        "exit_code": int(exit_code.group(1)) if exit_code and state in ("exited", "dead") else None,
    }


def _foreign_spec(summary: dict[str, Any]) -> dict[str, Any]:
    ports = [
        {
            "container_port": int(p["PrivatePort"]),
            "host_port": int(p["PublicPort"]) if p.get("PublicPort") else None,
            "protocol": p.get("Type", "tcp"),
            "host_ip": p.get("IP", "") if p.get("PublicPort") else "",
        }
        for p in summary.get("Ports") or []
    ]
    command = summary.get("Command")
    return {
        "image": str(summary.get("Image", "")),
        "command": [command] if command else None,
        "ports": ports,
    }


def _name(summary: dict[str, Any]) -> str:
    names = summary.get("Names") or [str(summary.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")[:128]


_STATE_COLUMNS = (
    Container.id,
    Container.docker_id,
    Container.managed,
    Container.service_id,
    Container.desired_state,
    Container.state,
    Container.health,
    Container.exit_code,
)


class StateWriter:
    """Applies what an engine says to the containers table of one host."""

    def __init__(self, app: AppContext, host_id: str) -> None:
        self.app = app
        self.host_id = host_id

    def relist(self, engine: Engine) -> None:
        """Re-list with a blocking engine client."""
        now = utcnow()  # when the engine was read: a newer reading already stored wins
        self.store_list(engine.list_containers(), read_at=now)

    def store_list(self, summaries: list[dict[str, Any]], *, read_at: datetime) -> None:
        """Compare the engine's list, read at `read_at`, with the stored state (read without a
        write lock) and write only what differs, in one short transaction."""
        with self.app.db.session(write=False) as session:
            stored = session.execute(
                select(*_STATE_COLUMNS).where(Container.host_id == self.host_id)
            ).all()
        managed = {row.id: row for row in stored if row.managed}
        foreign = {row.docker_id: row for row in stored if not row.managed}
        seen: set[str] = set()
        changes: dict[str, dict[str, Any]] = {}
        added: list[Container] = []
        for summary in summaries:
            docker_id = str(summary["Id"])
            seen.add(docker_id)
            labels = summary.get("Labels") or {}
            row = managed.get(str(labels.get("berth.container", ""))) or foreign.get(docker_id)
            state = _summary_state(summary)
            if row is None:
                fresh = self._add_foreign(summary)
                for key, value in state.items():
                    setattr(fresh, key, value)
                fresh.observed_at = read_at
                added.append(fresh)
            elif any(getattr(row, key) != value for key, value in state.items()):
                changes[row.id] = state
        for row in managed.values():
            vanished = row.docker_id is not None and row.docker_id not in seen
            if vanished and row.desired_state != "removed" and row.state != "missing":
                changes[row.id] = {"state": "missing", "health": None}
        gone = [docker_id for docker_id in foreign if docker_id not in seen]
        if not (changes or added or gone):
            return
        with self.app.db.session() as session:
            written = {}
            for row_id, values in changes.items():
                if session.execute(
                    update(Container)
                    .where(Container.id == row_id, not_newer_than(read_at))
                    .values(**values, observed_at=read_at)
                    .returning(Container.id)
                    .execution_options(synchronize_session=False)
                ).scalar_one_or_none():
                    written[row_id] = values
            session.add_all(added)
            if gone:
                removed = session.execute(
                    delete(Container)
                    .where(
                        Container.host_id == self.host_id,
                        Container.managed.is_(False),
                        Container.docker_id.in_(gone),
                    )
                    .returning(Container.id, Container.name)
                ).all()
                events.emit(
                    session,
                    (
                        events.row("container.deleted", "container", r.id, {"name": r.name})
                        for r in removed
                    ),
                )
            # Written with Core for speed, so the event stream hears of them here.
            events.emit(
                session,
                (
                    events.row("container.updated", "container", row_id, values)
                    for row_id, values in written.items()
                ),
            )
        # The services whose replicas changed look again (their reconciler passes only over them).
        wakeups.notify(
            wakeups.SERVICES,
            {
                row.service_id
                for row_id in written
                if (row := managed.get(row_id)) is not None and row.service_id is not None
            },
        )

    def _add_foreign(self, summary: dict[str, Any]) -> Container:
        spec = _foreign_spec(summary)
        labels = {str(k): str(v) for k, v in (summary.get("Labels") or {}).items()}
        return Container(
            id=new_id(),
            name=_name(summary),
            host_id=self.host_id,
            spec=spec,
            image=spec["image"][:512],
            labels=labels,
            managed=False,
            desired_state="running",
            state="unknown",
            created_at=utcnow(),
            version=1,
        )

    @staticmethod
    def to_reread(event: dict[str, Any]) -> str | None:
        """The container to re-read after an event about it (level-triggered: the event only
        says where to look), or None."""
        if event.get("Type") != "container":
            return None
        action = str(event.get("Action", "")).split(":")[0]
        if action not in _ACTIONS | {"health_status"}:
            return None
        actor = event.get("Actor") or {}
        docker_id = str(event.get("id") or actor.get("ID", ""))
        if not docker_id:
            return None
        if action == "create" and (actor.get("Attributes") or {}).get("berth.container"):
            # One of Berth's own, just made by a create operation, which records it; a
            # re-list repairs anything that operation does not live to record.
            return None
        return docker_id

    def store_inspected(
        self, docker_id: str, details: dict[str, Any], *, read_at: datetime
    ) -> None:
        """Store what an inspect of `docker_id`, made at `read_at`, saw."""
        self.store_readings([(docker_id, details, read_at)])

    def vanished(self, docker_id: str, *, read_at: datetime) -> None:
        """The engine said `docker_id` is gone (an inspect at `read_at` found nothing)."""
        self.store_readings([(docker_id, None, read_at)])

    def store_readings(self, readings: list[Reading]) -> None:
        """Store several containers' readings in one transaction (the followers batch the
        inspects a burst of events asks for): each what an inspect of `docker_id` made at
        `read_at` saw, or None when it found the container gone."""
        services: set[str] = set()
        with self.app.db.session() as session:
            for docker_id, details, read_at in readings:
                if details is None:
                    services |= self._vanished(session, docker_id, read_at=read_at)
                elif (
                    service_id := self._inspected(session, docker_id, details, read_at)
                ) is not None:
                    services.add(service_id)
        wakeups.notify(wakeups.SERVICES, services)

    def _inspected(
        self, session: Session, docker_id: str, details: dict[str, Any], read_at: datetime
    ) -> str | None:
        """Store one inspect's reading; the service to wake when a replica's state changed."""
        labels = (details.get("Config") or {}).get("Labels") or {}
        state = observed(details)
        row = None
        berth_id = labels.get("berth.container")
        if berth_id:
            row = session.get(Container, berth_id, with_for_update=True)
            if row is not None and (row.host_id != self.host_id or not row.managed):
                row = None
        if row is None:
            row = session.execute(
                select(Container)
                .where(Container.host_id == self.host_id, Container.docker_id == docker_id)
                .with_for_update()
            ).scalar_one_or_none()
        if row is not None and is_newer(row, docker_id, read_at):
            return None  # an operation read this container after us and stored what it saw
        if row is None:
            if berth_id and session.get(Container, berth_id) is not None:
                return None  # ours, just created: the create operation records it
            summary = {
                "Id": docker_id,
                "Names": [details.get("Name", docker_id[:12])],
                "Image": (details.get("Config") or {}).get("Image", ""),
                "Labels": labels,
            }
            row = self._add_foreign(summary)
            session.add(row)
        changed = any(getattr(row, key) != value for key, value in state.items())
        for key, value in state.items():
            setattr(row, key, value)
        row.observed_at = read_at
        return row.service_id if changed else None

    def _vanished(self, session: Session, docker_id: str, *, read_at: datetime) -> set[str]:
        services = set()
        for row in session.execute(
            select(Container)
            .where(Container.host_id == self.host_id, Container.docker_id == docker_id)
            .with_for_update()
        ).scalars():
            if not row.managed:
                session.delete(row)
            elif row.desired_state != "removed" and not is_newer(row, docker_id, read_at):
                row.state, row.health, row.observed_at = "missing", None, read_at
            if row.service_id is not None:
                services.add(row.service_id)
        return services


@dataclass
class _Batch:
    """The containers to inspect that one opening of a host's event stream named, and the task
    that will (loop only)."""

    docker_ids: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


@dataclass
class _Resume:
    """Where a host's next event stream starts: `since` (seconds) after a silent stream, else
    None (re-list); `relist_due` (monotonic) the latest time for a re-list all the same."""

    since: int | None = None
    relist_due: float = 0.0


_P = ParamSpec("_P")
_T = TypeVar("_T")
# A container's inspect, made at a time: its details, or None when the engine no longer had it.
Reading: TypeAlias = tuple[str, dict[str, Any] | None, datetime]


@dataclass
class _Debounced:
    """Runs `work(host_id)` `delay` seconds after the first request for that host, once for all
    the requests made meanwhile, and again if more came while it ran (event loop only)."""

    delay: float
    work: Callable[[str], Awaitable[None]]
    _dirty: set[str] = field(default_factory=set)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def request(self, host_id: str) -> None:
        self._dirty.add(host_id)
        task = self._tasks.get(host_id)
        if task is None or task.done():
            self._tasks[host_id] = asyncio.create_task(self._run(host_id))

    async def _run(self, host_id: str) -> None:
        try:
            while host_id in self._dirty:
                await asyncio.sleep(self.delay)
                self._dirty.discard(host_id)
                await self.work(host_id)
        finally:
            if self._tasks.get(host_id) is asyncio.current_task():
                del self._tasks[host_id]


class Followers:
    """The event loop every host's follower runs on: one thread, whatever the number of hosts."""

    def __init__(self, app: AppContext, *, silence_seconds: float = _SILENCE_SECONDS) -> None:
        self.app = app
        self.silence_seconds = silence_seconds
        self._loop = asyncio.new_event_loop()
        self._db = concurrent.futures.ThreadPoolExecutor(
            _DB_THREADS, thread_name_prefix="berth-follow-db"
        )
        # Re-reads of a host's image inventory, and recounts of its images' use, that events
        # asked for; each host's open engine client, for the recounts (all loop only).
        self._images = _Debounced(_IMAGES_SETTLE_SECONDS, self._sync_images)
        self._usage = _Debounced(_USAGE_SETTLE_SECONDS, self._recount_usage)
        self._image_syncs = asyncio.Semaphore(_IMAGE_SYNCS)
        self._engines: dict[str, LiveClient] = {}
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="berth-followers", daemon=True
        )
        self._thread.start()

    def follow(self, host_id: str) -> concurrent.futures.Future[None]:
        """Follow `host_id` until the returned future is cancelled (from any thread) or the
        host is gone; the future is done once its follower stopped."""
        return asyncio.run_coroutine_threadsafe(self._follow(host_id), self._loop)

    def close(self, timeout: float) -> None:
        """Stop every follower and wait for them: a follower mid re-list must not write after
        its process stopped."""
        if self._loop.is_running():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        # A cancelled follower leaves the write it was waiting for to finish here.
        self._db.shutdown(wait=True, cancel_futures=True)
        if not self._thread.is_alive():
            self._loop.close()

    async def _cancel_all(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _in_db_thread(
        self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self._loop.run_in_executor(self._db, lambda: work(*args, **kwargs))

    async def _follow(self, host_id: str) -> None:
        writer = StateWriter(self.app, host_id)
        connected: tuple[str, str | None, bool] | None = None
        engine: LiveClient | None = None
        resume = _Resume()
        try:
            while True:
                try:
                    row = await self._in_db_thread(self._host, host_id)
                    if row is None:
                        return
                    if engine is None or row != connected:
                        # Kept while the host's address and credentials stay the same.
                        if engine is not None:
                            await engine.aclose()
                            engine = None
                        url, tls_encrypted, insecure = row
                        tls = tls_material(self.app.cipher, tls_encrypted)
                        engine = self.app.engine_factory.live(url, tls=tls, insecure=insecure)
                        self._engines[host_id] = engine
                        connected = row
                        resume.since = None
                    await self._read(engine, writer, resume)
                except (EngineError, OSError, ValueError) as exc:
                    log.debug(
                        "event stream ended; re-listing",
                        extra={"host_id": host_id, "error": str(exc)},
                    )
                except Exception:
                    log.exception("container follower failed", extra={"host_id": host_id})
                await asyncio.sleep(1.0)
        finally:
            if engine is not None:
                if self._engines.get(host_id) is engine:
                    del self._engines[host_id]
                await engine.aclose()

    async def _sync_images(self, host_id: str) -> None:
        async with self._image_syncs:
            await self._in_db_thread(refresh_images, self.app, host_id)

    async def _recount_usage(self, host_id: str) -> None:
        """Recount how many containers use each of the host's images: one container list,
        without the image list and describes of a re-read."""
        engine = self._engines.get(host_id)
        if engine is None:
            return  # no longer followed; the next opening re-reads the inventory
        read_at = utcnow()
        try:
            summaries = await engine.list_containers()
        except (EngineError, OSError, ValueError) as exc:
            # The follower hears of the engine's trouble too, and re-reads when it re-opens.
            log.debug("image usage recount failed", extra={"host_id": host_id, "error": str(exc)})
            return
        counts = inventory.count_by_image(summaries)
        await self._in_db_thread(
            inventory.store_usage, self.app.db, host_id, counts, read_at=read_at
        )

    def _host(self, host_id: str) -> tuple[str, str | None, bool] | None:
        with self.app.db.session(write=False) as session:
            row = session.execute(
                select(Host.url, Host.tls_encrypted, Host.insecure).where(Host.id == host_id)
            ).first()
        return None if row is None else (row.url, row.tls_encrypted, row.insecure)

    async def _read(self, engine: LiveClient, writer: StateWriter, resume: _Resume) -> None:
        """Follow one opening of the event stream. After a silent stream the engine is asked to
        replay from when it was last heard instead of a re-list (a re-list of every host every
        30 s was most of the followers' idle cost); a re-list still comes at every opening
        after a break, and at least every `_RELIST_SECONDS`, since an event can be missed."""
        opened = int(time.time()) - 1
        # The first opening, or one after a break: what happened before it was not heard.
        reopened = resume.since is None
        relist = reopened or time.monotonic() >= resume.relist_due
        since = opened if relist or resume.since is None else resume.since
        resume.since = None
        # Open the stream first, then re-list: nothing can happen in between unseen.
        async with engine.events(
            since=since, silence_seconds=self.silence_seconds, types=inventory.EVENT_TYPES
        ) as events:
            if relist:
                listed_at = utcnow()  # when the engine was read: a newer reading stored wins
                summaries = await engine.list_containers()
                await self._in_db_thread(writer.store_list, summaries, read_at=listed_at)
                resume.relist_due = time.monotonic() + _RELIST_SECONDS
            if reopened:
                # Image and container events missed before the stream opened change the
                # inventory too (a container created before its host was first followed).
                self._images.request(writer.host_id)
            heard = opened
            batch = _Batch()
            try:
                async for event in events:
                    heard = int(time.time()) - 1
                    self._on_event(engine, writer, batch, event)
            except StreamSilent:
                resume.since = heard
                raise
            finally:
                if batch.task is not None:
                    batch.task.cancel()
                if batch.docker_ids:
                    # Containers named by events and not yet read: the next opening re-lists.
                    resume.relist_due = 0.0

    def _on_event(
        self, engine: LiveClient, writer: StateWriter, batch: _Batch, event: dict[str, Any]
    ) -> None:
        if inventory.changes_inventory(event):
            self._images.request(writer.host_id)
        elif inventory.changes_usage(event):
            self._usage.request(writer.host_id)
        docker_id = writer.to_reread(event)
        if docker_id is None:
            return
        batch.docker_ids.add(docker_id)
        if batch.task is None or batch.task.done():
            batch.task = asyncio.create_task(self._inspect_batch(engine, writer, batch))

    async def _inspect_batch(self, engine: LiveClient, writer: StateWriter, batch: _Batch) -> None:
        """Inspect the containers events named within a short while, and store what was seen
        in one transaction; again while more events came meanwhile. A failed batch is tried
        again a second later, while the stream lasts (its end cancels this)."""
        while batch.docker_ids:
            await asyncio.sleep(_INSPECT_BATCH_SECONDS)
            docker_ids, batch.docker_ids = batch.docker_ids, set()
            try:
                readings = await asyncio.gather(*(self._inspect(engine, d) for d in docker_ids))
                await self._in_db_thread(writer.store_readings, list(readings))
            except (EngineError, OSError, ValueError) as exc:
                log.debug(
                    "container inspect failed; trying again",
                    extra={"host_id": writer.host_id, "error": str(exc)},
                )
            except Exception:
                log.exception("container follower failed", extra={"host_id": writer.host_id})
            else:
                continue
            batch.docker_ids |= docker_ids
            await asyncio.sleep(1.0)

    @staticmethod
    async def _inspect(engine: LiveClient, docker_id: str) -> Reading:
        read_at = utcnow()
        try:
            return docker_id, await engine.inspect_container(docker_id), read_at
        except ObjectNotFound:
            return docker_id, None, read_at


class ContainerWatcher(LoopService):
    """Starts and stops a follower per host, holding a lease per host so that one process
    follows each host; renews the leases every round, all in one transaction."""

    name = "container-watcher"

    def __init__(self, app: AppContext, *, silence_seconds: float = _SILENCE_SECONDS) -> None:
        super().__init__(2.0)
        self.app = app
        self.silence_seconds = silence_seconds
        self.holder = leases.member_holder("watcher")
        self.followers: dict[str, concurrent.futures.Future[None]] = {}
        self._followers: Followers | None = None

    def start(self) -> None:
        self._followers = Followers(self.app, silence_seconds=self.silence_seconds)
        super().start()

    def run_once(self) -> None:
        assert self._followers is not None, "started"
        with self.app.db.session(write=False) as session:
            hosts = set(session.execute(select(Host.id).where(Host.status == "ready")).scalars())
        for host_id in list(self.followers):
            follower = self.followers[host_id]
            if host_id not in hosts or follower.done():
                follower.cancel()
                del self.followers[host_id]
        # Every host's lease taken or renewed in one transaction (not one per host).
        held = leases.acquire_many(
            self.app.db,
            [f"containers.follow.{host_id}" for host_id in sorted(hosts)],
            holder=self.holder,
            ttl_seconds=_LEASE_SECONDS,
        )
        for host_id in hosts:
            if f"containers.follow.{host_id}" not in held:
                if host_id in self.followers:
                    self.followers.pop(host_id).cancel()
                continue
            if host_id not in self.followers:
                self.followers[host_id] = self._followers.follow(host_id)

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        if self._followers is not None:
            self._followers.close(timeout)
        for host_id in self.followers:
            leases.release(self.app.db, f"containers.follow.{host_id}", holder=self.holder)
        self.followers.clear()

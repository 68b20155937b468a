"""The event stream's fan-out: one poller per process, any number of subscribers.

The poller numbers newly committed events (the sequencer) and reads them once (woken at once by
local commits, and polling for other processes' commits) into a bounded in-memory window; every
subscriber serves itself from that window, so a thousand subscribers cost one query per poll,
not a thousand. A subscriber resuming from a cursor older than the window reads its backlog
from the database in pages first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select

from app.core.db import Database
from app.events import recorder
from app.events.models import Event
from app.events.sequencer import sequence

_PAGE = 500
log = logging.getLogger("berth.events")


@dataclass(frozen=True)
class StreamEvent:
    cursor: int
    type: str
    resource_type: str
    resource_id: str
    message: bytes  # the whole SSE message, encoded once for every subscriber
    project_id: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> StreamEvent:
        body = {
            "cursor": str(row.seq),
            "type": row.type,
            "resource_type": row.resource_type,
            "resource_id": row.resource_id,
            "data": row.data,
            "at": row.at.isoformat().replace("+00:00", "Z"),
        }
        head = f"id: {row.seq}\nevent: {row.type}\ndata: ".encode()
        message = head + orjson.dumps(body) + b"\n\n"
        return cls(row.seq, row.type, row.resource_type, row.resource_id, message, row.project_id)


@dataclass(frozen=True)
class Filter:
    resource_types: frozenset[str] = frozenset()
    resource_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    # The resource types the subscriber may read (None: all); never widened by the filters above.
    readable: frozenset[str] | None = None
    # The projects it may read (None: all). An event outside projects (a host's) is shown to
    # everyone; one of a project-scoped type whose project is unknown, to no one limited here.
    projects: frozenset[str] | None = None
    scoped: frozenset[str] = frozenset()

    def _in_projects(self, event: StreamEvent) -> bool:
        if self.projects is None:
            return True
        if event.project_id is None:
            return event.resource_type not in self.scoped
        return event.project_id in self.projects

    def __call__(self, event: StreamEvent) -> bool:
        return (
            (self.readable is None or event.resource_type in self.readable)
            and self._in_projects(event)
            and (not self.resource_types or event.resource_type in self.resource_types)
            and (not self.resource_ids or event.resource_id in self.resource_ids)
            and (not self.types or event.type in self.types)
        )


class CursorExpired(Exception):
    """The events after this cursor were pruned: the client must resynchronise."""


class EventHub:
    def __init__(
        self,
        db: Database,
        *,
        window: int = 10_000,
        poll_interval: float = 0.5,
        coalesce: float = 0.1,
        keepalive: float = 15.0,
    ) -> None:
        self.db = db
        self.coalesce = coalesce
        self.keepalive = keepalive
        self.window = window
        self.poll_interval = poll_interval
        self._events: deque[StreamEvent] = deque()
        # Every event with a cursor above `_floor` is in `_events` (or not yet read).
        self._floor = 0
        self._last = 0
        # Resolved (and replaced) when new events arrive, and at every keep-alive tick: all
        # subscribers wait on this one future, so a wake-up costs no timer or lock per stream.
        self._next: asyncio.Future[None] | None = None
        self._ticked = 0.0
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._poller: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.subscribers = 0
        self._closing = False

    @property
    def last_cursor(self) -> int:
        return self._last

    async def start(self) -> None:
        if self._poller is not None:
            return
        loop = asyncio.get_running_loop()
        self._next = loop.create_future()
        self._ticked = loop.time()
        self._wake = asyncio.Event()
        wake = self._wake

        def wake_soon() -> None:
            # One wake-up on its way at a time: in a burst of commits (a replica's create
            # each) every one handed the loop a callback and wrote to its self-pipe, under the
            # GIL. A commit that finds one on its way is seen by the read it leads to, which
            # starts only after `_poll` has cleared the flag.
            if self._wake_pending:
                return
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
                loop.call_soon_threadsafe(wake.set)

        self._unsubscribe = recorder.on_commit(wake_soon)
        self._last = self._floor = await asyncio.to_thread(self._newest)
        self._poller = asyncio.create_task(self._poll(), name="event-hub")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        poller, self._poller = self._poller, None
        if poller is not None:
            # The loop also checks `_closing`: on Python 3.11, wait_for can swallow a
            # cancellation that arrives just as the event it waits for is set.
            self._closing = True
            poller.cancel()
            await asyncio.wait({poller}, timeout=5)
            self._announce()  # subscribers see `_closing` and end

    def _announce(self) -> None:
        done, self._next = self._next, asyncio.get_running_loop().create_future()
        if done is not None and not done.done():
            done.set_result(None)

    def _newest(self) -> int:
        with self.db.session(write=False) as session:
            return int(session.execute(select(func.max(Event.seq))).scalar_one() or 0)

    def _oldest(self) -> int | None:
        with self.db.session(write=False) as session:
            oldest = session.execute(select(func.min(Event.seq))).scalar_one()
        return int(oldest) if oldest is not None else None

    def _read(self, after: int, limit: int) -> list[StreamEvent]:
        with self.db.session(write=False) as session:
            rows = session.execute(
                select(Event).where(Event.seq > after).order_by(Event.seq).limit(limit)
            ).scalars()
            return [StreamEvent.from_row(row) for row in rows]

    async def _poll(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            self._wake_pending = False
            if loop.time() - self._ticked >= self.keepalive / 3:
                self._ticked = loop.time()
                self._announce()  # lets idle subscribers send their keep-alive
            try:
                await asyncio.to_thread(sequence, self.db)
                fresh = await asyncio.to_thread(self._read, self._last, _PAGE)
            except Exception:  # the database is away for a moment: try again next round
                log.warning("reading new events failed; retrying", exc_info=True)
                await asyncio.sleep(self.poll_interval)
                continue
            if not fresh:
                continue
            self._events.extend(fresh)
            self._last = fresh[-1].cursor
            while len(self._events) > self.window:
                self._floor = self._events.popleft().cursor
            if len(fresh) == _PAGE:
                self._wake.set()  # more are waiting
            self._announce()
            # Let a burst of commits gather: every subscriber then wakes, and writes to its
            # socket, once per burst rather than once per commit.
            await asyncio.sleep(self.coalesce)

    def _after(self, cursor: int) -> list[StreamEvent]:
        # From the newest end: a subscriber that keeps up needs only the last few.
        batch = []
        for event in reversed(self._events):
            if event.cursor <= cursor:
                break
            batch.append(event)
        batch.reverse()
        return batch

    async def check_cursor(self, since: int) -> None:
        """Raise CursorExpired if events after `since` were pruned already (asked of the
        database, so every Berth process gives the same answer)."""
        oldest = await asyncio.to_thread(self._oldest)
        if oldest is not None and since < oldest - 1:
            raise CursorExpired(f"events after cursor {since} were pruned; the oldest is {oldest}")

    async def subscribe(self, since: int | None, matches: Filter) -> AsyncIterator[bytes]:
        """SSE messages after `since` (default: from now on), then live ones, each burst as
        one chunk; a comment line when nothing was sent for `keepalive` seconds, so proxies
        and clients know the stream is alive."""
        loop = asyncio.get_running_loop()
        cursor = self._last if since is None else since
        written = loop.time()
        self.subscribers += 1
        try:
            while not self._closing:
                if cursor < self._floor:
                    backlog = await asyncio.to_thread(self._read, cursor, _PAGE)
                    if backlog:
                        yield b"".join(e.message for e in backlog if matches(e))
                        cursor, written = backlog[-1].cursor, loop.time()
                        continue
                batch = self._after(cursor)
                if batch:
                    yield b"".join(e.message for e in batch if matches(e))
                    cursor, written = batch[-1].cursor, loop.time()
                    continue
                assert self._next is not None
                # Shielded: a subscriber that goes away must not cancel everyone's future.
                await asyncio.shield(self._next)
                if self._last == cursor and loop.time() - written >= self.keepalive:
                    yield b": keep-alive\n\n"
                    written = loop.time()
        finally:
            self.subscribers -= 1

"""Background loops: each is a LoopService with one `run_once`, started and stopped together."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from sqlalchemy.orm import Session

from app.core.db import Database
from app.workers import leases

log = logging.getLogger("berth.loops")

# A leased loop renews its lease this often at least, and holds it this long unrenewed.
_RENEW_SECONDS = 3.0
_LEASE_TTL = 10.0


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


class LoopService(ABC):
    """Runs `run_once` every `interval` seconds in its own thread; `wake()` runs it sooner."""

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run_once(self) -> None: ...

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"berth-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # A loop must outlive any one bad round; the next round starts from the facts.
                log.exception("loop round failed", extra={"loop": self.name})
            self._wake.wait(self.interval)
            self._wake.clear()


class LeasedLoop(LoopService):
    """A loop that one process at a time runs: it takes or renews the lease named `lease`
    every few seconds and runs `run_leased` every `interval` (or when woken) while it holds it;
    `stop` gives the lease up so another process takes over at its next round. The lease is
    renewed more often than a slow loop runs, so that a killed holder's loop moves to another
    process within `_LEASE_TTL` seconds, not within a few of its intervals.

    `epoch` is the lease's epoch for this round (None while another process holds it); a
    round's writes call `holds_lease(session)` in their transaction, so a round that stalled
    past its lease, while another process took over, writes nothing.
    """

    lease: str

    def __init__(self, db: Database, interval: float) -> None:
        super().__init__(min(interval, _RENEW_SECONDS))
        self.every = interval
        self.db = db
        self.holder = leases.member_holder(self.name)
        self.epoch: int | None = None
        self._due = 0.0

    @abstractmethod
    def run_leased(self) -> None: ...

    def wake(self) -> None:
        self._due = 0.0
        super().wake()

    def run_once(self) -> None:
        # A few renewals long, so one late renewal does not hand the loop over.
        ttl = max(3 * self.interval, _LEASE_TTL)
        self.epoch = leases.acquire(self.db, self.lease, holder=self.holder, ttl_seconds=ttl)
        if self.epoch is None:
            self._due = 0.0  # a lease (re)gained is a round at once
            return
        now = time.monotonic()
        if now >= self._due:
            self._due = now + self.every
            self.run_leased()

    def holds_lease(self, session: Session) -> bool:
        return self.epoch is not None and leases.held(
            session, self.lease, holder=self.holder, epoch=self.epoch
        )

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        leases.release(self.db, self.lease, holder=self.holder)


@contextmanager
def running(services: Sequence[Service], *, stop_timeout: float = 10.0) -> Iterator[None]:
    """Start every service, and stop them all (in reverse order) when the block ends."""
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            try:
                service.stop(stop_timeout)
            except Exception:
                log.exception("service failed to stop", extra={"loop": service.name})

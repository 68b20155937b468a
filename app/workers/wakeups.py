"""A small wake-up bus: lower layers say "something of topic T changed", the loops that care
subscribe. It inverts the dependency (a watcher or a router need not know the reconciler), and
it is only a hint: every loop still runs on its own interval, so a lost wake-up costs latency,
never correctness.

A wake-up reaches the subscribers of this process at once, and, while a `Relay` runs, those of
every other Berth process on the same PostgreSQL database (NOTIFY/LISTEN; see
`Database.notify`). On SQLite it stays in the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.core.db import Database

log = logging.getLogger("berth.wakeups")

SERVICES = "services"
"""A service or one of its tasks changed: the service reconcilers should look again."""

_lock = threading.Lock()
_subscribers: dict[str, list[Callable[[], None]]] = {}
_relays: list[Relay] = []


def subscribe(topic: str, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on every wake-up of `topic` in this process; returns the unsubscriber."""
    with _lock:
        _subscribers.setdefault(topic, []).append(callback)

    def unsubscribe() -> None:
        with _lock:
            callbacks = _subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)

    return unsubscribe


def notify(topic: str) -> None:
    """Wake the subscribers of `topic`: this process's now, other processes' through the relay.

    Call it after the change commits, so that whoever wakes finds the change.
    """
    _wake_here(topic)
    with _lock:
        relays = list(_relays)
    for relay in relays:
        relay.publish(topic)


def _wake_here(topic: str) -> None:
    with _lock:
        callbacks = list(_subscribers.get(topic, ()))
    for callback in callbacks:
        callback()


class Relay:
    """Carries wake-ups between this process and the others on its database: publishes what
    `notify` is given, and hands what the others notify (enqueues included) to this process's
    subscribers. One per process; a service, started before the loops that subscribe.

    Publishing is a thread of its own: `notify` (a router answering a request, a watcher)
    never waits on the database, and a burst of wake-ups of one topic goes out as one."""

    name = "wakeups"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._stop = threading.Event()
        self._pending: set[str] = set()
        self._has_pending = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for label, target in (("listener", self._listen), ("publisher", self._publish_loop)):
            thread = threading.Thread(target=target, name=f"berth-wakeups-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)
        with _lock:
            _relays.append(self)

    def stop(self, timeout: float) -> None:
        with _lock:
            if self in _relays:
                _relays.remove(self)
        self._stop.set()
        self._has_pending.set()
        for thread in self._threads:
            # The listener looks at `stop` every second.
            thread.join(timeout)

    def publish(self, topic: str) -> None:
        with _lock:
            self._pending.add(topic)
        self._has_pending.set()

    def _publish_loop(self) -> None:
        while True:
            self._has_pending.wait()
            self._has_pending.clear()
            with _lock:
                topics, self._pending = self._pending, set()
            if self._stop.is_set():
                return
            for topic in topics:
                try:
                    self.db.notify(topic)
                except Exception:
                    # Only a hint: the other processes find the change at their next round.
                    log.warning(
                        "publishing a wake-up failed", extra={"topic": topic}, exc_info=True
                    )

    def _listen(self) -> None:
        self.db.listen(self._deliver, stop=self._stop, on_reconnect=self._wake_every_topic)

    @classmethod
    def _wake_every_topic(cls) -> None:
        """After a gap in listening: any topic may have been notified meanwhile."""
        with _lock:
            topics = list(_subscribers)
        for topic in topics:
            cls._deliver(topic)

    @staticmethod
    def _deliver(topic: str) -> None:
        try:
            _wake_here(topic)
        except Exception:
            log.exception("a wake-up subscriber failed", extra={"topic": topic})

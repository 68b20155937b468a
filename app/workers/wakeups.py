"""A small wake-up bus: lower layers say "something of topic T changed", the loops that care
subscribe. It inverts the dependency (a watcher or a router need not know the reconciler), and
it is only a hint: every loop still runs on its own interval, so a lost wake-up costs latency,
never correctness.

A wake-up may name what changed (`keys`: for `SERVICES`, the ids of the services whose tasks
changed), so that a loop looks only there; one without keys means anything of its topic may
have changed.

A wake-up reaches the subscribers of this process at once, and, while a `Relay` runs, those of
every other Berth process on the same PostgreSQL database (NOTIFY/LISTEN; see
`Database.notify`). On SQLite it stays in the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from app.core.db import Database

log = logging.getLogger("berth.wakeups")

SERVICES = "services"
"""A service or one of its tasks changed: the service reconcilers should look again."""

Keys = frozenset[str] | None
"""What a wake-up names: these keys changed, or (None) anything of its topic may have."""

# A notice carries at most this many keys (26-character ids: well under PostgreSQL's 8,000-byte
# payload); more go out as several notices.
_KEYS_PER_NOTICE = 200

_lock = threading.Lock()
_subscribers: dict[str, list[Callable[[Keys], None]]] = {}
_relays: list[Relay] = []


def subscribe(topic: str, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on every wake-up of `topic` in this process, whatever it names; returns
    the unsubscriber."""
    return subscribe_keys(topic, lambda _keys: callback())


def subscribe_keys(topic: str, callback: Callable[[Keys], None]) -> Callable[[], None]:
    """Call `callback` with what each wake-up of `topic` in this process names; returns the
    unsubscriber."""
    with _lock:
        _subscribers.setdefault(topic, []).append(callback)

    def unsubscribe() -> None:
        with _lock:
            callbacks = _subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)

    return unsubscribe


def notify(topic: str, keys: Iterable[str] | None = None) -> None:
    """Wake the subscribers of `topic`: this process's now, other processes' through the relay.
    `keys` name what changed (none given: anything may have); an empty `keys` wakes no one.

    Call it after the change commits, so that whoever wakes finds the change.
    """
    named = None if keys is None else frozenset(keys)
    if named is not None and not named:
        return
    _wake_here(topic, named)
    with _lock:
        relays = list(_relays)
    for relay in relays:
        relay.publish(topic, named)


def _wake_here(topic: str, keys: Keys) -> None:
    with _lock:
        callbacks = list(_subscribers.get(topic, ()))
    for callback in callbacks:
        callback(keys)


def _merged(first: Keys, second: Keys) -> Keys:
    """Two wake-ups of one topic as one."""
    return None if first is None or second is None else first | second


def notices(topic: str, keys: Keys) -> list[str]:
    """A wake-up as the notices that carry it to other processes: the topic, then its keys,
    separated by spaces (`heard` reads them)."""
    if keys is None:
        return [topic]
    ordered = sorted(keys)
    return [
        " ".join((topic, *ordered[start : start + _KEYS_PER_NOTICE]))
        for start in range(0, len(ordered), _KEYS_PER_NOTICE)
    ]


def heard(notice: str) -> tuple[str, Keys]:
    """The topic and keys of a notice (`notices`)."""
    topic, *keys = notice.split(" ")
    return topic, frozenset(keys) if keys else None


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
        self._pending: dict[str, Keys] = {}
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

    def publish(self, topic: str, keys: Keys = None) -> None:
        with _lock:
            if topic in self._pending:
                keys = _merged(self._pending[topic], keys)
            self._pending[topic] = keys
        self._has_pending.set()

    def _publish_loop(self) -> None:
        while True:
            self._has_pending.wait()
            self._has_pending.clear()
            with _lock:
                pending, self._pending = self._pending, {}
            if self._stop.is_set():
                return
            for topic, keys in pending.items():
                try:
                    for notice in notices(topic, keys):
                        self.db.notify(notice)
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
    def _deliver(notice: str) -> None:
        topic, keys = heard(notice)
        try:
            _wake_here(topic, keys)
        except Exception:
            log.exception("a wake-up subscriber failed", extra={"topic": topic})

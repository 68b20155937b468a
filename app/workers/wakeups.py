"""A small wake-up bus: lower layers say "something of topic T changed", the loops that care
subscribe. It inverts the dependency (a watcher or a router need not know the reconciler), and
it is only a hint: every loop still runs on its own interval, so a lost wake-up costs latency,
never correctness."""

from __future__ import annotations

import threading
from collections.abc import Callable

SERVICES = "services"
"""A service or one of its tasks changed: the service reconcilers should look again."""

_lock = threading.Lock()
_subscribers: dict[str, list[Callable[[], None]]] = {}


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
    """Wake this process's subscribers of `topic` now."""
    with _lock:
        callbacks = list(_subscribers.get(topic, ()))
    for callback in callbacks:
        callback()

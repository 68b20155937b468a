"""Wakes long-polls (`GET /operations/{id}?wait=N`) the moment this process finishes an
operation, instead of at their next database poll. Operations finished by other processes
are still seen by the poll, which runs at a slower pace."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def register(self, operation_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiting.setdefault(operation_id, set()).add((asyncio.get_running_loop(), event))
        return event

    def unregister(self, operation_id: str, event: asyncio.Event) -> None:
        with self._lock:
            entries = self._waiting.get(operation_id, set())
            entries.difference_update({entry for entry in entries if entry[1] is event})
            if not entries:
                self._waiting.pop(operation_id, None)

    def notify(self, operation_ids: Iterable[str]) -> None:
        """Called from any thread."""
        with self._lock:
            entries = [entry for op_id in operation_ids for entry in self._waiting.get(op_id, ())]
        for loop, event in entries:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


waiters = Waiters()

"""One reusable client per host, rebuilt when the host's URL, TLS material or `insecure` flag
changes."""

from __future__ import annotations

import threading

from app.engine.protocol import Engine, EngineFactory
from app.engine.tls import TlsMaterial


class EnginePool:
    def __init__(self, factory: EngineFactory, *, timeout: float = 30.0) -> None:
        self._factory = factory
        self._timeout = timeout
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[tuple[str, TlsMaterial | None, bool], Engine]] = {}

    def get(
        self, host_id: str, url: str, tls: TlsMaterial | None = None, *, insecure: bool = False
    ) -> Engine:
        identity = (url, tls, insecure)
        with self._lock:
            cached = self._clients.get(host_id)
            if cached is not None and cached[0] == identity:
                return cached[1]
        engine = self._factory.client(url, tls=tls, insecure=insecure, timeout=self._timeout)
        with self._lock:
            old = self._clients.get(host_id)
            if old is not None and old[0] == identity:
                # Another thread built one meanwhile and may be using it: keep that one.
                engine, old = old[1], (identity, engine)
            else:
                self._clients[host_id] = (identity, engine)
        if old is not None:
            old[1].close()
        return engine

    def forget(self, host_id: str) -> None:
        with self._lock:
            cached = self._clients.pop(host_id, None)
        if cached is not None:
            cached[1].close()

    def keep(self, host_ids: set[str]) -> None:
        """Close the clients of every other host (hosts deleted meanwhile)."""
        with self._lock:
            gone = [self._clients.pop(h) for h in list(self._clients) if h not in host_ids]
        for _, engine in gone:
            engine.close()

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for _, engine in clients:
            engine.close()

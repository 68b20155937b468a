"""The prober keeps one client per host between rounds (a new one per round cost a connection
and an API version request per host, every round), on the testbed's engine h1. Its probes run
on an event loop of its own, thread `berth-probe`, with the async client."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from functools import partial

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.engine.docker_engine import DockerEngine
from app.engine.factory import DockerEngines
from app.engine.live import LiveEngine
from app.engine.tls import TlsMaterial
from app.main import create_app
from tests.support import Api, host_ready, wait_for
from tests.testbed import Testbed


class CountingEngines(DockerEngines):
    """Docker clients as usual, counting those the prober builds, by URL."""

    def __init__(self) -> None:
        self.probe_clients: Counter[str] = Counter()

    def client(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False, timeout: float
    ) -> DockerEngine:
        if threading.current_thread().name.startswith("berth-probe"):
            self.probe_clients[url] += 1
        return super().client(url, tls=tls, insecure=insecure, timeout=timeout)

    def live(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False
    ) -> LiveEngine:
        if threading.current_thread().name.startswith("berth-probe"):
            self.probe_clients[url] += 1
        return super().live(url, tls=tls, insecure=insecure)


def test_the_prober_keeps_one_client_per_host(
    settings: Settings, db: Database, bed: Testbed
) -> None:
    engines = CountingEngines()
    with TestClient(create_app(settings, engine_factory=engines)) as client:
        api = Api(client, db)
        host_id = api.post("/hosts", json={"name": "h1", **bed.host("h1")}).json()["id"]
        wait_for(partial(host_ready, api, host_id), timeout=30, what="h1 ready")
        seen: set[datetime] = set()

        def rounds() -> bool:
            seen.add(api.get(f"/hosts/{host_id}").json()["last_seen_at"])
            return len(seen) >= 4

        wait_for(rounds, timeout=30, interval=0.2, what="four probe rounds")
        assert api.get(f"/hosts/{host_id}").json()["status"] == "ready"
    assert engines.probe_clients == {bed.h1_url: 1}

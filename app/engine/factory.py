"""The docker implementation of EngineFactory: the blocking docker-SDK client and the async
httpx client for live data."""

from __future__ import annotations

from app.engine.docker_engine import DockerEngine
from app.engine.live import LiveEngine
from app.engine.tls import TlsMaterial


class DockerEngines:
    def client(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False, timeout: float
    ) -> DockerEngine:
        return DockerEngine(url, tls=tls, insecure=insecure, timeout=timeout)

    def live(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False
    ) -> LiveEngine:
        return LiveEngine(url, tls=tls, insecure=insecure)

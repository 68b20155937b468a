"""What Berth needs from an engine, and how it gets one: the seam other engine types (a
simulated engine for tests and benchmarks, say) plug into. DockerEngine and LiveEngine are the
docker implementations; code outside app/engine types against these protocols."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import IO, Any, Protocol

from app.engine.docker_engine import EngineFacts
from app.engine.live import ContainerStats
from app.engine.tls import TlsMaterial


class EventStream(Protocol):
    """An engine's container events as they happen; `close()` from another thread ends it."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """One engine, called from worker threads (every call blocks). Failures are EngineError."""

    def close(self) -> None: ...

    def ping(self) -> None: ...

    def facts(self) -> EngineFacts: ...

    # Containers.

    def create_container_raw(
        self, name: str | None, config: dict[str, Any], *, platform: str | None = None
    ) -> str: ...

    def list_containers(self, *, labels: dict[str, str] | None = None) -> list[dict[str, Any]]: ...

    def inspect_container(self, container_id: str) -> dict[str, Any]: ...

    def start_container(self, container_id: str) -> None: ...

    def stop_container(self, container_id: str, *, timeout: int) -> None: ...

    def restart_container(self, container_id: str, *, timeout: int) -> None: ...

    def kill_container(self, container_id: str, *, signal: str) -> None: ...

    def remove_container(
        self, container_id: str, *, force: bool = False, volumes: bool = False
    ) -> None: ...

    def put_archive(self, container_id: str, path: str, data: bytes) -> None: ...

    def events(self, *, since: int | None = None) -> EventStream: ...

    # Volumes and networks.

    def inspect_volume(self, name: str) -> dict[str, Any]: ...

    def ensure_volume(self, name: str, labels: dict[str, str]) -> bool: ...

    def remove_volume(self, name: str) -> bool: ...

    def ensure_network(self, name: str, labels: dict[str, str]) -> bool: ...

    def remove_network(self, name: str) -> bool: ...

    def connect_network(
        self, network: str, container_id: str, aliases: list[str] | None = None
    ) -> None: ...

    # Images.

    def list_images(self) -> list[dict[str, Any]]: ...

    def inspect_image(self, reference: str) -> dict[str, Any]: ...

    def image_history(self, reference: str) -> list[dict[str, Any]]: ...

    def pull(
        self,
        repository: str,
        tag: str,
        auth: dict[str, str] | None,
        *,
        platform: str | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def push(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> Iterator[dict[str, Any]]: ...

    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        tag: str | None,
        build_args: dict[str, str],
        labels: dict[str, str],
        target: str | None = None,
        cache_from: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def tag_image(self, source: str, repository: str, tag: str) -> None: ...

    def remove_image(self, reference: str, *, force: bool) -> None: ...

    def streaming(self, timeout: float = 3600.0) -> Engine:
        """A second client for long streams (builds, pulls), closed when done."""
        ...


class LiveClient(Protocol):
    """One engine's live data, read on the event loop. Close it with `aclose()`."""

    def logs(
        self,
        container_id: str,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        timestamps: bool,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncGenerator[bytes, None]: ...

    async def stats(self, container_id: str) -> ContainerStats: ...

    async def ping(self, *, timeout: float | None) -> str | None: ...

    async def facts(self, *, timeout: float, api_version: str | None = None) -> EngineFacts: ...

    async def list_containers(self) -> list[dict[str, Any]]: ...

    async def inspect_container(self, container_id: str) -> dict[str, Any]: ...

    def events(
        self,
        *,
        since: int | None = None,
        silence_seconds: float,
        types: Sequence[str] = ("container",),
    ) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...

    async def aclose(self) -> None: ...


class EngineFactory(Protocol):
    """Builds the clients for an engine reached at `url` (with TLS material, if any; plain
    tcp:// only when `insecure`). AppContext holds one; every client Berth uses is built by it."""

    def client(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False, timeout: float
    ) -> Engine: ...

    def live(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False
    ) -> LiveClient: ...

"""Live data from an engine, read on the event loop: container logs (streamed, maybe followed
for hours by many readers at once), one stats sample, and what the container followers read
(the event stream, the container list, an inspect).

DockerEngine is blocking and every call there costs a worker thread; a followed log stream or
event stream can last for hours, so that would be a thread per reader. LiveEngine speaks the
Engine HTTP API directly with httpx.AsyncClient instead: a reader is a coroutine holding one
HTTP connection.

Close log iterators you stop reading early (`contextlib.aclosing(engine.logs(...))`, or cancel
the task): that closes the HTTP response, and with it the engine's side of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import ssl
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx

from app.engine.docker_engine import EngineFacts, engine_facts, parse_engine_time
from app.engine.errors import (
    EngineError,
    EngineRejected,
    EngineUnavailable,
    StreamSilent,
    for_status,
    tls_failure,
    translate_errors,
)
from app.engine.tls import TlsFiles, TlsMaterial, refuse_plain_tcp

MIN_API_VERSION = (1, 41)
# From this version on the engine says in Content-Type whether a log stream is multiplexed.
CONTENT_TYPE_API_VERSION = (1, 42)
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"

# TCP keep-alive on every connection to an engine: the kernel probes an idle connection after
# 30 s, every 10 s, and drops it after 3 probes unanswered, so a half-open event stream to an
# engine that is gone (machine down, network path cut) ends in about a minute at no cost to
# Berth, without re-opening silent streams to learn it.
_KEEPALIVE: list[tuple[int, int, int]] = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, int(getattr(socket, name)), value)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
        if hasattr(socket, name)  # Linux names; elsewhere the system's keep-alive timing
    ),
]

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
_HEADER = struct.Struct(">BxxxL")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ContainerStats:
    """One sample, computed the way `docker stats` computes its columns."""

    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int
    read_at: datetime


def demultiplex(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete frame of a multiplexed stream off the front of `buffer`.

    A frame is an 8-byte header (stream type: 0 stdin, 1 stdout, 2 stderr, 3 engine error;
    three zero bytes; big-endian uint32 payload length) and then the payload. Returns
    (stream type, payload) pairs; a partial frame stays in the buffer for the next chunk.
    Raises ValueError on a header that cannot be one (the stream is not multiplexed).
    """
    frames: list[tuple[int, bytes]] = []
    offset = 0
    available = len(buffer)
    while available - offset >= _HEADER.size:
        if buffer[offset] > SYSTEMERR or any(buffer[offset + 1 : offset + 4]):
            raise ValueError(
                f"not a multiplexed stream frame header: {bytes(buffer[offset : offset + 8])!r}"
            )
        stream, length = _HEADER.unpack_from(buffer, offset)
        end = offset + _HEADER.size + length
        if end > available:
            break
        frames.append((stream, bytes(buffer[offset + _HEADER.size : end])))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


class LiveEngine:
    """An async client for one engine's live data (unix://, or tcp:// as DockerEngine reaches
    it: TLS verified, or plain only when `insecure`)."""

    def __init__(
        self,
        url: str,
        *,
        tls: TlsMaterial | None = None,
        insecure: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int | None = None,
    ) -> None:
        """`read_timeout` bounds the wait for data on every request but followed log streams,
        which may be silent for hours. `max_connections` caps open connections (one per log
        reader); a request that finds none free within `connect_timeout` fails as
        EngineUnavailable. Unlimited by default."""
        self.url = url
        self._version: str | None = None
        self._version_lock = anyio.Lock()
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._stream_timeout = httpx.Timeout(None, connect=connect_timeout, pool=connect_timeout)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=10)
        transport: httpx.AsyncHTTPTransport
        if url.startswith("unix://"):
            path = url.removeprefix("unix://")
            path = path if path.startswith("/") else f"/{path}"
            transport = httpx.AsyncHTTPTransport(
                uds=path, verify=_unused_tls_context(), limits=limits
            )
            base_url = "http://docker"
            self._pinger = _Pinger(path=path, host="docker")
        elif url.startswith(("tcp://", "http://", "https://")):
            address = url.split("://", 1)[1].rstrip("/")
            if tls is not None:
                context = _ssl_context(tls, insecure=insecure)
                transport = httpx.AsyncHTTPTransport(
                    verify=context, limits=limits, socket_options=_KEEPALIVE
                )
                base_url = f"https://{address}"
            else:
                refuse_plain_tcp(url, insecure=insecure)
                context = None
                transport = httpx.AsyncHTTPTransport(
                    verify=_unused_tls_context(), limits=limits, socket_options=_KEEPALIVE
                )
                base_url = f"http://{address}"
            self._pinger = _Pinger(host=address, tls=context)
        else:
            raise EngineRejected(f"connect to {url}: unsupported engine URL scheme")
        # trust_env=False: an engine is never reached through the environment's HTTP proxy.
        self._client = httpx.AsyncClient(
            transport=transport, base_url=base_url, timeout=self._timeout, trust_env=False
        )

    async def aclose(self) -> None:
        self._pinger.close()
        await self._client.aclose()

    async def __aenter__(self) -> LiveEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def api_version(self) -> str:
        """The engine's API version, asked once (GET /version) and then remembered."""
        if self._version is not None:
            return self._version
        async with self._version_lock:
            if self._version is None:
                body = await self._get_json("/version", "version")
                version = str(body.get("ApiVersion", ""))
                if _version_tuple(version) < MIN_API_VERSION:
                    minimum = ".".join(map(str, MIN_API_VERSION))
                    raise EngineRejected(
                        f"engine API version {version or '?'} is older than {minimum}"
                    )
                self._version = version
            return self._version

    async def logs(
        self,
        container_id: str,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        timestamps: bool,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """A container's log output, yielded as it arrives (one piece per engine frame, which
        is a line for line-oriented output; raw chunks for TTY containers).

        `tail=None` means all lines; `since` (naive means UTC) skips older ones; `follow`
        keeps the stream open for new output until the container stops. Errors are raised
        on first iteration: ObjectNotFound, EngineRejected, EngineUnavailable.
        """
        what = f"logs of {container_id[:12]}"
        version = await self.api_version()
        tty: bool | None = None
        if _version_tuple(version) < CONTENT_TYPE_API_VERSION:
            tty = await self._tty(container_id, what)
        params = {
            "follow": _flag(follow),
            "timestamps": _flag(timestamps),
            "stdout": _flag(stdout),
            "stderr": _flag(stderr),
            "tail": "all" if tail is None else str(max(0, tail)),
        }
        if since is not None:
            params["since"] = _unix_time(since)
        path = f"/v{version}/containers/{quote(container_id, safe='')}/logs"
        timeout = self._stream_timeout if follow else self._timeout
        with translate_errors(what):
            async with self._client.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response, what)
                if tty is None:
                    content_type = response.headers.get("content-type", "").split(";")[0].strip()
                    if content_type == MULTIPLEXED_STREAM:
                        tty = False
                    elif content_type == RAW_STREAM:
                        tty = True
                    else:
                        tty = await self._tty(container_id, what)
                if tty:
                    async for chunk in response.aiter_raw():
                        if chunk:
                            yield chunk
                    return
                buffer = bytearray()
                async for chunk in response.aiter_raw():
                    buffer += chunk
                    try:
                        frames = demultiplex(buffer)
                    except ValueError as exc:
                        raise EngineUnavailable(f"{what}: {exc}") from exc
                    for stream, payload in frames:
                        if stream == SYSTEMERR:
                            message = payload.decode(errors="replace").strip()
                            raise EngineUnavailable(f"{what}: error from engine: {message}")
                        if payload:
                            yield payload

    async def stats(self, container_id: str) -> ContainerStats:
        """One stats sample of a running container; takes the engine one to two seconds (it
        samples twice, so the CPU figure is a rate). A container not running is rejected."""
        what = f"stats of {container_id[:12]}"
        version = await self.api_version()
        body = await self._get_json(
            f"/v{version}/containers/{quote(container_id, safe='')}/stats",
            what,
            params={"stream": "0"},
        )
        return _container_stats(body, what)

    # What the host prober reads, with short timeouts: an answer late by more is a failed probe.

    async def ping(self, *, timeout: float | None) -> str | None:
        """`GET /_ping`: the cheapest proof the engine answers. Returns its `API-Version`
        header (None when it sends none), which changes when the engine is upgraded. On a
        connection of its own, kept between pings (see `_Pinger`). `timeout=None`: no timer
        of its own, for a caller that cancels a ping it gave up on."""
        return await self._pinger.ping(timeout)

    async def facts(self, *, timeout: float, api_version: str | None = None) -> EngineFacts:
        """What `GET /info` and `GET /version` say about the engine, as DockerEngine.facts.
        Given the `api_version` a ping just answered, `/info` alone (its `ServerVersion` is
        the engine's version)."""
        info = await self._get_json("/info", "info", timeout=timeout)
        if api_version is not None:
            return engine_facts(
                info, {"Version": info.get("ServerVersion", ""), "ApiVersion": api_version}
            )
        version = await self._get_json("/version", "version", timeout=timeout)
        return engine_facts(info, version)

    # What the container followers read. Unversioned paths: the engine answers in its own API
    # version, as DockerEngine (version="auto") reads it; these calls need no minimum version.

    async def list_containers(self) -> list[dict[str, Any]]:
        """Every container of the engine (`GET /containers/json?all=1`), as DockerEngine lists."""
        found = await self._get_decoded(
            "/containers/json", "list containers", params={"all": "1", "limit": "-1"}
        )
        if not isinstance(found, list):
            raise EngineUnavailable("list containers: engine answered with unexpected JSON")
        return found

    async def inspect_container(self, container_id: str) -> dict[str, Any]:
        """One container's details; ObjectNotFound once it is gone."""
        return await self._get_json(
            f"/containers/{quote(container_id, safe='')}/json",
            f"inspect container {container_id[:12]}",
        )

    @contextlib.asynccontextmanager
    async def events(
        self,
        *,
        since: int | None = None,
        silence_seconds: float,
        types: Sequence[str] = ("container",),
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open the engine's event stream for objects of `types` (the engine has answered once
        the block is entered) and hand its events to the block as they come.

        The engine sends nothing while nothing happens, so silence cannot be told from a
        half-open connection: reading ends with EngineUnavailable after `silence_seconds`
        without a byte, and the reader re-opens the stream."""
        params = {"filters": json.dumps({"type": list(types)})}
        if since is not None:
            params["since"] = str(since)
        timeout = httpx.Timeout(
            silence_seconds, connect=self._timeout.connect, pool=self._timeout.pool
        )
        async with contextlib.AsyncExitStack() as stack:
            with translate_errors("events"):
                response = await stack.enter_async_context(
                    self._client.stream("GET", "/events", params=params, timeout=timeout)
                )
                if response.status_code >= 400:
                    await response.aread()
            _raise_for_status(response, "events")
            events = _decoded_events(response)
            stack.push_async_callback(events.aclose)
            yield events

    # Internals.

    async def _get_decoded(
        self,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """`timeout` (seconds, for every phase) replaces the client's own timeouts."""
        with translate_errors(what):
            if timeout is None:
                response = await self._client.get(path, params=params)
            else:
                response = await self._client.get(path, params=params, timeout=timeout)
        _raise_for_status(response, what)
        try:
            return response.json()
        except ValueError as exc:
            raise EngineUnavailable(f"{what}: engine answered with invalid JSON") from exc

    async def _get_json(
        self,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        body = await self._get_decoded(path, what, params=params, timeout=timeout)
        if not isinstance(body, dict):
            raise EngineUnavailable(f"{what}: engine answered with unexpected JSON")
        return body

    async def _tty(self, container_id: str, what: str) -> bool:
        version = await self.api_version()
        details = await self._get_json(
            f"/v{version}/containers/{quote(container_id, safe='')}/json", what
        )
        return bool((details.get("Config") or {}).get("Tty"))


class _Pinger:
    """`GET /_ping` spoken directly over one kept asyncio connection (unix socket, TCP, or TLS
    with the client's own context). The prober pings every host every few seconds; through
    httpx a ping cost about ten times what the request itself does (the client's machinery
    and a cancel scope per socket operation: bench/README.md, "Idle cost"). One ping at a
    time; a failed connection is dropped, and a kept one the engine closed meanwhile is
    replaced once."""

    def __init__(self, *, host: str, path: str | None = None, tls: ssl.SSLContext | None = None):
        self._path = path
        address = urlsplit(f"//{host}")
        self._host = address.hostname or host
        # The ports the engine listens on by default (docker's own client assumes the same).
        self._port = address.port if path is None and address.port else (2376 if tls else 2375)
        self._tls = tls
        self._request = f"GET /_ping HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def ping(self, timeout: float | None) -> str | None:
        try:
            # timeout=None: no timer; the caller bounds the ping (cancels it). A timer per ping
            # was the prober's largest cost at a thousand hosts.
            async with self._lock, asyncio.timeout(timeout):
                reused = self._connection is not None
                try:
                    return await self._once()
                except (OSError, asyncio.IncompleteReadError):
                    self.close()
                    if not reused:
                        raise
                    return await self._once()  # the engine closed the kept connection
        except TimeoutError as exc:
            self.close()
            raise EngineUnavailable(f"ping: engine unreachable (no answer in {timeout} s)") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            detail = tls_failure(exc) or str(exc) or type(exc).__name__
            raise EngineUnavailable(f"ping: engine unreachable ({detail})") from exc
        except asyncio.CancelledError:
            self.close()  # cancelled mid-request: what the connection holds next is unknown
            raise

    async def _once(self) -> str | None:
        if self._connection is None:
            if self._path is not None:
                self._connection = await asyncio.open_unix_connection(self._path)
            else:
                self._connection = await asyncio.open_connection(
                    self._host, self._port, ssl=self._tls
                )
        reader, writer = self._connection
        writer.write(self._request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # the body ends with the connection
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        if status >= 400:
            message = body.decode(errors="replace").strip()
            with contextlib.suppress(ValueError):
                decoded = json.loads(message)
                if isinstance(decoded, dict) and decoded.get("message"):
                    message = str(decoded["message"])
            raise for_status(status, f"ping: {message or f'HTTP {status}'}")
        return headers.get("api-version")

    def close(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers: the empty line that ends the body
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _decoded_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """The engine writes one JSON object per line; a line that is not one is a ValueError."""
    with translate_errors("events"):
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event
        except httpx.ReadTimeout as exc:
            raise StreamSilent("events: the stream was silent; re-open it") from exc


@functools.cache
def _unused_tls_context() -> ssl.SSLContext:
    """For the clients that speak plain HTTP: httpx builds a TLS context for every client
    even so, loading the CA bundle each time (about 0.9 MB of memory per client, with a
    follower's client per host). They never make a handshake, so they share this one."""
    return ssl.create_default_context()


def _ssl_context(tls: TlsMaterial, *, insecure: bool) -> ssl.SSLContext:
    """A client context as DockerEngine verifies: against the given CA, else the system's
    trust store; `insecure` skips the check. The ssl module reads the client certificate and
    key only from files, so they go through a private directory gone once they are loaded."""
    # Without cadata the default context loads the system's trust store.
    try:
        context = ssl.create_default_context(cadata=tls.ca_cert or None)
    except ssl.SSLError as exc:
        raise EngineRejected(f"TLS CA certificate unusable: {exc}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with TlsFiles(tls) as files:
        if files.client is not None:
            try:
                context.load_cert_chain(*files.client)
            except ssl.SSLError as exc:
                raise EngineRejected(f"TLS client certificate or key unusable: {exc}") from exc
    return context


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = response.text.strip()
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            message = str(body["message"])
    raise for_status(status, f"{what}: {message or f'HTTP {status}'}")


def _container_stats(body: dict[str, Any], what: str) -> ContainerStats:
    read_at = parse_engine_time(str(body.get("read") or ""))
    memory: dict[str, Any] = body.get("memory_stats") or {}
    if read_at is None or read_at.year <= 1 or not memory:
        # A stopped container's one-shot stats are all zero, with a zero read time.
        raise EngineRejected(f"{what}: container is not running")

    cpu: dict[str, Any] = body.get("cpu_stats") or {}
    precpu: dict[str, Any] = body.get("precpu_stats") or {}
    cpu_usage: dict[str, Any] = cpu.get("cpu_usage") or {}
    cpu_delta = _int(cpu_usage.get("total_usage")) - _int(
        (precpu.get("cpu_usage") or {}).get("total_usage")
    )
    system_delta = _int(cpu.get("system_cpu_usage")) - _int(precpu.get("system_cpu_usage"))
    online_cpus = _int(cpu.get("online_cpus")) or len(cpu_usage.get("percpu_usage") or [])
    cpu_percent = 0.0
    if system_delta > 0 and cpu_delta > 0:
        cpu_percent = cpu_delta / system_delta * online_cpus * 100.0

    # As the docker CLI does: page cache that can be reclaimed does not count as used.
    usage = _int(memory.get("usage"))
    details: dict[str, Any] = memory.get("stats") or {}
    used = usage
    if "total_inactive_file" in details:  # cgroup v1
        inactive = _int(details["total_inactive_file"])
    else:  # cgroup v2
        inactive = _int(details.get("inactive_file"))
    if inactive < usage:
        used = usage - inactive
    limit = _int(memory.get("limit"))
    memory_percent = used / limit * 100.0 if limit else 0.0

    rx = tx = 0
    for network in (body.get("networks") or {}).values():
        rx += _int((network or {}).get("rx_bytes"))
        tx += _int((network or {}).get("tx_bytes"))

    block_read = block_write = 0
    for entry in (body.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str((entry or {}).get("op", "")).lower()
        if op == "read":
            block_read += _int(entry.get("value"))
        elif op == "write":
            block_write += _int(entry.get("value"))

    return ContainerStats(
        cpu_percent=cpu_percent,
        memory_used_bytes=used,
        memory_limit_bytes=limit,
        memory_percent=memory_percent,
        network_rx_bytes=rx,
        network_tx_bytes=tx,
        block_read_bytes=block_read,
        block_write_bytes=block_write,
        pids=_int((body.get("pids_stats") or {}).get("current")),
        read_at=read_at,
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _unix_time(moment: datetime) -> str:
    """Seconds since the epoch with nanoseconds, the form the engine's `since` takes."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = max(aware - _EPOCH, _EPOCH - _EPOCH)
    seconds = delta.days * 86400 + delta.seconds
    return f"{seconds}.{delta.microseconds:06d}000"


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def _flag(value: bool) -> str:
    return "1" if value else "0"


__all__ = ["ContainerStats", "EngineError", "LiveEngine", "demultiplex"]

"""One hollow engine: the part of the Docker Engine API Berth uses, held in memory.

Containers never run anything: start makes them `running` at once, stop and kill make them
`exited`, and each change is published on the event stream as the real engine words it. Images
appear when pulled. A `latency` is slept before every answer; `mode` injects failures:

* `ok`: answers normally;
* `slow`: every answer waits `slow_seconds` more;
* `hanging`: reads requests and never answers them; event streams go silent but stay open (a
  half-open engine, as after a network partition);
* `refusing`: not listening, so connections are refused; `die()` also drops every open one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.hollow.http import Request, Response, error, read_request, write_response

API_VERSION = "1.45"
MODES = ("ok", "slow", "hanging", "refusing")
_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _time_text(at: datetime) -> str:
    """As an engine writes a time: RFC 3339 in UTC with `Z`."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now_text() -> str:
    return _time_text(datetime.now(UTC))


@dataclass
class Image:
    id: str
    tags: list[str]
    created: int

    def summary(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "ParentId": "",
            "RepoTags": self.tags,
            "RepoDigests": [],
            "Created": self.created,
            "Size": 1_000_000,
            "SharedSize": -1,
            "VirtualSize": 1_000_000,
            "Labels": {},
            "Containers": -1,
        }

    def details(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "RepoTags": self.tags,
            "RepoDigests": [],
            "Created": _time_text(datetime.fromtimestamp(self.created, UTC)),
            "Size": 1_000_000,
            "Architecture": "amd64",
            "Os": "linux",
            "Config": {"Labels": {}, "Env": [], "Cmd": ["sh"]},
            "RootFS": {"Type": "layers", "Layers": [f"sha256:{self.id[7:]}"]},
        }


@dataclass
class Container:
    id: str
    name: str
    config: dict[str, Any]
    image_id: str
    created: int
    status: str = "created"
    exit_code: int = 0
    started_at: str = _ZERO_TIME
    finished_at: str = _ZERO_TIME
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def status_text(self) -> str:
        if self.status == "running":
            return "Up 1 second"
        if self.status == "exited":
            return f"Exited ({self.exit_code}) 1 second ago"
        return "Created"

    def summary(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Image": self.config.get("Image", ""),
            "ImageID": self.image_id,
            "Command": " ".join(self.config.get("Cmd") or []),
            "Created": self.created,
            "Ports": [],
            "Labels": self.labels,
            "State": self.status,
            "Status": self.status_text(),
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Networks": self.networks},
            "Mounts": [],
        }

    def details(self) -> dict[str, Any]:
        cmd = list(self.config.get("Cmd") or [])
        return {
            "Id": self.id,
            "Created": _time_text(datetime.fromtimestamp(self.created, UTC)),
            "Path": cmd[0] if cmd else "",
            "Args": cmd[1:],
            "State": {
                "Status": self.status,
                "Running": self.status == "running",
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": 4242 if self.status == "running" else 0,
                "ExitCode": self.exit_code,
                "Error": "",
                "StartedAt": self.started_at,
                "FinishedAt": self.finished_at,
            },
            "Image": self.image_id,
            "Name": f"/{self.name}",
            "RestartCount": 0,
            "Config": {**self.config, "Labels": self.labels, "Tty": False},
            "HostConfig": self.config.get("HostConfig") or {},
            "NetworkSettings": {"Networks": self.networks, "Ports": {}},
            "Mounts": [],
        }


def _image_key(reference: str) -> str:
    """`busybox` and `docker.io/library/busybox:latest` name the same image."""
    name = reference.removeprefix("docker.io/").removeprefix("library/")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in last else f"{name}:latest"


class HollowEngine:
    """One simulated engine listening on a TCP port of 127.0.0.1 or on a unix socket."""

    def __init__(self, name: str, *, port: int | None = None, socket: Path | None = None) -> None:
        if (port is None) == (socket is None):
            raise ValueError("a hollow engine listens on a port or on a socket")
        self.name = name
        self.port = port
        self.socket = socket
        self.latency = 0.0
        self.slow_seconds = 2.0
        self.mode = "ok"
        self.requests = 0
        self.containers: dict[str, Container] = {}
        self.images: dict[str, Image] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._answering = asyncio.Event()
        self._answering.set()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Response]]]] = [
            (method, re.compile(f"^{pattern}$"), handler)
            for method, pattern, handler in (
                ("GET", "/_ping", self._ping),
                ("HEAD", "/_ping", self._ping),
                ("GET", "/version", self._version),
                ("GET", "/info", self._info),
                ("GET", "/events", self._events),
                ("GET", "/containers/json", self._list_containers),
                ("POST", "/containers/create", self._create),
                ("GET", "/containers/(?P<ref>[^/]+)/json", self._inspect),
                ("POST", "/containers/(?P<ref>[^/]+)/start", self._start),
                ("POST", "/containers/(?P<ref>[^/]+)/stop", self._stop),
                ("POST", "/containers/(?P<ref>[^/]+)/restart", self._restart),
                ("POST", "/containers/(?P<ref>[^/]+)/kill", self._kill),
                ("DELETE", "/containers/(?P<ref>[^/]+)", self._remove),
                ("PUT", "/containers/(?P<ref>[^/]+)/archive", self._archive),
                ("GET", "/containers/(?P<ref>[^/]+)/logs", self._logs),
                ("GET", "/containers/(?P<ref>[^/]+)/stats", self._stats),
                ("GET", "/images/json", self._list_images),
                ("POST", "/images/create", self._pull),
                ("GET", "/images/(?P<ref>.+)/json", self._inspect_image),
                ("GET", "/images/(?P<ref>.+)/history", self._image_history),
                ("GET", "/networks", self._list_networks),
                ("POST", "/networks/create", self._create_network),
                ("POST", "/networks/(?P<ref>[^/]+)/connect", self._connect_network),
                ("DELETE", "/networks/(?P<ref>[^/]+)", self._remove_network),
                ("GET", "/volumes", self._list_volumes),
                ("POST", "/volumes/create", self._create_volume),
                ("GET", "/volumes/(?P<ref>[^/]+)", self._inspect_volume),
                ("DELETE", "/volumes/(?P<ref>[^/]+)", self._remove_volume),
            )
        ]

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}"
        return f"tcp://127.0.0.1:{self.port}"

    # Life and failure injection.

    async def start(self) -> None:
        if self._server is not None:
            return
        if self.socket is not None:
            self.socket.unlink(missing_ok=True)
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket))
        else:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        if mode == "hanging":
            self._answering.clear()
        else:
            self._answering.set()
        if mode == "refusing":
            await self._stop_listening()
        else:
            await self.start()

    async def die(self) -> None:
        """The engine is gone: connections dropped (event streams too), new ones refused."""
        await self.set_mode("refusing")
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        for writer in list(self._connections):
            writer.transport.abort()

    async def close(self) -> None:
        await self.die()
        if self.socket is not None:
            self.socket.unlink(missing_ok=True)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    # The connection loop.

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while (request := await read_request(reader)) is not None:
                self.requests += 1
                await self._answering.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.mode == "slow":
                    await asyncio.sleep(self.slow_seconds)
                await write_response(reader, writer, await self._dispatch(request))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The fleet is shutting down; asyncio would log this connection's cancellation.
            return
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, request: Request) -> Response:
        path = _VERSION_PREFIX.sub("", request.path)
        for method, pattern, handler in self._routes:
            if method == request.method and (match := pattern.match(path)):
                try:
                    return await handler(request, **match.groupdict())
                except LookupError as exc:
                    return error(404, str(exc.args[0]))
        return error(404, f"page not found: {request.method} {path}")

    # Events.

    def publish(self, action: str, container: Container, **extra: str) -> None:
        if not self._answering.is_set():
            return  # a hanging engine's streams stay silent
        now = time.time_ns()
        attributes = {
            **container.labels,
            "image": str(container.config.get("Image", "")),
            "name": container.name,
            **extra,
        }
        event = {
            "status": action,
            "id": container.id,
            "from": attributes["image"],
            "Type": "container",
            "Action": action,
            "Actor": {"ID": container.id, "Attributes": attributes},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        line = json.dumps(event).encode() + b"\n"
        for queue in self._subscribers:
            queue.put_nowait(line)

    async def _events(self, request: Request) -> Response:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._subscribers.add(queue)

        async def lines() -> AsyncIterator[bytes]:
            try:
                while (line := await queue.get()) is not None:
                    yield line
            finally:
                self._subscribers.discard(queue)

        return Response(stream=lines())

    # System.

    async def _ping(self, request: Request) -> Response:
        return Response(body=b"OK", content_type="text/plain; charset=utf-8")

    async def _version(self, request: Request) -> Response:
        return Response(
            body={
                "Version": "27.0.0-hollow",
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64",
                "KernelVersion": "hollow",
                "GoVersion": "go1.22",
            }
        )

    async def _info(self, request: Request) -> Response:
        running = sum(1 for c in self.containers.values() if c.status == "running")
        return Response(
            body={
                "ID": self.name,
                "Name": self.name,
                "Containers": len(self.containers),
                "ContainersRunning": running,
                "ContainersPaused": 0,
                "ContainersStopped": len(self.containers) - running,
                "Images": len(self.images),
                "NCPU": 64,
                "MemTotal": 256 * 1024**3,
                "OperatingSystem": "Hollow Engine",
                "OSType": "linux",
                "Architecture": "x86_64",
                "ServerVersion": "27.0.0-hollow",
            }
        )

    # Containers.

    def _container(self, ref: str) -> Container:
        found = self.containers.get(ref)
        if found is None:
            name = ref.lstrip("/")
            matches = [
                c for c in self.containers.values() if c.name == name or c.id.startswith(ref)
            ]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise LookupError(f"No such container: {ref}")
        return found

    def _image(self, reference: str) -> Image:
        image = self.images.get(_image_key(reference))
        if image is None:
            matches = [
                i
                for i in self.images.values()
                if i.id.removeprefix("sha256:").startswith(reference.removeprefix("sha256:"))
            ]
            image = matches[0] if matches and len(reference) >= 12 else None
        if image is None:
            raise LookupError(f"No such image: {reference}")
        return image

    async def _list_containers(self, request: Request) -> Response:
        filters = request.filters()
        wanted = [label.partition("=") for label in filters.get("label", [])]
        everyone = request.flag("all")
        found = []
        for container in self.containers.values():
            labels = container.labels
            if not everyone and container.status != "running":
                continue
            if all(
                key in labels and (not has or labels[key] == value) for key, has, value in wanted
            ):
                found.append(container.summary())
        return Response(body=found)

    async def _create(self, request: Request) -> Response:
        config: dict[str, Any] = request.json()
        name = request.query.get("name") or secrets.token_hex(6)
        if any(c.name == name for c in self.containers.values()):
            return error(409, f'Conflict. The container name "/{name}" is already in use.')
        image = self._image(str(config.get("Image", "")))
        container = Container(
            id=secrets.token_hex(32),
            name=name,
            config=config,
            image_id=image.id,
            created=int(time.time()),
        )
        for network in (config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}:
            container.networks[network] = {"NetworkID": network, "Aliases": []}
        self.containers[container.id] = container
        self.publish("create", container)
        return Response(201, {"Id": container.id, "Warnings": []})

    async def _inspect(self, request: Request, ref: str) -> Response:
        return Response(body=self._container(ref).details())

    async def _start(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        if container.status == "running":
            return Response(304)
        container.status, container.exit_code = "running", 0
        container.started_at = _now_text()
        self.publish("start", container)
        return Response(204)

    def _exit(self, container: Container, code: int, action: str) -> None:
        container.status, container.exit_code = "exited", code
        container.finished_at = _now_text()
        self.publish(action, container, signal="15" if action == "stop" else "9")
        self.publish("die", container, exitCode=str(code))

    async def _stop(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        if container.status != "running":
            return Response(304)
        self._exit(container, 0, "stop")
        return Response(204)

    async def _restart(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        if container.status == "running":
            self._exit(container, 0, "stop")
        container.status, container.started_at = "running", _now_text()
        self.publish("start", container)
        self.publish("restart", container)
        return Response(204)

    async def _kill(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        if container.status != "running":
            return error(409, f"Container {container.id} is not running")
        self._exit(container, 137, "kill")
        return Response(204)

    async def _remove(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        if container.status == "running":
            if not request.flag("force"):
                return error(409, "You cannot remove a running container. Stop it first")
            self._exit(container, 137, "kill")
        del self.containers[container.id]
        self.publish("destroy", container)
        return Response(204)

    async def _archive(self, request: Request, ref: str) -> Response:
        self._container(ref)
        return Response(200, b"")

    async def _logs(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        line = f"hollow container {container.name}\n".encode()
        frame = bytes([1, 0, 0, 0]) + len(line).to_bytes(4, "big") + line
        return Response(body=frame, content_type="application/vnd.docker.multiplexed-stream")

    async def _stats(self, request: Request, ref: str) -> Response:
        container = self._container(ref)
        running = container.status == "running"
        cpu = {
            "cpu_usage": {"total_usage": 2_000_000 if running else 0},
            "system_cpu_usage": 100_000_000 if running else 0,
            "online_cpus": 64,
        }
        precpu = {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 50_000_000}
        return Response(
            body={
                "read": _now_text() if running else _ZERO_TIME,
                "cpu_stats": cpu,
                "precpu_stats": precpu if running else {},
                "memory_stats": {"usage": 8 * 1024**2, "limit": 256 * 1024**3, "stats": {}}
                if running
                else {},
                "networks": {"eth0": {"rx_bytes": 0, "tx_bytes": 0}},
                "blkio_stats": {"io_service_bytes_recursive": []},
                "pids_stats": {"current": 1 if running else 0},
            }
        )

    # Images.

    def add_image(self, reference: str) -> Image:
        key = _image_key(reference)
        image = self.images.get(key)
        if image is None:
            digest = hashlib.sha256(key.encode()).hexdigest()
            image = Image(id=f"sha256:{digest}", tags=[key], created=int(time.time()))
            self.images[key] = image
        return image

    async def _list_images(self, request: Request) -> Response:
        return Response(body=[image.summary() for image in self.images.values()])

    async def _inspect_image(self, request: Request, ref: str) -> Response:
        return Response(body=self._image(ref).details())

    async def _image_history(self, request: Request, ref: str) -> Response:
        image = self._image(ref)
        return Response(
            body=[{"Id": image.id, "Created": image.created, "CreatedBy": "", "Size": 1_000_000}]
        )

    async def _pull(self, request: Request) -> Response:
        name = request.query.get("fromImage", "")
        tag = request.query.get("tag") or "latest"
        reference = name if "@" in name else f"{name}:{tag}"
        image = self.add_image(reference)

        async def progress() -> AsyncIterator[bytes]:
            for status in (f"Pulling from {name}", f"Digest: {image.id}", "Downloaded newer image"):
                yield json.dumps({"status": status}).encode() + b"\r\n"

        return Response(stream=progress())

    # Networks and volumes.

    async def _list_networks(self, request: Request) -> Response:
        names = request.filters().get("name")
        found = [n for n in self.networks.values() if not names or n["Name"] in names]
        return Response(body=found)

    async def _create_network(self, request: Request) -> Response:
        body = request.json()
        name = str(body.get("Name", ""))
        if name in self.networks:
            return error(409, f"network with name {name} already exists")
        network = {
            "Name": name,
            "Id": secrets.token_hex(32),
            "Driver": body.get("Driver") or "bridge",
            "Scope": "local",
            "Labels": body.get("Labels") or {},
        }
        self.networks[name] = network
        return Response(201, {"Id": network["Id"], "Warning": ""})

    def _network(self, ref: str) -> dict[str, Any]:
        for network in self.networks.values():
            if ref in (network["Name"], network["Id"]):
                return network
        raise LookupError(f"network {ref} not found")

    async def _connect_network(self, request: Request, ref: str) -> Response:
        network = self._network(ref)
        body = request.json()
        container = self._container(str(body.get("Container", "")))
        aliases = (body.get("EndpointConfig") or {}).get("Aliases") or []
        container.networks[network["Name"]] = {"NetworkID": network["Id"], "Aliases": aliases}
        return Response(200, b"")

    async def _remove_network(self, request: Request, ref: str) -> Response:
        del self.networks[self._network(ref)["Name"]]
        return Response(204)

    async def _list_volumes(self, request: Request) -> Response:
        return Response(body={"Volumes": list(self.volumes.values()), "Warnings": []})

    async def _create_volume(self, request: Request) -> Response:
        body = request.json()
        name = str(body.get("Name") or secrets.token_hex(32))
        volume = self.volumes.setdefault(
            name,
            {
                "Name": name,
                "Driver": "local",
                "Mountpoint": f"/var/lib/docker/volumes/{name}/_data",
                "Labels": body.get("Labels") or {},
                "Scope": "local",
                "CreatedAt": _now_text(),
            },
        )
        return Response(201, volume)

    async def _inspect_volume(self, request: Request, ref: str) -> Response:
        volume = self.volumes.get(ref)
        if volume is None:
            raise LookupError(f"get {ref}: no such volume")
        return Response(body=volume)

    async def _remove_volume(self, request: Request, ref: str) -> Response:
        if self.volumes.pop(ref, None) is None:
            raise LookupError(f"get {ref}: no such volume")
        return Response(204)

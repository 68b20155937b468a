"""Many hollow engines in one process, and a small control API to steer them from outside.

The control API (on its own port, so it answers while engines hang or die):

* `GET /fleet`: every engine's name, URL, mode, request and container counts;
* `POST /fleet/{index}/mode/{mode}`: set a mode (see bench.hollow.engine);
* `POST /fleet/{index}/die`: drop every connection and refuse new ones;
* `POST /fleet/latency/{ms}`: set every engine's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from bench.hollow.engine import HollowEngine
from bench.hollow.http import Request, Response, error, read_request, write_response

# Engines start with this image, so a container can be created without a pull first.
SEED_IMAGE = "berth-test/busybox:latest"


class HollowFleet:
    def __init__(
        self,
        count: int,
        *,
        base_port: int | None = None,
        socket_dir: Path | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        if (base_port is None) == (socket_dir is None):
            raise ValueError("a fleet listens on ports from base_port or on sockets in socket_dir")
        self.engines = [
            HollowEngine(
                f"hollow-{index:04d}",
                port=None if base_port is None else base_port + index,
                socket=None if socket_dir is None else socket_dir / f"hollow-{index:04d}.sock",
            )
            for index in range(count)
        ]
        for engine in self.engines:
            engine.latency = latency_ms / 1000
            engine.add_image(SEED_IMAGE)
        self._control: asyncio.Server | None = None

    async def start(self, *, control_port: int | None = None) -> None:
        for engine in self.engines:
            await engine.start()
        if control_port is not None:
            self._control = await asyncio.start_server(
                self._serve_control, "127.0.0.1", control_port, reuse_address=True
            )

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
        for engine in self.engines:
            await engine.close()

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (request := await read_request(reader)) is not None:
                await write_response(reader, writer, await self._control_answer(request))
        writer.close()

    async def _control_answer(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/fleet":
            return Response(
                body=[
                    {
                        "name": engine.name,
                        "url": engine.url,
                        "mode": engine.mode,
                        "requests": engine.requests,
                        "containers": len(engine.containers),
                        "running": sum(
                            1 for c in engine.containers.values() if c.status == "running"
                        ),
                    }
                    for engine in self.engines
                ]
            )
        if request.method != "POST":
            return error(404, "not found")
        if match := re.fullmatch(r"/fleet/latency/([0-9.]+)", request.path):
            for engine in self.engines:
                engine.latency = float(match.group(1)) / 1000
            return Response(204)
        match = re.fullmatch(r"/fleet/(\d+)/(die|mode/(\w+))", request.path)
        if match is None or int(match.group(1)) >= len(self.engines):
            return error(404, "not found")
        engine = self.engines[int(match.group(1))]
        try:
            await (engine.die() if match.group(2) == "die" else engine.set_mode(match.group(3)))
        except ValueError as exc:
            return error(400, str(exc))
        return Response(204)


@contextlib.contextmanager
def running(fleet: HollowFleet) -> Iterator[asyncio.AbstractEventLoop]:
    """Serve `fleet` from an event loop in a background thread (for tests that call it with a
    blocking client); yields the loop, for `asyncio.run_coroutine_threadsafe`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hollow-fleet", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fleet.start(), loop).result(30)
        yield loop
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(fleet.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()

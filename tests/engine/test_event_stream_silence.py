"""An event stream that goes silent ends after the client's timeout, so its reader re-opens it
(and re-lists) instead of following a half-open connection forever. A real engine cannot be
made half-open here without stopping it under the other tests, so a hollow engine
(bench/hollow) in its `hanging` mode plays the partitioned one."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from app.engine.docker_engine import DockerEngine
from bench.hollow.fleet import SEED_IMAGE, HollowFleet, running
from tests.support import wait_for


def test_a_half_open_event_stream_ends_after_the_timeout(tmp_path: Path) -> None:
    fleet = HollowFleet(1, socket_dir=tmp_path)
    with running(fleet) as loop:
        hollow = fleet.engines[0]
        engine = DockerEngine(hollow.url, timeout=1)
        try:
            stream = engine.events()
            heard: list[dict[str, Any]] = []
            ended: list[float] = []

            def follow() -> None:
                heard.extend(stream)
                ended.append(time.monotonic())

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            docker_id = engine.create_container_raw("web", {"Image": SEED_IMAGE})
            wait_for(lambda: heard, timeout=5, what="the create event")
            assert heard[0]["id"] == docker_id
            # The engine stops answering but keeps the connection open.
            asyncio.run_coroutine_threadsafe(hollow.set_mode("hanging"), loop).result(5)
            went_silent = time.monotonic()
            reader.join(10)
            assert ended, "the stream was still followed 10 s after the engine went silent"
            assert ended[0] - went_silent < 5
        finally:
            asyncio.run_coroutine_threadsafe(hollow.set_mode("ok"), loop).result(5)
            engine.close()

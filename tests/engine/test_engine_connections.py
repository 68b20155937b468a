"""A kept client holds one connection to an engine's unix socket, whatever it called (the
docker SDK pools unix-socket connections per request URL: one per container inspected); and
one per caller at once, beyond the SDK's ten, when many operations use one engine."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.engine.docker_engine import DockerEngine
from app.engine.errors import ObjectNotFound
from tests.testbed import Testbed


def open_sockets() -> int:
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            count += str(entry.readlink()).startswith("socket:")
    return count


def test_a_client_keeps_one_connection_to_a_unix_socket(bed: Testbed) -> None:
    assert bed.h1_url.startswith("unix://")
    before = open_sockets()
    engine = DockerEngine(bed.h1_url, timeout=10)
    try:
        engine.ping()
        engine.facts()
        for missing in ("berth-no-such-1", "berth-no-such-2", "berth-no-such-3"):
            with contextlib.suppress(ObjectNotFound):
                engine.inspect_container(missing)
        engine.list_containers(labels={"berth.test": "none"})
        assert open_sockets() - before == 1
    finally:
        engine.close()


@pytest.mark.parametrize("which", ["h1", "h2"])
def test_a_client_keeps_a_connection_for_each_of_many_callers_at_once(
    bed: Testbed, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    """16 operation slots on one engine (unix socket or tcp): every connection goes back to
    the pool, instead of being opened and dropped (with a warning) past the tenth."""
    url = {"h1": bed.h1_url, "h2": bed.h2_url}[which]
    engine = DockerEngine(url, insecure=url.startswith("tcp://"), timeout=10)
    callers = 16
    together = threading.Barrier(callers)
    until = int(time.time()) + 2

    def hold_a_connection(_: int) -> None:
        together.wait()
        # The engine keeps the stream open until `until`: all 16 requests are open at once.
        list(engine.api.events(until=until, decode=True))

    try:
        with (
            caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"),
            ThreadPoolExecutor(callers) as pool,
        ):
            list(pool.map(hold_a_connection, range(callers)))
    finally:
        engine.close()
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []

"""A kept client holds one connection to an engine's unix socket, whatever it called (the
docker SDK pools unix-socket connections per request URL: one per container inspected)."""

from __future__ import annotations

import contextlib
from pathlib import Path

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

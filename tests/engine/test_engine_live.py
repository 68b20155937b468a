"""LiveEngine against the testbed's real engine h1: logs (multiplexed and TTY, followed by many
readers at once, closed early), one stats sample, errors; and the frame parser on its own."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import struct
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from docker.models.containers import Container

from app.engine.errors import EngineRejected, EngineUnavailable, ObjectNotFound
from app.engine.factory import DockerEngines
from app.engine.live import (
    ContainerStats,
    LiveEngine,
    _container_stats,
    _unix_time,
    demultiplex,
)
from app.engine.pool import EnginePool
from app.engine.tls import TlsMaterial
from tests.testbed import Testbed

LABELS = {"berth.test": "live"}
TICKER = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"
TIMESTAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (.*)\n$")

RunContainer = Callable[..., str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def h1(bed: Testbed) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=bed.h1_url, timeout=30)
    yield client
    client.close()


@pytest.fixture
def run(h1: docker.DockerClient, bed: Testbed) -> Iterator[RunContainer]:
    """Start (or only create) a labelled container on h1; every one is removed afterwards."""
    created: list[Container] = []

    def start(
        script: str, *, tty: bool = False, wait: bool = False, create_only: bool = False
    ) -> str:
        options: dict[str, Any] = {"command": ["sh", "-c", script], "labels": LABELS, "tty": tty}
        if create_only:
            container = h1.containers.create(bed.image, **options)
            created.append(container)
            return str(container.id)
        container = h1.containers.run(bed.image, detach=True, **options)
        created.append(container)
        if wait:
            container.wait(timeout=10)
        return str(container.id)

    yield start
    for container in created:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@contextlib.asynccontextmanager
async def live(url: str, **options: Any) -> AsyncIterator[LiveEngine]:
    engine = LiveEngine(url, **options)
    try:
        yield engine
    finally:
        await engine.aclose()


async def collect(iterator: AsyncGenerator[bytes, None]) -> list[bytes]:
    async with contextlib.aclosing(iterator) as pieces:
        return [piece async for piece in pieces]


def open_sockets() -> int:
    """Sockets this process holds open, as the kernel counts them."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += str(fd.readlink()).startswith("socket:")
    return count


# Logs.


@pytest.fixture(scope="module")
def finished(bed: Testbed) -> Iterator[str]:
    """A container on h1 that wrote two lines to stdout and two to stderr, then exited."""
    client = docker.DockerClient(base_url=bed.h1_url, timeout=30)
    container = client.containers.run(
        bed.image,
        # Seconds apart: the engine copies stdout and stderr separately, so lines closer in time
        # could be logged in either order on a busy engine.
        ["sh", "-c", "echo out1; echo err1 >&2; sleep 1; echo out2; sleep 1; echo err2 >&2"],
        labels=LABELS,
        detach=True,
    )
    try:
        container.wait(timeout=10)
        yield str(container.id)
    finally:
        container.remove(force=True)
        client.close()


@pytest.mark.anyio
async def test_logs_of_stdout_and_stderr(bed: Testbed, finished: str) -> None:
    async with live(bed.h1_url) as engine:
        everything = await collect(
            engine.logs(finished, tail=None, since=None, follow=False, timestamps=False)
        )
    assert sorted(everything) == [b"err1\n", b"err2\n", b"out1\n", b"out2\n"]


@pytest.mark.anyio
async def test_logs_with_tail_and_timestamps(bed: Testbed, finished: str) -> None:
    async with live(bed.h1_url) as engine:
        last_two = await collect(
            engine.logs(finished, tail=2, since=None, follow=False, timestamps=True)
        )
    lines = []
    for piece in last_two:
        match = TIMESTAMPED.match(piece)
        assert match, piece
        lines.append(match.group(1))
    assert lines == [b"out2", b"err2"]


@pytest.mark.anyio
async def test_logs_of_stderr_only(bed: Testbed, finished: str) -> None:
    async with live(bed.h1_url) as engine:
        only_stderr = await collect(
            engine.logs(
                finished, tail=None, since=None, follow=False, timestamps=False, stdout=False
            )
        )
    assert only_stderr == [b"err1\n", b"err2\n"]


@pytest.mark.anyio
async def test_logs_since_a_future_moment_are_empty(bed: Testbed, finished: str) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with live(bed.h1_url) as engine:
        assert (
            await collect(
                engine.logs(finished, tail=None, since=future, follow=False, timestamps=False)
            )
            == []
        )


@pytest.mark.anyio
async def test_following_stops_and_closes_its_connection_when_the_reader_stops(
    bed: Testbed, run: RunContainer
) -> None:
    container_id = run(TICKER)
    # One connection at most: if stopping left the stream's connection in use, the next
    # request could not get one and would fail.
    async with live(bed.h1_url, max_connections=1, connect_timeout=1.0) as engine:
        with anyio.fail_after(30):
            async with contextlib.aclosing(
                engine.logs(container_id, tail=0, since=None, follow=True, timestamps=False)
            ) as stream:
                received = []
                async for piece in stream:
                    received.append(piece)
                    if len(received) == 3:
                        break
                streaming_sockets = open_sockets()
                # The one connection is the stream's; nothing else gets through meanwhile.
                with pytest.raises(EngineUnavailable):
                    await engine.stats(container_id)
                started = time.monotonic()
            closing = time.monotonic() - started
        assert len(received) == 3
        assert all(re.fullmatch(rb"line \d+\n", piece) for piece in received), received
        numbers = [int(piece.split()[1]) for piece in received]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
        # Well under the ticker's five lines a second would be if closing waited for the stream.
        assert closing < 1.0
        assert open_sockets() < streaming_sockets

        # The same client goes on working, on a fresh connection.
        with anyio.fail_after(30):
            tail = await collect(
                engine.logs(container_id, tail=1, since=None, follow=False, timestamps=False)
            )
        assert len(tail) == 1 and tail[0].startswith(b"line ")


@pytest.mark.anyio
async def test_following_ends_when_the_task_is_cancelled(bed: Testbed, run: RunContainer) -> None:
    container_id = run(TICKER)
    received: list[bytes] = []
    async with live(bed.h1_url, max_connections=1) as engine:
        first_line = anyio.Event()

        async def follow() -> None:
            async for piece in engine.logs(
                container_id, tail=0, since=None, follow=True, timestamps=False
            ):
                received.append(piece)
                first_line.set()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                await first_line.wait()
                group.cancel_scope.cancel()
        assert received
        # The cancelled stream gave its only connection back.
        with anyio.fail_after(30):
            await engine.stats(container_id)


@pytest.mark.anyio
async def test_twenty_followers_share_one_client_without_threads(
    bed: Testbed, run: RunContainer
) -> None:
    container_id = run(TICKER)
    readers = 20
    all_following = anyio.Event()
    first_lines = 0
    threads_before = threading.active_count()
    threads_seen: list[int] = []

    async def follower(engine: LiveEngine, results: list[list[bytes]]) -> None:
        nonlocal first_lines
        got: list[bytes] = []
        async with contextlib.aclosing(
            engine.logs(container_id, tail=0, since=None, follow=True, timestamps=False)
        ) as stream:
            async for piece in stream:
                got.append(piece)
                if len(got) == 1:
                    first_lines += 1
                    threads_seen.append(threading.active_count())
                    if first_lines == readers:
                        all_following.set()
                    # Every reader holds its stream open until all of them are reading.
                    await all_following.wait()
                if len(got) == 2:
                    break
        results.append(got)

    results: list[list[bytes]] = []
    async with live(bed.h1_url) as engine:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for _ in range(readers):
                    group.start_soon(follower, engine, results)

    assert len(results) == readers
    assert all(len(got) == 2 and got[0].startswith(b"line ") for got in results)
    assert max(threads_seen) <= threads_before + 1, (threads_before, threads_seen)


@pytest.mark.anyio
async def test_logs_of_a_tty_container_are_a_raw_stream(bed: Testbed, run: RunContainer) -> None:
    container_id = run("printf 'hello\\nworld\\n'", tty=True, wait=True)
    async with live(bed.h1_url) as engine:
        output = b"".join(
            await collect(
                engine.logs(container_id, tail=None, since=None, follow=False, timestamps=False)
            )
        )
    # A terminal turns \n into \r\n; no frame headers are in the way.
    assert output == b"hello\r\nworld\r\n"


# Stats.


@pytest.mark.anyio
async def test_stats_of_a_running_container(bed: Testbed, run: RunContainer) -> None:
    container_id = run("sleep 30")
    async with live(bed.h1_url) as engine:
        with anyio.fail_after(30):
            stats = await engine.stats(container_id)
    assert isinstance(stats, ContainerStats)
    assert stats.memory_used_bytes > 0
    assert stats.memory_limit_bytes > 0
    assert 0 < stats.memory_percent < 100
    assert stats.cpu_percent >= 0
    assert stats.pids >= 1
    assert stats.network_rx_bytes >= 0 and stats.network_tx_bytes >= 0
    assert abs(stats.read_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


@pytest.mark.anyio
async def test_stats_of_a_stopped_container_is_rejected(bed: Testbed, run: RunContainer) -> None:
    container_id = run("true", create_only=True)
    async with live(bed.h1_url) as engine:
        with pytest.raises(EngineRejected, match="not running"):
            await engine.stats(container_id)


# Errors.


@pytest.mark.anyio
async def test_missing_container_and_unreachable_engine(bed: Testbed) -> None:
    async with live(bed.h1_url) as engine:
        with pytest.raises(ObjectNotFound, match="No such container"):
            await collect(
                engine.logs("berth-no-such", tail=None, since=None, follow=True, timestamps=False)
            )
        with pytest.raises(ObjectNotFound):
            await engine.stats("berth-no-such")

    async with live("tcp://127.0.0.1:1", insecure=True, connect_timeout=1.0) as engine:
        with anyio.fail_after(3):
            with pytest.raises(EngineUnavailable):
                await collect(
                    engine.logs("anything", tail=None, since=None, follow=True, timestamps=False)
                )
            with pytest.raises(EngineUnavailable):
                await engine.stats("anything")

    with pytest.raises(EngineRejected, match="unsupported"):
        LiveEngine("ssh://somewhere")


def self_signed() -> TlsMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return TlsMaterial(ca_cert=cert_pem, client_cert=cert_pem, client_key=key_pem)


@pytest.mark.anyio
async def test_tls_material_is_loaded_and_a_dead_tls_engine_is_unavailable() -> None:
    material = self_signed()
    async with live("tcp://127.0.0.1:1", tls=material, connect_timeout=1.0) as engine:
        with pytest.raises(EngineUnavailable):
            await engine.stats("anything")
    broken = TlsMaterial(ca_cert=None, client_cert=material.client_cert, client_key="garbage")
    with pytest.raises(EngineRejected, match="TLS"):
        LiveEngine("tcp://127.0.0.1:1", tls=broken)


# The frame parser and stats arithmetic, without an engine.


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_demultiplex_takes_whole_frames_and_keeps_partial_ones() -> None:
    data = (
        frame(1, b"out line\n") + frame(2, b"err line\n") + frame(1, b"") + frame(1, b"x" * 70000)
    )
    expected = [(1, b"out line\n"), (2, b"err line\n"), (1, b""), (1, b"x" * 70000)]
    for size in (1, 3, 7, 8, 9, 13, 4096, len(data)):
        buffer = bytearray()
        frames: list[tuple[int, bytes]] = []
        for start in range(0, len(data), size):
            buffer += data[start : start + size]
            frames += demultiplex(buffer)
        assert frames == expected, size
        assert buffer == bytearray()


def test_demultiplex_leaves_a_partial_header_and_payload() -> None:
    buffer = bytearray(frame(1, b"done") + frame(2, b"half of it")[:12])
    assert demultiplex(buffer) == [(1, b"done")]
    assert bytes(buffer) == frame(2, b"half of it")[:12]
    buffer += frame(2, b"half of it")[12:]
    assert demultiplex(buffer) == [(2, b"half of it")]
    assert demultiplex(buffer) == []


def test_demultiplex_refuses_what_is_not_a_frame_header() -> None:
    with pytest.raises(ValueError, match="not a multiplexed"):
        demultiplex(bytearray(b"hello world\n"))


def cgroup_v2_stats() -> dict[str, Any]:
    """A stats body as a cgroup v2 engine sends it."""
    body: dict[str, Any] = {
        "read": "2026-01-02T03:04:05.123456789Z",
        "pids_stats": {"current": 3},
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000},
            "system_cpu_usage": 20_000_000,
            "online_cpus": 4,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 10_000_000},
        "memory_stats": {"usage": 10_000, "limit": 100_000, "stats": {"inactive_file": 2_000}},
        "networks": {
            "eth0": {"rx_bytes": 5, "tx_bytes": 7},
            "eth1": {"rx_bytes": 1, "tx_bytes": 2},
        },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 100},
                {"major": 8, "minor": 0, "op": "write", "value": 40},
                {"major": 8, "minor": 16, "op": "Read", "value": 1},
            ]
        },
    }
    return body


def test_stats_arithmetic_on_cgroup_v2_figures() -> None:
    stats = _container_stats(cgroup_v2_stats(), "stats")
    assert stats == ContainerStats(
        cpu_percent=80.0,
        memory_used_bytes=8_000,
        memory_limit_bytes=100_000,
        memory_percent=8.0,
        network_rx_bytes=6,
        network_tx_bytes=9,
        block_read_bytes=101,
        block_write_bytes=40,
        pids=3,
        read_at=dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    )


def test_stats_arithmetic_on_cgroup_v1_figures() -> None:
    # cgroup v1 keeps reclaimable cache in total_inactive_file; no networks, null lists.
    body = cgroup_v2_stats()
    body["memory_stats"]["stats"] = {"total_inactive_file": 4_000, "inactive_file": 1}
    body["networks"] = None
    body["blkio_stats"] = {"io_service_bytes_recursive": None}
    stats = _container_stats(body, "stats")
    assert stats.memory_used_bytes == 6_000
    assert (stats.network_rx_bytes, stats.block_read_bytes) == (0, 0)


def test_since_is_sent_as_seconds_and_nanoseconds() -> None:
    moment = dt.datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=dt.UTC)
    assert _unix_time(moment) == "1767225601.500000000"
    assert _unix_time(moment.replace(tzinfo=None)) == "1767225601.500000000"


def test_threads_that_first_use_a_host_together_share_one_client(bed: Testbed) -> None:
    """None of them may get a client that another then closes (with TLS, closing one deletes
    the certificate files its connections still need)."""
    pool = EnginePool(DockerEngines())
    start = threading.Barrier(8)
    clients: list[object] = []

    def first_use() -> None:
        start.wait()
        engine = pool.get("h1", bed.h1_url)
        engine.ping()
        clients.append(engine)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(clients) == 8
        assert len({id(client) for client in clients}) == 1
    finally:
        pool.close()

"""Container start latency through Berth against the engine itself, and the container list
read path under concurrent load, against one real `berth serve` process.

The server runs as a subprocess (`python -m app.cli serve`) on a fresh SQLite file in a
temporary directory, with `DOCKER_HOST` naming the engine, so that engine is registered as
host `local`. Then:

* start latency: alternating rounds of (a) Berth, `POST /api/v1/containers` and
  `GET /api/v1/operations/{id}?wait=30` until it has succeeded, (b) the engine through the
  docker SDK's low-level `APIClient` (create_container + start, one client kept open), and
  (c) `docker run -d` through the CLI, all with the same spec (image, `sleep 300`, a label).
  Every container is removed after its sample, outside the timed region;
* read path: 10,000 container rows inserted straight into the database, then
  `GET /api/v1/containers` (limit 50 and 500) with N concurrent keep-alive clients for D
  seconds, beside `GET /healthz` with the same load generator as the framework's ceiling.

    .venv/bin/python -m bench.container_start [--samples 25] [--rows 10000]
        [--connections 16] [--duration 10] [--load wrk|httpx] [--profile FILE]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
from docker.errors import APIError, DockerException, NotFound
from sqlalchemy import func, insert, select

from app.containers.models import Container
from app.core.db import Database, new_id, utcnow
from app.hosts.models import Host
from bench.common import API, DEFAULT_DOCKER_HOST, BerthServer, ok, parse_time, percentile, say

IMAGE = "berth-test/busybox:latest"
COMMAND = ["sleep", "300"]
# Every container this benchmark makes carries this label, so the clean-up finds them all.
LABEL_KEY = "berth-bench"
LABEL_VALUE = "container-start"
ROWS_LABEL_VALUE = "read-path"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

GOAL_OVERHEAD_RATIO = 0.05
GOAL_OVERHEAD_MS = 30.0
GOAL_READ_RPS = 1500.0
GOAL_READ_P99_MS = 50.0

DEFAULT_SAMPLES = 25
WARMUP_ROUNDS = 2
# Pause after each sample's clean-up, so the server's reaction to it (the watcher re-reading
# the container after its events) is over before the next timed sample.
SETTLE_SECONDS = 0.25
DEFAULT_ROWS = 10_000
INSERT_BATCH = 2_000
DEFAULT_CONNECTIONS = 16
DEFAULT_DURATION = 10.0
WARMUP_SECONDS = 2.0
OPERATION_TIMEOUT = 60.0
MAX_BERTH_ATTEMPTS = 3


def since_ms(start: datetime | float, end: datetime | float) -> float:
    """end - start in ms; floats are `time.time()` values, datetimes are UTC."""
    a = start.timestamp() if isinstance(start, datetime) else start
    b = end.timestamp() if isinstance(end, datetime) else end
    return (b - a) * 1000


# The server


@contextmanager
def running_server(workdir: Path, docker_host: str) -> Iterator[BerthServer]:
    server = BerthServer(workdir, docker_host)
    try:
        server.start()
        yield server
    except BaseException:
        server.stop()
        say(f"  berth serve log (last 3000 characters):\n{server.log_tail()}")
        raise
    else:
        server.stop()


# Docker


def bench_filter() -> dict[str, Any]:
    return {"label": f"{LABEL_KEY}={LABEL_VALUE}"}


def remove_bench_containers(api: docker.APIClient) -> int:
    """Force-removes every container carrying the benchmark's label; returns how many."""
    removed = 0
    for summary in api.containers(all=True, filters=bench_filter()):
        with suppress(NotFound):
            api.remove_container(summary["Id"], force=True)
            removed += 1
    return removed


def force_remove(api: docker.APIClient, docker_id: str) -> None:
    with suppress(NotFound):
        api.remove_container(docker_id, force=True)


# Part 1: start latency


@dataclass(frozen=True)
class BerthSample:
    total_ms: float
    post_ms: float
    # From the operation's timestamps (server clock) and the client's wall clock.
    before_enqueue_ms: float
    enqueue_to_start_ms: float
    handler_ms: float
    finish_to_client_ms: float
    # Inside the handler, from the operation's log lines; None when a line is missing.
    create_ms: float | None
    start_ms: float | None
    record_ms: float | None


@dataclass(frozen=True)
class DockerSample:
    total_ms: float
    create_ms: float
    start_ms: float


@dataclass
class StartResults:
    berth: list[BerthSample] = field(default_factory=list)
    sdk: list[DockerSample] = field(default_factory=list)
    cli: list[float] = field(default_factory=list)
    # Berth samples whose operation failed or left no running container (each retried).
    berth_failures: list[str] = field(default_factory=list)


def berth_spec(sample: int) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "command": COMMAND,
        "labels": {LABEL_KEY: LABEL_VALUE},
        "name": f"berth-bench-b{sample}",
    }


def wait_operation(client: httpx.Client, operation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + OPERATION_TIMEOUT
    while True:
        response = client.get(f"{API}/operations/{operation_id}", params={"wait": 30})
        response.raise_for_status()
        operation: dict[str, Any] = response.json()
        if operation["status"] in TERMINAL:
            return operation
        if time.monotonic() > deadline:
            raise TimeoutError(f"operation {operation_id} still {operation['status']}")


def log_times(client: httpx.Client, operation_id: str) -> dict[str, datetime]:
    """When the handler logged 'created container' and 'started' (the first of each)."""
    response = client.get(f"{API}/operations/{operation_id}/logs")
    response.raise_for_status()
    found: dict[str, datetime] = {}
    for line in response.json()["items"]:
        message = str(line["message"])
        for key, prefix in (("created", "created container"), ("started", "started")):
            if message.startswith(prefix) and key not in found:
                found[key] = parse_time(line["at"])
    return found


def berth_sample(client: httpx.Client, api: docker.APIClient, index: int) -> BerthSample:
    body = berth_spec(index)
    wall_start = time.time()
    start = time.perf_counter()
    response = client.post(f"{API}/containers", json=body)
    posted = time.perf_counter()
    if response.status_code != 202:
        raise RuntimeError(f"POST /containers: {response.status_code} {response.text[:500]}")
    accepted = response.json()
    operation = wait_operation(client, accepted["operation"]["id"])
    end = time.perf_counter()
    wall_end = time.time()
    # Outside the timed region: check what was made, read the log lines, remove it.
    container_id = str(accepted["container"]["id"])
    try:
        if operation["status"] != "succeeded":
            raise RuntimeError(
                f"container.create ended {operation['status']}: {operation.get('error')}"
            )
        state = (operation.get("result") or {}).get("state")
        read = client.get(f"{API}/containers/{container_id}").json()
        if state != "running" or read["state"] != "running":
            raise RuntimeError(
                f"container not running: operation result says {state!r}, "
                f"GET /containers says {read['state']!r}"
            )
        created_at = parse_time(operation["created_at"])
        started_at = parse_time(operation["started_at"])
        finished_at = parse_time(operation["finished_at"])
        logs = log_times(client, operation["id"])
    finally:
        remove_via_berth(client, api, container_id)
    created_log, started_log = logs.get("created"), logs.get("started")
    return BerthSample(
        total_ms=(end - start) * 1000,
        post_ms=(posted - start) * 1000,
        before_enqueue_ms=since_ms(wall_start, created_at),
        enqueue_to_start_ms=since_ms(created_at, started_at),
        handler_ms=since_ms(started_at, finished_at),
        finish_to_client_ms=since_ms(finished_at, wall_end),
        create_ms=since_ms(started_at, created_log) if created_log else None,
        start_ms=since_ms(created_log, started_log) if created_log and started_log else None,
        record_ms=since_ms(started_log, finished_at) if started_log else None,
    )


def remove_via_berth(client: httpx.Client, api: docker.APIClient, container_id: str) -> None:
    """DELETE through Berth (keeps its database true); the engine directly if that fails."""
    try:
        response = client.delete(f"{API}/containers/{container_id}")
        response.raise_for_status()
        operation = wait_operation(client, response.json()["operation"]["id"])
        if operation["status"] == "succeeded":
            return
        say(f"  container.delete ended {operation['status']}: {operation.get('error')}")
    except (httpx.HTTPError, TimeoutError) as exc:
        say(f"  DELETE /containers/{container_id} failed ({exc}); removing it on the engine")
    for summary in api.containers(all=True, filters={"label": f"berth.container={container_id}"}):
        force_remove(api, summary["Id"])


def sdk_sample(api: docker.APIClient, index: int) -> DockerSample:
    start = time.perf_counter()
    created = api.create_container(
        IMAGE, command=COMMAND, labels={LABEL_KEY: LABEL_VALUE}, name=f"berth-bench-s{index}"
    )
    docker_id = str(created["Id"])
    made = time.perf_counter()
    try:
        api.start(docker_id)
        end = time.perf_counter()
        if not api.inspect_container(docker_id)["State"]["Running"]:
            raise RuntimeError(f"docker SDK: container {docker_id[:12]} is not running")
    finally:
        force_remove(api, docker_id)
    return DockerSample(
        total_ms=(end - start) * 1000, create_ms=(made - start) * 1000, start_ms=(end - made) * 1000
    )


def cli_sample(docker_cli: str, docker_host: str, api: docker.APIClient, index: int) -> float:
    command = [
        docker_cli,
        "-H",
        docker_host,
        "run",
        "-d",
        "--name",
        f"berth-bench-c{index}",
        "--label",
        f"{LABEL_KEY}={LABEL_VALUE}",
        IMAGE,
        *COMMAND,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    end = time.perf_counter()
    docker_id = done.stdout.strip()
    try:
        if done.returncode != 0:
            raise RuntimeError(f"docker run -d: exit {done.returncode}: {done.stderr.strip()}")
        if not api.inspect_container(docker_id)["State"]["Running"]:
            raise RuntimeError(f"docker run -d: container {docker_id[:12]} is not running")
    finally:
        if docker_id:
            force_remove(api, docker_id)
    return (end - start) * 1000


def berth_sample_retried(
    client: httpx.Client, api: docker.APIClient, index: int, results: StartResults
) -> BerthSample:
    """A Berth sample; one that fails is reported, counted and tried again (up to 3 times)."""
    for attempt in range(1, MAX_BERTH_ATTEMPTS + 1):
        try:
            return berth_sample(client, api, index * 10 + attempt)
        except RuntimeError as exc:
            results.berth_failures.append(str(exc))
            say(f"  Berth sample failed (attempt {attempt}): {exc}")
            if attempt == MAX_BERTH_ATTEMPTS:
                raise
            time.sleep(SETTLE_SECONDS)
    raise AssertionError("unreachable")


def measure_start_latency(
    client: httpx.Client,
    api: docker.APIClient,
    *,
    samples: int,
    docker_host: str,
    docker_cli: str | None,
) -> StartResults:
    results = StartResults()
    kinds: list[str] = ["berth", "sdk"] + (["cli"] if docker_cli else [])
    for round_index in range(WARMUP_ROUNDS + samples):
        warmup = round_index < WARMUP_ROUNDS
        # Rotate the order each round, so no kind always runs right after another.
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            if kind == "berth":
                sample = berth_sample_retried(client, api, round_index, results)
                if not warmup:
                    results.berth.append(sample)
            elif kind == "sdk":
                docker_sample = sdk_sample(api, round_index)
                if not warmup:
                    results.sdk.append(docker_sample)
            else:
                assert docker_cli is not None
                cli_ms = cli_sample(docker_cli, docker_host, api, round_index)
                if not warmup:
                    results.cli.append(cli_ms)
            time.sleep(SETTLE_SECONDS)
        if not warmup and (round_index - WARMUP_ROUNDS + 1) % 5 == 0:
            done = round_index - WARMUP_ROUNDS + 1
            say(
                f"  {done}/{samples} rounds: Berth median so far "
                f"{percentile([s.total_ms for s in results.berth], 50):.1f} ms, docker SDK "
                f"{percentile([s.total_ms for s in results.sdk], 50):.1f} ms"
            )
    return results


def print_start_latency(results: StartResults) -> None:
    berth = [s.total_ms for s in results.berth]
    sdk = [s.total_ms for s in results.sdk]
    say("")
    say(f"Start latency: create + start of one container ({IMAGE}, {' '.join(COMMAND)}), ms")
    header = f"{'path':<52} {'n':>3} {'p50':>7} {'p90':>7} {'min':>7} {'max':>7}"
    say(header)
    say("-" * len(header))
    rows: list[tuple[str, Sequence[float]]] = [
        ("Berth: POST /containers -> operation succeeded", berth),
        ("docker SDK APIClient: create_container + start", sdk),
    ]
    if results.cli:
        rows.append(("docker CLI: docker run -d (incl. CLI start-up)", results.cli))
    for label, values in rows:
        say(
            f"{label:<52} {len(values):>3} {percentile(values, 50):>7.1f} "
            f"{percentile(values, 90):>7.1f} {min(values):>7.1f} {max(values):>7.1f}"
        )
    if results.berth_failures:
        say(
            f"Berth samples that failed and were retried: {len(results.berth_failures)} "
            f"(first: {results.berth_failures[0][:200]})"
        )
    p50_over = percentile(berth, 50) - percentile(sdk, 50)
    p90_over = percentile(berth, 90) - percentile(sdk, 90)
    ratio = percentile(berth, 50) / percentile(sdk, 50)
    paired = [b - d for b, d in zip(berth, sdk, strict=False)]
    met = ratio - 1 <= GOAL_OVERHEAD_RATIO or p50_over <= GOAL_OVERHEAD_MS
    say("")
    say("Berth against the docker SDK baseline (the engine itself):")
    say(
        f"  p50: {ratio:.2f}x, {p50_over:+.1f} ms   "
        f"(goal: adds <= {GOAL_OVERHEAD_RATIO:.0%} or <= {GOAL_OVERHEAD_MS:.0f} ms: {ok(met)})"
    )
    say(f"  p90: {percentile(berth, 90) / percentile(sdk, 90):.2f}x, {p90_over:+.1f} ms")
    say(
        f"  paired per round (Berth - SDK): p50 {percentile(paired, 50):+.1f} ms, "
        f"p90 {percentile(paired, 90):+.1f} ms"
    )
    say("")
    say("Where Berth's time goes (p50 of each segment, ms; from the operation's timestamps):")

    def seg(values: Sequence[float | None]) -> str:
        present = [v for v in values if v is not None]
        if not present:
            return "    n/a"
        return f"{percentile(present, 50):>7.1f}"

    segments: list[tuple[str, Callable[[BerthSample], float | None]]] = [
        ("POST, client-side round trip (202 received)", lambda s: s.post_ms),
        ("  request sent -> operation created_at", lambda s: s.before_enqueue_ms),
        ("  created_at -> started_at (commit, reply, claim)", lambda s: s.enqueue_to_start_ms),
        ("  started_at -> finished_at (the handler)", lambda s: s.handler_ms),
        ("    started -> 'created container' log line", lambda s: s.create_ms),
        ("    'created container' -> 'started' log line", lambda s: s.start_ms),
        ("    'started' -> finished_at (inspect, record, finish)", lambda s: s.record_ms),
        ("  finished_at -> long-poll answer received", lambda s: s.finish_to_client_ms),
    ]
    for label, pick in segments:
        say(f"  {label:<58} {seg([pick(s) for s in results.berth])}")
    sdk_create = percentile([s.create_ms for s in results.sdk], 50)
    sdk_start = percentile([s.start_ms for s in results.sdk], 50)
    say(f"  {'docker SDK for comparison: create_container':<58} {sdk_create:>7.1f}")
    say(f"  {'docker SDK for comparison: start':<58} {sdk_start:>7.1f}")
    handler_extra = percentile([s.handler_ms for s in results.berth], 50) - (sdk_create + sdk_start)
    say(f"  {'handler minus the SDK create + start':<58} {handler_extra:>7.1f}")
    say(
        "(segments are separate medians and need not add up exactly; server and client share "
        "this machine's clock)"
    )


# Part 2: read path


def insert_rows(database_url: str, host_id: str, count: int) -> int:
    """`count` managed container rows for `host_id`, state running and no Docker container
    behind them (docker_id None, so the watcher leaves them alone). Returns the table's size."""
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            if session.get(Host, host_id) is None:
                raise RuntimeError(f"host {host_id} is not in {database_url}")
        run = new_id()[-6:]
        left, number = count, 0
        while left > 0:
            size = min(INSERT_BATCH, left)
            now = utcnow()
            rows = [
                {
                    "id": new_id(),
                    "name": f"bench-{run}-{number + i:05d}",
                    "host_id": host_id,
                    "service_id": None,
                    "spec": {"image": IMAGE, "labels": {LABEL_KEY: ROWS_LABEL_VALUE}},
                    "image": IMAGE,
                    "managed": True,
                    "desired_state": "running",
                    "state": "running",
                    "labels": {LABEL_KEY: ROWS_LABEL_VALUE},
                    "created_at": now,
                    "observed_at": now,
                    "version": 1,
                }
                for i in range(size)
            ]
            with database.session() as session:
                session.execute(insert(Container), rows)
            left -= size
            number += size
        with database.session(write=False) as session:
            total: int = session.execute(select(func.count()).select_from(Container)).scalar_one()
        return total
    finally:
        database.dispose()


@dataclass(frozen=True)
class LoadResult:
    label: str
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    bytes_per_response: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan


WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "errors": %d, "status_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


class LoadGenerator:
    """Closed-loop load: `connections` keep-alive clients, each sending its next request as
    soon as the previous answer arrived. wrk if available, else httpx.AsyncClient."""

    def __init__(
        self, kind: str, workdir: Path, base_url: str, headers: dict[str, str], connections: int
    ) -> None:
        self.kind = kind
        self.base_url = base_url
        self.headers = headers
        self.connections = connections
        self.script = workdir / "report.lua"
        self.script.write_text(WRK_SCRIPT)

    def describe(self) -> str:
        if self.kind == "wrk":
            return f"wrk, 1 thread, {self.connections} connections (keep-alive)"
        return f"httpx.AsyncClient, {self.connections} concurrent clients (keep-alive), 1 process"

    def run(self, path: str, seconds: float, label: str, size: int) -> LoadResult:
        if self.kind == "wrk":
            return self._wrk(path, seconds, label, size)
        return asyncio.run(self._httpx(path, seconds, label, size))

    def _wrk(self, path: str, seconds: float, label: str, size: int) -> LoadResult:
        command = [
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
        ]
        for name, value in self.headers.items():
            command += ["-H", f"{name}: {value}"]
        command.append(self.base_url + path)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        match = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        figures = json.loads(match.group(1))
        return LoadResult(
            label=label,
            requests=int(figures["requests"]),
            seconds=figures["duration_us"] / 1e6,
            p50_ms=figures["p50_us"] / 1000,
            p90_ms=figures["p90_us"] / 1000,
            p99_ms=figures["p99_us"] / 1000,
            max_ms=figures["max_us"] / 1000,
            errors=int(figures["errors"]) + int(figures["status_errors"]),
            bytes_per_response=size,
        )

    async def _httpx(self, path: str, seconds: float, label: str, size: int) -> LoadResult:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=self.connections)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, limits=limits, timeout=10
        ) as client:
            start = time.perf_counter()
            deadline = start + seconds

            async def one_client() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    began = time.perf_counter()
                    try:
                        response = await client.get(path)
                        if response.status_code != 200:
                            errors += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append((time.perf_counter() - began) * 1000)

            await asyncio.gather(*(one_client() for _ in range(self.connections)))
            elapsed = time.perf_counter() - start
        return LoadResult(
            label=label,
            requests=len(latencies),
            seconds=elapsed,
            p50_ms=percentile(latencies, 50),
            p90_ms=percentile(latencies, 90),
            p99_ms=percentile(latencies, 99),
            max_ms=max(latencies, default=math.nan),
            errors=errors,
            bytes_per_response=size,
        )


def check_page(client: httpx.Client, path: str, items: int | None) -> int:
    """One request by hand: 200, the expected number of items; returns the body's size."""
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
    if items is not None and len(response.json()["items"]) != items:
        raise RuntimeError(f"GET {path}: {len(response.json()['items'])} items, not {items}")
    return len(response.content)


@contextmanager
def profiling(
    target: Path | None, pid: int, seconds: float, *, subprocesses: bool = False
) -> Iterator[None]:
    """py-spy record of the server while the block runs (format from the file's suffix), and
    of its child processes with `subprocesses` (`berth serve --workers N`'s API processes)."""
    if target is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    formats = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--gil",
        "--format",
        formats.get(target.suffix, "flamegraph"),
        "--output",
        str(target),
        *(["--subprocesses"] if subprocesses else []),
    ]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    except BaseException:
        recorder.kill()
        recorder.wait()
        raise
    try:
        _, stderr = recorder.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()
        say("  py-spy did not finish; no profile")
        return
    if recorder.returncode != 0:
        say(f"  py-spy failed ({recorder.returncode}): {stderr.decode().strip()[-500:]}")
    else:
        say(f"  py-spy profile of the server (GIL-holding thread only) written to {target}")


def measure_read_path(
    client: httpx.Client,
    load: LoadGenerator,
    *,
    seconds: float,
    pid: int,
    profile: Path | None,
) -> list[LoadResult]:
    scenarios = [
        ("GET /healthz (framework ceiling)", "/healthz", None),
        ("GET /api/v1/containers (limit=50)", f"{API}/containers", 50),
        ("GET /api/v1/containers?limit=500", f"{API}/containers?limit=500", 500),
    ]
    results: list[LoadResult] = []
    load.run(f"{API}/containers", WARMUP_SECONDS, "warm-up", 0)
    for label, path, items in scenarios:
        size = check_page(client, path, items)
        result = load.run(path, seconds, label, size)
        results.append(result)
        say(
            f"  {label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms"
        )
    if profile is not None:
        label, path, _ = scenarios[1]
        with profiling(profile, pid, seconds):
            result = load.run(path, seconds, label + " [under py-spy]", 0)
        say(
            f"  {result.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms (slowed by the profiler; not in the table)"
        )
    return results


def print_read_path(results: list[LoadResult], load: LoadGenerator, rows: int) -> None:
    say("")
    say(
        f"Read path: {rows:,} rows in containers, {load.describe()}, "
        f"{results[0].seconds:.0f} s each"
    )
    header = (
        f"{'request':<36} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6} {'bytes':>7}  goal"
    )
    say(header)
    say("-" * len(header))
    for result in results:
        goal = ""
        if "containers" in result.label:
            goal = (
                f">= {GOAL_READ_RPS:,.0f} req/s {ok(result.rps >= GOAL_READ_RPS)}, "
                f"p99 <= {GOAL_READ_P99_MS:.0f} ms {ok(result.p99_ms <= GOAL_READ_P99_MS)}"
            )
        say(
            f"{result.label:<36} {result.rps:>7,.0f} {result.p50_ms:>7.1f} {result.p90_ms:>7.1f} "
            f"{result.p99_ms:>7.1f} {result.max_ms:>7.1f} {result.errors:>6} "
            f"{result.bytes_per_response:>7,}  {goal}"
        )
    ceiling = results[0].rps
    for result in results[1:]:
        say(f"  {result.label}: {result.rps / ceiling:.0%} of the /healthz rate")
    say("errors: connection errors, timeouts and non-200 answers; bytes: one response's body")


# Main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.container_start", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("BERTH_BENCH_DOCKER_HOST", DEFAULT_DOCKER_HOST),
        help="engine to use, registered in Berth as `local` (env BERTH_BENCH_DOCKER_HOST; "
        f"default {DEFAULT_DOCKER_HOST})",
    )
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="timed rounds per path (25)"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the `docker run -d` row")
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help="rows inserted for the read path (10000)"
    )
    parser.add_argument(
        "--connections", type=int, default=DEFAULT_CONNECTIONS, help="concurrent clients (16)"
    )
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION, help="seconds per read run (10)"
    )
    parser.add_argument(
        "--load",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator (wrk when it is on PATH, else httpx)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also py-spy the server during one more limit=50 run, into this file "
        "(.svg flamegraph, .txt collapsed stacks, .json speedscope)",
    )
    parser.add_argument("--skip-start", action="store_true", help="only the read path")
    parser.add_argument("--skip-read", action="store_true", help="only the start latency")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.rows < 0 or args.connections < 1:
        parser.error("--samples and --connections must be positive, --rows not negative")

    # SIGTERM unwinds like Ctrl-C, so the server is stopped and the containers are removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    began = time.perf_counter()
    api = docker.APIClient(base_url=args.docker_host, timeout=60)
    docker_cli = None if args.no_cli else shutil.which("docker")
    try:
        stale = remove_bench_containers(api)
        if stale:
            say(f"removed {stale} container(s) left by an earlier run")
        if not api.images(name=IMAGE, quiet=True):
            raise RuntimeError(
                f"image {IMAGE} is not on {args.docker_host} (scripts/testbed.sh up)"
            )
        engine_version = api.version().get("Version", "?")
        with (
            tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp,
            running_server(Path(tmp), args.docker_host) as server,
            httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client,
        ):
            host_id = server.wait_ready(client)
            say(
                f"berth serve pid {server.pid} on {server.base_url}, SQLite in {tmp}; "
                f"host local ({args.docker_host}, engine {engine_version}) ready "
                f"after {time.perf_counter() - began:.1f}s"
            )
            if not args.skip_start:
                say(
                    f"[start latency] {WARMUP_ROUNDS} warm-up + {args.samples} rounds of "
                    f"Berth / docker SDK{' / docker CLI' if docker_cli else ''}, order rotated"
                )
                results = measure_start_latency(
                    client,
                    api,
                    samples=args.samples,
                    docker_host=args.docker_host,
                    docker_cli=docker_cli,
                )
                print_start_latency(results)
                say("")
            if not args.skip_read:
                say(f"[read path] inserting {args.rows:,} container rows")
                inserted = time.perf_counter()
                rows_total = insert_rows(server.database_url, host_id, args.rows)
                say(
                    f"  {rows_total:,} rows in containers after "
                    f"{time.perf_counter() - inserted:.1f}s; load: {args.load}"
                )
                load = LoadGenerator(
                    args.load, Path(tmp), server.base_url, server.headers, args.connections
                )
                reads = measure_read_path(
                    client, load, seconds=args.duration, pid=server.pid, profile=args.profile
                )
                server.check_alive()
                print_read_path(reads, load, rows_total)
    finally:
        try:
            left = remove_bench_containers(api)
            if left:
                say(f"clean-up: removed {left} container(s) labelled {LABEL_KEY}={LABEL_VALUE}")
        except (DockerException, APIError) as exc:
            say(f"clean-up failed: {exc}")
        api.close()
    say(f"\n(total run time {time.perf_counter() - began:.0f}s on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

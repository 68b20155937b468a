"""Converging a many-replica service through Berth, against Compose and a raw engine loop.

One run measures, on the testbed's engine h1, how long it takes until N replicas of
`berth-test/busybox:latest` (`sleep 3600`, no ports) are running:

* Compose: Debian's docker-compose v1, `docker-compose -p <project> up -d --scale app=N` with an
  equivalent compose file, timed until the command returns (then checked: N running);
* raw loop: the docker SDK's low-level `APIClient` (create_container + start per replica) from
  1, 4, 8 and 16 threads, to find the engine's best raw parallelism;
* Berth: a real `berth serve` subprocess (fresh SQLite in a temporary directory, the engine
  registered as host `local`) per BERTH_WORKERS value, timed from `POST /api/v1/services` until
  `GET /api/v1/services/{id}` says status `running` with N replicas running (read whenever the
  event stream reports a change of a service, and at least once a second);
* with `--baseline ROOT`, the same Berth runs again from another checkout (the code before a
  change, say): before and after in one run, on the same engine and load.

Runs alternate between Berth and the others, the second round in the reverse order of the
first, and every run starts from an engine without any of the benchmark's containers (removed
between runs, outside the timed region).

    .venv/bin/python -m bench.service_converge [--replicas 50] [--workers 4,8,16] [--rounds 2]
        [--baseline ROOT]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
from docker.errors import APIError, DockerException, NotFound

from bench.common import (
    API,
    DEFAULT_DOCKER_HOST,
    ROOT,
    BerthServer,
    busy_share,
    machine_cpu,
    ok,
    parse_time,
    percentile,
    process_cpu_seconds,
    say,
)

IMAGE = "berth-test/busybox:latest"
COMMAND = ["sleep", "3600"]
# Every container this benchmark makes carries this label (Berth's replicas get it from the
# service spec, Compose's from the compose file), so one filter finds them all.
LABEL_KEY = "berth-bench"
LABEL_VALUE = "service-converge"
SERVICE_NAME = "bench-converge"
# Berth runs: this checkout's, and --baseline's (another checkout, e.g. the code before a change).
VARIANT_LABELS = {"berth": "Berth", "baseline": "Berth baseline"}

# Issue 15: faster than Compose, and at most 5 % slower than the engine's best raw loop.
GOAL_VS_COMPOSE = 1.0
GOAL_VS_RAW = 1.05
RAW_PARALLELISM = (1, 4, 8, 16)
DEFAULT_ROUNDS = 2
BUSY_LOAD = 1.5

# The converging service is read on every change the event stream reports, and at least this
# often (a poll every 50 ms, as before, cost the server CPU that two cores take from the engine).
POLL_SECONDS = 1.0
_STREAM_READ_SECONDS = 1.0
SETTLE_SECONDS = 1.0
WARMUP_REPLICAS = 8
CONVERGE_TIMEOUT = 150.0
REMOVE_TIMEOUT = 120.0
COMPOSE_TIMEOUT = 180.0
CLEANUP_THREADS = 8


def seconds_since(start: datetime | float, end: datetime | float) -> float:
    """end - start in seconds; floats are `time.time()` values, datetimes are UTC."""
    a = start.timestamp() if isinstance(start, datetime) else start
    b = end.timestamp() if isinstance(end, datetime) else end
    return b - a


# The engine


def bench_filter(**extra: str) -> dict[str, Any]:
    return {"label": [f"{LABEL_KEY}={LABEL_VALUE}", *(f"{k}={v}" for k, v in extra.items())]}


def count_running(api: docker.APIClient, **labels: str) -> int:
    return len(api.containers(filters={**bench_filter(**labels), "status": "running"}))


def remove_bench_containers(api: docker.APIClient) -> int:
    """Force-removes every container carrying the benchmark's label (8 at once)."""
    ids = [str(summary["Id"]) for summary in api.containers(all=True, filters=bench_filter())]

    def remove(docker_id: str) -> None:
        try:
            api.remove_container(docker_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            # 409: the engine is already removing it (the server, stopping, or Berth's DELETE).
            if exc.status_code != 409:
                raise

    with ThreadPoolExecutor(CLEANUP_THREADS) as pool:
        list(pool.map(remove, ids))
    return len(ids)


def settle(api: docker.APIClient) -> None:
    """Between runs: no container of ours left, and a moment for the engine to calm down."""
    started = time.perf_counter()
    left = remove_bench_containers(api)
    if left:
        say(f"    removed {left} container(s) in {time.perf_counter() - started:.1f}s (untimed)")
    time.sleep(SETTLE_SECONDS)


# Results


@dataclass(frozen=True)
class Run:
    key: str  # "compose", "raw:4", "berth:8", "baseline:8": what is compared across rounds
    label: str
    round: int
    seconds: float
    running: int
    cpu_busy: float  # share of all the machine's CPUs busy during the timed region
    # CPU seconds of the orchestrating process in the timed region: docker-compose, this
    # process's threads for the raw loop, the `berth serve` process for Berth.
    own_cpu: float


@dataclass(frozen=True)
class OperationTimes:
    created: datetime
    started: datetime
    finished: datetime
    attempts: int
    status: str
    # From the operation's log lines; None when a line is missing.
    created_log: datetime | None
    started_log: datetime | None


@dataclass
class BerthRun:
    variant: str  # "berth", or "baseline" for the --baseline checkout
    workers: int
    round: int
    post_seconds: float
    posted_wall: float
    run: Run | None = None
    observed_wall: float = math.nan
    status_changed: datetime | None = None
    server_cpu_seconds: float = math.nan
    operations: list[OperationTimes] = field(default_factory=list)
    failed_or_retried: int = 0
    polls: int = 0


# (a) Compose


COMPOSE_FILE = """\
version: "2.4"
services:
  app:
    image: {image}
    command: [{command}]
    # The default bridge, like the raw loop and Berth's replicas (no project network to make).
    network_mode: bridge
    labels:
      {label_key}: {label_value}
"""


def compose_version(compose: str) -> str:
    done = subprocess.run(
        [compose, "version", "--short"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


def compose_env(docker_host: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("COMPOSE_")}
    env["DOCKER_HOST"] = docker_host
    return env


def compose_down(compose: str, compose_file: Path, project: str, docker_host: str) -> None:
    done = subprocess.run(
        [compose, "-p", project, "-f", str(compose_file), "down", "-t", "0"],
        capture_output=True,
        text=True,
        check=False,
        env=compose_env(docker_host),
        timeout=COMPOSE_TIMEOUT,
    )
    if done.returncode != 0:
        say(f"    docker-compose down: exit {done.returncode}: {done.stderr.strip()[-500:]}")


def run_compose(
    api: docker.APIClient,
    compose: str,
    workdir: Path,
    docker_host: str,
    replicas: int,
    round_number: int,
) -> Run:
    compose_file = workdir / "compose.yaml"
    compose_file.write_text(
        COMPOSE_FILE.format(
            image=IMAGE,
            command=", ".join(f'"{part}"' for part in COMMAND),
            label_key=LABEL_KEY,
            label_value=LABEL_VALUE,
        )
    )
    project = f"berthbench{secrets.token_hex(3)}"
    project_args = [compose, "-p", project, "-f", str(compose_file)]
    try:
        cpu = machine_cpu()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [*project_args, "up", "-d", "--scale", f"app={replicas}"],
            capture_output=True,
            text=True,
            check=False,
            env=compose_env(docker_host),
            timeout=COMPOSE_TIMEOUT,
        )
        seconds = time.perf_counter() - start
        cpu_busy = busy_share(cpu, machine_cpu())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(
                f"docker-compose up: exit {done.returncode}: {done.stderr.strip()[-1500:]}"
            )
        running = count_running(api, **{"com.docker.compose.project": project})
    finally:
        compose_down(compose, compose_file, project, docker_host)
    return Run(
        "compose", "Compose: up -d --scale", round_number, seconds, running, cpu_busy, own_cpu
    )


# (b) The raw loop


def run_raw(
    api: docker.APIClient, docker_host: str, replicas: int, parallelism: int, round_number: int
) -> Run:
    """create_container + start for every replica from `parallelism` threads, each with its own
    APIClient (made before the clock starts)."""
    version = str(api.version()["ApiVersion"])
    clients = [
        docker.APIClient(base_url=docker_host, version=version, timeout=60)
        for _ in range(parallelism)
    ]
    local = threading.local()
    handed_out = iter(clients)
    lock = threading.Lock()
    run_tag = secrets.token_hex(3)

    def client() -> docker.APIClient:
        mine: docker.APIClient | None = getattr(local, "client", None)
        if mine is None:
            with lock:
                mine = next(handed_out)
            local.client = mine
        return mine

    def one(index: int) -> None:
        engine = client()
        created = engine.create_container(
            IMAGE,
            command=COMMAND,
            labels={LABEL_KEY: LABEL_VALUE},
            name=f"berth-bench-raw{parallelism}-{run_tag}-{index}",
        )
        engine.start(created["Id"])

    try:
        cpu = machine_cpu()
        own = time.process_time()
        start = time.perf_counter()
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(one, range(replicas)))
        seconds = time.perf_counter() - start
        own_cpu = time.process_time() - own
        cpu_busy = busy_share(cpu, machine_cpu())
    finally:
        for made in clients:
            made.close()
    running = count_running(api)
    return Run(
        f"raw:{parallelism}",
        f"raw loop, {parallelism:>2} thread(s)",
        round_number,
        seconds,
        running,
        cpu_busy,
        own_cpu,
    )


# (c) Berth


@contextmanager
def running_server(
    workdir: Path, docker_host: str, workers: int, root: Path
) -> Iterator[BerthServer]:
    server = BerthServer(workdir, docker_host, root=root, BERTH_WORKERS=str(workers))
    try:
        server.start()
        yield server
    except BaseException:
        server.stop()
        say(f"    berth serve log (last 3000 characters):\n{server.log_tail()}")
        raise
    else:
        server.stop()


def service_body(replicas: int) -> dict[str, Any]:
    return {
        "name": SERVICE_NAME,
        "spec": {
            "image": IMAGE,
            "command": COMMAND,
            "replicas": replicas,
            "labels": {LABEL_KEY: LABEL_VALUE},
        },
    }


class ServiceChanges:
    """Follows the server's event stream (`GET /events?resource_type=service`) in a thread and
    sets `changed` on every event, so that the client reads the service when it changed instead
    of every few milliseconds. Opened before the POST: the stream starts with the next event.

    A read waits at most `_STREAM_READ_SECONDS`, then the stream is re-opened from the last
    event seen (`since`): so `close()` ends it at once, and the server, stopped next, has no
    open stream to wait for."""

    def __init__(self, server: BerthServer) -> None:
        self.changed = threading.Event()
        self._opened = threading.Event()
        self._closed = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def open(self) -> None:
        self._thread.start()
        if not self._opened.wait(30):
            raise RuntimeError("the event stream did not open within 30 s")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2 * _STREAM_READ_SECONDS + 5)

    def _follow(self) -> None:
        cursor: str | None = None
        timeout = httpx.Timeout(10, read=_STREAM_READ_SECONDS)
        headers = self._server.headers
        with httpx.Client(base_url=self._server.base_url, headers=headers, timeout=timeout) as c:
            while not self._closed.is_set():
                params = {"resource_type": "service"}
                if cursor is not None:
                    params["since"] = cursor
                try:
                    with c.stream("GET", f"{API}/events", params=params) as response:
                        response.raise_for_status()
                        self._opened.set()
                        for line in response.iter_lines():
                            if line.startswith("id:"):
                                cursor = line[3:].strip()
                            elif line.startswith("data:"):
                                self.changed.set()
                            if self._closed.is_set():
                                return
                except httpx.ReadTimeout:
                    continue
                except httpx.HTTPError:
                    return  # the server went away: the reads once a second carry on


def wait_converged(
    client: httpx.Client,
    server: BerthServer,
    changes: ServiceChanges,
    service_id: str,
    replicas: int,
    run: BerthRun,
) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
        changes.changed.clear()  # before the read: a change after it wakes the wait below
        response = client.get(f"{API}/services/{service_id}")
        response.raise_for_status()
        read: dict[str, Any] = response.json()
        run.polls += 1
        if read["status"] == "running" and read["replicas"]["running"] == replicas:
            return read
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"service not converged after {CONVERGE_TIMEOUT:.0f}s: status {read['status']} "
                f"({read['status_detail']}), replicas {read['replicas']}"
            )
        server.check_alive()
        changes.changed.wait(POLL_SECONDS)


def log_times(client: httpx.Client, operation_id: str) -> dict[str, datetime]:
    """When the handler logged that it created the container ("created container ...", if it
    says so on its own line) and that it started it ("started", or a line ending in
    "(started)"): the first of each."""
    response = client.get(f"{API}/operations/{operation_id}/logs")
    response.raise_for_status()
    found: dict[str, datetime] = {}
    for line in response.json()["items"]:
        message = str(line["message"])
        at = parse_time(line["at"])
        if message.startswith("created container"):
            found.setdefault("created", at)
        if message == "started" or message.endswith("(started)"):
            found.setdefault("started", at)
    return found


def create_operations(client: httpx.Client) -> list[OperationTimes]:
    response = client.get(f"{API}/operations", params={"kind": "container.create", "limit": 500})
    response.raise_for_status()
    times: list[OperationTimes] = []
    for item in response.json()["items"]:
        if item["started_at"] is None or item["finished_at"] is None:
            continue
        logs = log_times(client, item["id"])
        times.append(
            OperationTimes(
                created=parse_time(item["created_at"]),
                started=parse_time(item["started_at"]),
                finished=parse_time(item["finished_at"]),
                attempts=int(item["attempts"]),
                status=str(item["status"]),
                created_log=logs.get("created"),
                started_log=logs.get("started"),
            )
        )
    return times


def delete_service(client: httpx.Client, api: docker.APIClient, service_id: str) -> None:
    """DELETE through Berth and wait until the service and its containers are gone (on a
    timeout, the clean-up between runs removes what is left on the engine directly)."""
    started = time.perf_counter()
    response = client.delete(f"{API}/services/{service_id}")
    response.raise_for_status()
    deadline = time.monotonic() + REMOVE_TIMEOUT
    while time.monotonic() < deadline:
        gone = client.get(f"{API}/services/{service_id}").status_code == 404
        left = api.containers(all=True, filters={"label": f"berth.service={service_id}"})
        if gone and not left:
            say(
                f"    removed through Berth (DELETE /services) in "
                f"{time.perf_counter() - started:.1f}s (untimed)"
            )
            return
        time.sleep(0.2)
    say(f"    service not removed after {REMOVE_TIMEOUT:.0f}s; its containers go on the engine")


def run_berth(
    api: docker.APIClient,
    docker_host: str,
    replicas: int,
    workers: int,
    workdir: Path,
    round_number: int,
    *,
    variant: str = "berth",
    root: Path = ROOT,
) -> BerthRun:
    with (
        running_server(workdir, docker_host, workers, root) as server,
        httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client,
    ):
        began = time.perf_counter()
        server.wait_ready(client)
        say(
            f"    berth serve (BERTH_WORKERS={workers}) ready in {time.perf_counter() - began:.1f}s"
        )
        time.sleep(SETTLE_SECONDS)  # let the start-up's own work (image sync, ...) pass
        changes = ServiceChanges(server)
        changes.open()
        server_cpu = process_cpu_seconds(server.pid)
        cpu = machine_cpu()
        posted_wall = time.time()
        start = time.perf_counter()
        response = client.post(f"{API}/services", json=service_body(replicas))
        post_seconds = time.perf_counter() - start
        if response.status_code != 202:
            raise RuntimeError(f"POST /services: {response.status_code} {response.text[:500]}")
        service_id = str(response.json()["service"]["id"])
        run = BerthRun(
            variant=variant,
            workers=workers,
            round=round_number,
            post_seconds=post_seconds,
            posted_wall=posted_wall,
        )
        try:
            try:
                read = wait_converged(client, server, changes, service_id, replicas, run)
                seconds = time.perf_counter() - start
                run.observed_wall = time.time()
                cpu_busy = busy_share(cpu, machine_cpu())
                run.server_cpu_seconds = process_cpu_seconds(server.pid) - server_cpu
            finally:
                changes.close()
            # Outside the timed region: check the engine agrees, and read the operations.
            running = count_running(api, **{"berth.service": service_id})
            run.run = Run(
                f"{variant}:{workers}",
                f"{VARIANT_LABELS[variant]}, BERTH_WORKERS={workers}",
                round_number,
                seconds,
                running,
                cpu_busy,
                run.server_cpu_seconds,
            )
            run.status_changed = parse_time(read["updated_at"])
            run.operations = create_operations(client)
            run.failed_or_retried = sum(
                1 for op in run.operations if op.status != "succeeded" or op.attempts > 1
            )
            if len(run.operations) > replicas:
                say(
                    f"    WARNING: {len(run.operations)} creates for {replicas} replicas: some "
                    "were replaced (removed meanwhile by something else on the engine?)"
                )
        finally:
            delete_service(client, api, service_id)
    return run


# The schedule


def schedule(others: list[str], berth: list[str], rounds: int) -> list[list[str]]:
    """Round 1 alternates the others with Berth (a1 b1 a2 b2 ..., the rest of the longer list
    at the end); every second round runs the same in reverse, so that on average each approach
    sits at the same place in the sequence."""
    first: list[str] = []
    for index in range(max(len(others), len(berth))):
        first.extend(others[index : index + 1])
        first.extend(berth[index : index + 1])
    return [first if number % 2 == 0 else first[::-1] for number in range(rounds)]


# Report


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def by_key(runs: list[Run]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.key, []).append(run)
    return grouped


def print_runs(runs: list[Run], replicas: int) -> None:
    say("")
    say(f"Converging {replicas} replicas of {IMAGE} ({' '.join(COMMAND)}) on one engine")
    header = (
        f"{'#':>2} {'round':>5}  {'approach':<32} {'seconds':>8} {'per replica':>11} "
        f"{'running':>7} {'cpu busy':>8} {'own cpu s':>9}"
    )
    say(header)
    say("-" * len(header))
    for number, run in enumerate(runs, 1):
        say(
            f"{number:>2} {run.round:>5}  {run.label:<32} {run.seconds:>8.2f} "
            f"{run.seconds / replicas * 1000:>8.0f} ms {run.running:>7} {run.cpu_busy:>8.0%} "
            f"{run.own_cpu:>9.2f}"
        )
    say(
        "(# is the order of the runs; cpu busy: share of all the machine's CPUs busy during the "
        "timed region; own cpu s: CPU seconds of docker-compose, of this process's raw-loop "
        "threads, or of `berth serve`, in the timed region)"
    )


def print_summary(runs: list[Run]) -> None:
    grouped = by_key(runs)
    means = {key: mean([r.seconds for r in group]) for key, group in grouped.items()}

    def values(key: str) -> str:
        return " / ".join(f"{r.seconds:.2f}" for r in grouped[key])

    say("")
    say("Mean over the rounds (each round's figure in brackets), seconds:")
    compose = means.get("compose")
    if compose is not None:
        say(f"  {'Compose':<26} {compose:6.2f}  ({values('compose')})")
    raw_keys = sorted((k for k in means if k.startswith("raw:")), key=lambda k: int(k[4:]))
    for key in raw_keys:
        say(f"  {f'raw loop, {key[4:]} thread(s)':<26} {means[key]:6.2f}  ({values(key)})")
    best_key = min(raw_keys, key=lambda k: means[k]) if raw_keys else None
    best = means[best_key] if best_key else None
    if best_key is not None:
        say(f"  best raw parallelism: {best_key[4:]} thread(s), {best:.2f} s")
    berth_keys = sorted(
        (k for k in means if k.partition(":")[0] in VARIANT_LABELS),
        key=lambda k: (k.partition(":")[0] != "berth", int(k.partition(":")[2])),
    )
    for key in berth_keys:
        seconds = means[key]
        variant, _, workers = key.partition(":")
        label = f"{VARIANT_LABELS[variant]}, BERTH_WORKERS={workers}"
        parts = [f"  {label:<36} {seconds:6.2f}  ({values(key)})"]
        if compose is not None:
            ratio = seconds / compose
            parts.append(
                f"Berth/Compose {ratio:.2f} (goal < {GOAL_VS_COMPOSE:.2f}: "
                f"{ok(ratio < GOAL_VS_COMPOSE)})"
            )
        if best is not None:
            ratio = seconds / best
            parts.append(
                f"Berth/best raw {ratio:.2f} (goal <= {GOAL_VS_RAW:.2f}: "
                f"{ok(ratio <= GOAL_VS_RAW)})"
            )
        say("   ".join(parts))
    for variant, label in VARIANT_LABELS.items():
        keys = [k for k in berth_keys if k.partition(":")[0] == variant]
        if keys:
            fastest = min(keys, key=lambda k: means[k])
            say(
                f"  fastest {label}: BERTH_WORKERS={fastest.partition(':')[2]} "
                f"({means[fastest]:.2f} s)"
            )
    if compose is not None and best is not None:
        say(
            f"  (the Compose goal means < {GOAL_VS_COMPOSE * compose:.2f} s, the raw goal "
            f"<= {GOAL_VS_RAW * best:.2f} s)"
        )


def breakdown_rows(item: BerthRun) -> dict[str, float]:
    """Seconds from the POST to each milestone, and per-operation medians."""
    ops = item.operations
    t0 = item.posted_wall
    rows: dict[str, float] = {"POST /services (202 received)": item.post_seconds}
    if ops:
        handlers = [seconds_since(op.started, op.finished) for op in ops]
        first_started = min(op.started for op in ops)
        last_finished = max(op.finished for op in ops)
        span = seconds_since(first_started, last_finished)
        rows.update(
            {
                "first create enqueued (created_at)": seconds_since(
                    t0, min(op.created for op in ops)
                ),
                "last create enqueued": seconds_since(t0, max(op.created for op in ops)),
                "first create started (started_at)": seconds_since(t0, first_started),
                "last create started": seconds_since(t0, max(op.started for op in ops)),
                "last create finished (finished_at)": seconds_since(t0, last_finished),
            }
        )
    if item.status_changed is not None:
        rows["service status -> running (updated_at)"] = seconds_since(t0, item.status_changed)
    rows["seen by the client (the figure above)"] = seconds_since(t0, item.observed_wall)
    if ops:
        rows["per op: queue wait p50 (created->started)"] = percentile(
            [seconds_since(op.created, op.started) for op in ops], 50
        )
        rows["per op: queue wait max"] = max(seconds_since(op.created, op.started) for op in ops)
        rows["per op: handler p50 (started->finished)"] = percentile(handlers, 50)
        rows["per op: handler p90"] = percentile(handlers, 90)
        created = [seconds_since(op.started, op.created_log) for op in ops if op.created_log]
        to_started = [seconds_since(op.started, op.started_log) for op in ops if op.started_log]
        after = [seconds_since(op.started_log, op.finished) for op in ops if op.started_log]
        if created:
            rows["  p50 started_at -> 'created container' log"] = percentile(created, 50)
        if to_started:
            rows["  p50 started_at -> 'started' log line"] = percentile(to_started, 50)
            rows["  p50 'started' log -> finished_at"] = percentile(after, 50)
        rows["handlers busy on average (sum / span)"] = sum(handlers) / span if span else math.nan
        rows["creates per second (ops / span)"] = len(ops) / span if span else math.nan
    return rows


def print_breakdown(berth: list[BerthRun], raw: list[Run], replicas: int) -> None:
    if not berth:
        return
    say("")
    say(
        "Where Berth's time goes: seconds from the POST to each milestone, from the "
        "container.create operations' timestamps and log lines (one column per Berth run)"
    )
    columns = [breakdown_rows(item) for item in berth]
    names = [
        f"{'base ' if item.variant == 'baseline' else ''}w={item.workers} r{item.round}"
        for item in berth
    ]
    header = f"  {'':<46}" + "".join(f"{name:>13}" for name in names)
    say(header)
    labels = list(dict.fromkeys(label for column in columns for label in column))
    for label in labels:
        cells = "".join(
            f"{column[label]:>13.2f}" if label in column else f"{'-':>13}" for column in columns
        )
        say(f"  {label:<46}{cells}")
    counts = "".join(
        f"{f'{len(item.operations)}/{item.failed_or_retried}/{item.polls}':>13}" for item in berth
    )
    say(f"  {'create ops / failed or retried / client polls':<46}{counts}")
    if raw:
        grouped = by_key(raw)
        rates = ", ".join(
            f"{key[4:]} thread(s) {replicas / mean([r.seconds for r in group]):.1f}/s"
            for key, group in sorted(grouped.items(), key=lambda item: int(item[0][4:]))
        )
        say(f"  for comparison, raw loop containers per second (mean time): {rates}")


def parse_list(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.service_converge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--replicas", type=int, default=50, help="replicas to converge (50)")
    parser.add_argument(
        "--workers", type=parse_list, default=[4, 8, 16], help="BERTH_WORKERS values (4,8,16)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="ROOT",
        help="also run Berth from this checkout (e.g. `git worktree add /tmp/base <commit>`), "
        "for a before/after in the same run",
    )
    parser.add_argument(
        "--raw-parallelism",
        type=parse_list,
        default=list(RAW_PARALLELISM),
        help="threads for the raw loop (1,4,8,16)",
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds of every run (2)"
    )
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("BERTH_BENCH_DOCKER_HOST", DEFAULT_DOCKER_HOST),
        help=f"the engine (env BERTH_BENCH_DOCKER_HOST; default {DEFAULT_DOCKER_HOST})",
    )
    parser.add_argument("--no-compose", action="store_true", help="skip the Compose runs")
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.rounds < 1:
        parser.error("--replicas and --rounds must be positive")

    # SIGTERM unwinds like Ctrl-C, so servers are stopped and containers removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    began = time.perf_counter()
    compose = None if args.no_compose else shutil.which("docker-compose")
    if not args.no_compose and compose is None:
        say("docker-compose not found (apt-get install -y docker-compose); no Compose runs")
    load = os.getloadavg()
    say(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
        + (f"; `docker-compose version`: {compose_version(compose)}" if compose else "")
    )
    if load[0] > BUSY_LOAD:
        say(
            f"WARNING: the machine is not quiet (1-minute load {load[0]:.2f} > {BUSY_LOAD}): "
            "the figures will be slower and noisier than on an idle machine"
        )
    api = docker.APIClient(base_url=args.docker_host, timeout=120)
    runs: list[Run] = []
    berth: list[BerthRun] = []
    try:
        stale = remove_bench_containers(api)
        if stale:
            say(f"removed {stale} container(s) left by an earlier run")
        if not api.images(name=IMAGE, quiet=True):
            raise RuntimeError(
                f"image {IMAGE} is not on {args.docker_host} (scripts/testbed.sh up)"
            )
        version = api.version()
        say(
            f"engine {args.docker_host}: Docker {version.get('Version', '?')} "
            f"(API {version.get('ApiVersion', '?')})"
        )
        say(f"warm-up: {WARMUP_REPLICAS} containers from 4 threads (untimed)")
        run_raw(api, args.docker_host, WARMUP_REPLICAS, 4, 0)
        settle(api)

        others = (["compose"] if compose else []) + [f"raw:{p}" for p in args.raw_parallelism]
        variants = ["berth", "baseline"] if args.baseline else ["berth"]
        berth_steps = [f"{variant}:{w}" for w in args.workers for variant in variants]
        rounds = schedule(others, berth_steps, args.rounds)
        total = sum(len(steps) for steps in rounds)
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
            workdir = Path(tmp)
            for round_number, steps in enumerate(rounds, 1):
                for step in steps:
                    kind, _, value = step.partition(":")
                    say(f"[{len(runs) + 1}/{total}] round {round_number}: {step}")
                    if kind == "compose":
                        assert compose is not None
                        result = run_compose(
                            api, compose, workdir, args.docker_host, args.replicas, round_number
                        )
                    elif kind == "raw":
                        result = run_raw(
                            api, args.docker_host, args.replicas, int(value), round_number
                        )
                    else:
                        serverdir = workdir / f"{kind}-{value}-{round_number}"
                        serverdir.mkdir()
                        item = run_berth(
                            api,
                            args.docker_host,
                            args.replicas,
                            int(value),
                            serverdir,
                            round_number,
                            variant=kind,
                            root=args.baseline if kind == "baseline" else ROOT,
                        )
                        berth.append(item)
                        assert item.run is not None
                        result = item.run
                    runs.append(result)
                    say(f"    {result.seconds:.2f}s, {result.running} running")
                    if result.running != args.replicas:
                        say(f"    WARNING: {result.running} running, not {args.replicas}")
                    settle(api)
    finally:
        try:
            left = remove_bench_containers(api)
            if left:
                say(f"clean-up: removed {left} container(s) labelled {LABEL_KEY}={LABEL_VALUE}")
        except (DockerException, APIError) as exc:
            say(f"clean-up failed: {exc}")
        api.close()
    print_runs(runs, args.replicas)
    print_summary(runs)
    print_breakdown(berth, [r for r in runs if r.key.startswith("raw:")], args.replicas)
    say(f"\n(total run time {time.perf_counter() - began:.0f}s on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Converging a many-replica service through Berth, against Compose and a raw engine loop.

One run measures, on the testbed's engine h1, how long it takes until N replicas of
`berth-test/busybox:latest` (`sleep 3600`, no ports) are running:

* Compose: Debian's docker-compose v1, `docker-compose -p <project> up -d --scale app=N` with an
  equivalent compose file, timed until the command returns (then checked: N running);
* raw loop: the docker SDK's low-level `APIClient` (create_container + start per replica) from
  1, 4, 8 and 16 threads, to find the engine's best raw parallelism;
* Berth: a real `berth serve` subprocess (fresh SQLite in a temporary directory, the engine
  registered as host `local`) per BERTH_WORKERS value, timed from `POST /api/v1/services` until
  `GET /api/v1/services/{id}` says status `running` with N replicas running (polled every 50 ms).

Runs alternate between Berth and the others, and every run starts from an engine without any
of the benchmark's containers (removed between runs, outside the timed region).

    .venv/bin/python -m bench.service_converge [--replicas 50] [--workers 4,8,12]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import docker
import httpx
from docker.errors import APIError, DockerException, NotFound

ROOT = Path(__file__).resolve().parents[1]
# The testbed's first engine (scripts/testbed.sh).
DEFAULT_DOCKER_HOST = "unix:///tmp/berth-tb/h1/docker.sock"
IMAGE = "berth-test/busybox:latest"
COMMAND = ["sleep", "3600"]
# Every container this benchmark makes carries this label (Berth's replicas get it from the
# service spec, Compose's from the compose file), so one filter finds them all.
LABEL_KEY = "berth-bench"
LABEL_VALUE = "service-converge"
SERVICE_NAME = "bench-converge"
API = "/api/v1"

GOAL_VS_COMPOSE = 0.7
GOAL_VS_RAW = 1.1
RAW_PARALLELISM = (1, 4, 8, 16)
BUSY_LOAD = 1.5

POLL_SECONDS = 0.05
SETTLE_SECONDS = 1.0
WARMUP_REPLICAS = 8
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 150.0
REMOVE_TIMEOUT = 120.0
COMPOSE_TIMEOUT = 180.0
CLEANUP_THREADS = 8


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def say(message: str) -> None:
    print(message, flush=True)


def ok(flag: bool) -> str:
    return "ok" if flag else "MISS"


def load1() -> float:
    return os.getloadavg()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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
        with suppress(NotFound):
            api.remove_container(docker_id, force=True)

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
    label: str
    seconds: float
    running: int
    load: float
    note: str = ""


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
    workers: int
    run: Run
    post_seconds: float
    posted_wall: float
    observed_wall: float
    status_changed: datetime | None
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
    api: docker.APIClient, compose: str, workdir: Path, docker_host: str, replicas: int
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
    load = load1()
    try:
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
        if done.returncode != 0:
            raise RuntimeError(
                f"docker-compose up: exit {done.returncode}: {done.stderr.strip()[-1500:]}"
            )
        running = count_running(api, **{"com.docker.compose.project": project})
    finally:
        compose_down(compose, compose_file, project, docker_host)
    return Run("Compose: docker-compose up -d --scale", seconds, running, load)


# (b) The raw loop


def run_raw(api: docker.APIClient, docker_host: str, replicas: int, parallelism: int) -> Run:
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

    load = load1()
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(one, range(replicas)))
        seconds = time.perf_counter() - start
    finally:
        for made in clients:
            made.close()
    running = count_running(api)
    return Run(f"raw loop: SDK create+start, {parallelism:>2} thread(s)", seconds, running, load)


# (c) Berth


class BerthServer:
    """One `berth serve` subprocess on a fresh SQLite database, logging to serve.log."""

    def __init__(self, workdir: Path, docker_host: str, workers: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = "berth_bench_" + secrets.token_hex(24)
        self.log_path = workdir / "serve.log"
        env = {name: value for name, value in os.environ.items() if not name.startswith("BERTH_")}
        env.update(
            BERTH_DATABASE_URL=f"sqlite:///{workdir / 'berth.db'}",
            BERTH_BOOTSTRAP_TOKEN=self.token,
            BERTH_LOG_LEVEL="WARNING",
            BERTH_WORKERS=str(workers),
            DOCKER_HOST=docker_host,
        )
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"berth serve (pid {self.process.pid}) exited with {code}")

    def wait_ready(self, client: httpx.Client) -> None:
        """Waits for /readyz and for host `local` to be ready."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if client.get("/readyz").status_code == 200:
                    hosts = client.get(f"{API}/hosts").json()["items"]
                    if any(h["name"] == "local" and h["status"] == "ready" for h in hosts):
                        return
                    last = f"hosts: {[(h['name'], h['status']) for h in hosts]}"
                else:
                    last = "/readyz not 200 yet"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise TimeoutError(f"berth serve not ready after {STARTUP_TIMEOUT:.0f}s ({last})")

    def stop(self) -> None:
        """SIGTERM; SIGKILL if it is still there after STOP_TIMEOUT."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"    berth serve pid {process.pid} ignored SIGTERM; killing it")
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-chars:] or "(empty)"


@contextmanager
def running_server(workdir: Path, docker_host: str, workers: int) -> Iterator[BerthServer]:
    server = BerthServer(workdir, docker_host, workers)
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


def wait_converged(
    client: httpx.Client, server: BerthServer, service_id: str, replicas: int, run: BerthRun
) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
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
        time.sleep(POLL_SECONDS)


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
    api: docker.APIClient, docker_host: str, replicas: int, workers: int, workdir: Path
) -> BerthRun:
    with (
        running_server(workdir, docker_host, workers) as server,
        httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client,
    ):
        began = time.perf_counter()
        server.wait_ready(client)
        say(
            f"    berth serve (BERTH_WORKERS={workers}) ready in {time.perf_counter() - began:.1f}s"
        )
        time.sleep(SETTLE_SECONDS)  # let the start-up's own work (image sync, ...) pass
        load = load1()
        posted_wall = time.time()
        start = time.perf_counter()
        response = client.post(f"{API}/services", json=service_body(replicas))
        post_seconds = time.perf_counter() - start
        if response.status_code != 202:
            raise RuntimeError(f"POST /services: {response.status_code} {response.text[:500]}")
        service_id = str(response.json()["service"]["id"])
        run = BerthRun(
            workers=workers,
            run=Run("", 0.0, 0, load),
            post_seconds=post_seconds,
            posted_wall=posted_wall,
            observed_wall=0.0,
            status_changed=None,
        )
        try:
            read = wait_converged(client, server, service_id, replicas, run)
            seconds = time.perf_counter() - start
            run.observed_wall = time.time()
            # Outside the timed region: check the engine agrees, and read the operations.
            running = count_running(api, **{"berth.service": service_id})
            run.run = Run(f"Berth: BERTH_WORKERS={workers:<2}", seconds, running, load)
            run.status_changed = parse_time(read["updated_at"])
            run.operations = create_operations(client)
            run.failed_or_retried = sum(
                1 for op in run.operations if op.status != "succeeded" or op.attempts > 1
            )
        finally:
            delete_service(client, api, service_id)
    return run


# The schedule


def interleave(first: list[str], second: list[str]) -> list[str]:
    """a1 b1 a2 b2 ...: the rest of the longer list at the end."""
    order: list[str] = []
    for index in range(max(len(first), len(second))):
        order.extend(first[index : index + 1])
        order.extend(second[index : index + 1])
    return order


# Report


def print_runs(runs: list[Run], replicas: int) -> None:
    say("")
    say(f"Converging {replicas} replicas of {IMAGE} ({' '.join(COMMAND)}) on one engine")
    header = (
        f"{'#':>2}  {'approach':<44} {'seconds':>8} {'per replica':>11} {'running':>8} {'load1':>6}"
    )
    say(header)
    say("-" * len(header))
    for number, run in enumerate(runs, 1):
        say(
            f"{number:>2}  {run.label:<44} {run.seconds:>8.2f} "
            f"{run.seconds / replicas * 1000:>8.0f} ms {run.running:>8} {run.load:>6.2f}"
            + (f"  {run.note}" if run.note else "")
        )
    say("(# is the order the runs were made in; load1: 1-minute load average as the run began)")


def print_summary(
    compose: Run | None, raw: list[Run], berth: list[BerthRun], replicas: int
) -> None:
    say("")
    best = min(raw, key=lambda r: r.seconds) if raw else None
    if compose is not None:
        say(f"Compose:            {compose.seconds:6.2f} s")
    if best is not None:
        say(f"best raw loop:      {best.seconds:6.2f} s  ({best.label.split(', ')[-1].strip()})")
    for item in berth:
        run = item.run
        parts = [f"Berth workers={item.workers:<3} {run.seconds:6.2f} s"]
        if compose is not None:
            ratio = run.seconds / compose.seconds
            parts.append(
                f"Berth/Compose {ratio:.2f} (goal <= {GOAL_VS_COMPOSE:.1f} "
                f"{ok(ratio <= GOAL_VS_COMPOSE)})"
            )
        if best is not None:
            ratio = run.seconds / best.seconds
            parts.append(
                f"Berth/best raw {ratio:.2f} (goal <= {GOAL_VS_RAW:.1f} {ok(ratio <= GOAL_VS_RAW)})"
            )
        say("   ".join(parts))
    if berth:
        fastest = min(berth, key=lambda b: b.run.seconds)
        say(f"fastest Berth: BERTH_WORKERS={fastest.workers} ({fastest.run.seconds:.2f} s)")


def print_breakdown(item: BerthRun, replicas: int) -> None:
    ops = item.operations
    say("")
    say(
        f"Where Berth's time goes, BERTH_WORKERS={item.workers} "
        f"({len(ops)} container.create operations, {item.failed_or_retried} failed or retried; "
        f"{item.polls} GET /services polls), seconds from the POST:"
    )
    if not ops:
        say("  (no finished container.create operations to read)")
        return
    t0 = item.posted_wall
    first_created = min(op.created for op in ops)
    last_created = max(op.created for op in ops)
    first_started = min(op.started for op in ops)
    last_started = max(op.started for op in ops)
    last_finished = max(op.finished for op in ops)
    waits = [seconds_since(op.created, op.started) for op in ops]
    handlers = [seconds_since(op.started, op.finished) for op in ops]
    busy = sum(handlers)
    span = seconds_since(first_started, last_finished)

    def row(label: str, value: float) -> None:
        say(f"  {label:<62} {value:>7.2f}")

    row("POST /services round trip (202 received)", item.post_seconds)
    row(
        "first container.create created_at (reconciler's first pass)",
        seconds_since(t0, first_created),
    )
    row("last container.create created_at", seconds_since(t0, last_created))
    row("first started_at (claimed by a worker)", seconds_since(t0, first_started))
    row("last started_at", seconds_since(t0, last_started))
    row("last finished_at", seconds_since(t0, last_finished))
    if item.status_changed is not None:
        row("service status -> running (its updated_at)", seconds_since(t0, item.status_changed))
    row("seen by the client (GET /services every 50 ms)", seconds_since(t0, item.observed_wall))
    say("  per operation (p50 / p90 / max, seconds):")

    def spread(label: str, values: Sequence[float]) -> None:
        say(
            f"    {label:<60} {percentile(values, 50):>6.3f} {percentile(values, 90):>6.3f} "
            f"{max(values):>6.3f}"
        )

    spread("queue wait: created_at -> started_at", waits)
    spread("handler: started_at -> finished_at", handlers)
    pre = [seconds_since(op.started, op.created_log) for op in ops if op.created_log]
    mid = [
        seconds_since(op.created_log, op.started_log)
        for op in ops
        if op.created_log and op.started_log
    ]
    post = [seconds_since(op.started_log, op.finished) for op in ops if op.started_log]
    if pre:
        spread("  started_at -> 'created container' (spec, find, image, create)", pre)
    if mid:
        spread("  'created container' -> 'started' (record, inspect, start)", mid)
    if post:
        spread("  'started' -> finished_at (inspect, record, finish)", post)
    say(
        f"  handler time summed {busy:.2f} s over {span:.2f} s from first start to last finish: "
        f"{busy / span if span else math.nan:.1f} handlers busy on average "
        f"(of {item.workers} slots)"
    )


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
        "--workers", type=parse_list, default=[4, 8, 12], help="BERTH_WORKERS values (4,8,12)"
    )
    parser.add_argument(
        "--raw-parallelism",
        type=parse_list,
        default=list(RAW_PARALLELISM),
        help="threads for the raw loop (1,4,8,16)",
    )
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("BERTH_BENCH_DOCKER_HOST", DEFAULT_DOCKER_HOST),
        help="the engine (env BERTH_BENCH_DOCKER_HOST; default {DEFAULT_DOCKER_HOST})",
    )
    parser.add_argument("--no-compose", action="store_true", help="skip the Compose run")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be positive")

    # SIGTERM unwinds like Ctrl-C, so servers are stopped and containers removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    began = time.perf_counter()
    compose = None if args.no_compose else shutil.which("docker-compose")
    if not args.no_compose and compose is None:
        say("docker-compose not found (apt-get install -y docker-compose); no Compose run")
    load = load1()
    say(
        f"load average {load:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    if load > BUSY_LOAD:
        say(
            f"WARNING: the machine is not quiet (1-minute load {load:.2f} > {BUSY_LOAD}): "
            "the figures will be slower and noisier than on an idle machine"
        )
    api = docker.APIClient(base_url=args.docker_host, timeout=120)
    runs: list[Run] = []
    raw: list[Run] = []
    compose_run: Run | None = None
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
            f"(API {version.get('ApiVersion', '?')}); "
            + (f"docker-compose {compose_version(compose)}" if compose else "no Compose")
        )
        say(f"warm-up: {WARMUP_REPLICAS} containers from 4 threads (untimed)")
        run_raw(api, args.docker_host, WARMUP_REPLICAS, 4)
        settle(api)

        others = (["compose"] if compose else []) + [f"raw:{p}" for p in args.raw_parallelism]
        order = interleave(others, [f"berth:{w}" for w in args.workers])
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
            workdir = Path(tmp)
            for step in order:
                kind, _, value = step.partition(":")
                say(f"[{len(runs) + 1}/{len(order)}] {step}")
                if kind == "compose":
                    assert compose is not None
                    compose_run = run_compose(
                        api, compose, workdir, args.docker_host, args.replicas
                    )
                    result = compose_run
                elif kind == "raw":
                    result = run_raw(api, args.docker_host, args.replicas, int(value))
                    raw.append(result)
                else:
                    serverdir = workdir / f"berth-{value}"
                    serverdir.mkdir()
                    item = run_berth(api, args.docker_host, args.replicas, int(value), serverdir)
                    berth.append(item)
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
    print_summary(compose_run, raw, berth, args.replicas)
    for item in berth:
        print_breakdown(item, args.replicas)
    say(f"\n(total run time {time.perf_counter() - began:.0f}s on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

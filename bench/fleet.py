"""Berth over a fleet of hollow engines: readiness, idle cost, failure detection, placement and
start rates, and list latency, for each fleet size asked for.

For each size N, on a fresh SQLite database:

1. a hollow fleet of N engines (bench/hollow, its own process, unix sockets, `--latency-ms`)
   and one `berth serve` (operations run in the same process, as by default);
2. **ready**: the N engines registered through `POST /hosts`; seconds from the first
   registration until all N are `ready`;
3. **idle**: Berth's CPU (share of one core), RSS, threads and open sockets over `--idle`
   seconds while it probes and follows them all, after `--settle` seconds (30) whose CPU is
   printed on its own (the start's inventory reads of every host);
4. **dead engine**: one engine dies (connections dropped, new ones refused); seconds until
   `GET /hosts/{id}` says `unreachable`;
5. **service**: engines made instant (latency 0); `--replicas` replicas spread over the fleet
   as one service (services of at most 10,000 replicas, the service API's cap), posted at
   once. Placement decisions/s = replicas given a host / seconds until all had one;
   started/s = replicas running / seconds until all ran (both end to end from the first POST,
   read from the database every 0.25 s); the rate of each quarter shows whether it stays
   flat; then `berth serve`'s RSS with all of them running (goal: <= 200 MB per process for
   10,000 containers on 100 engines);
6. **reads**: `GET /containers?limit=50` and `GET /services?limit=50`, p50/p99 of `--reads`
   (200) each; then the RSS again, and its peak (VmHWM) over the whole run.

A phase that does not finish within `--timeout` prints what it reached and, with py-spy
installed, the top of a profile of `berth serve` taken then. `--profile` also profiles the
service phase when it finishes.

    .venv/bin/python -m bench.fleet                            # 100 and 1,000 engines
    .venv/bin/python -m bench.fleet --engines 100 --replicas 1000 --idle 10
    .venv/bin/python -m bench.fleet --engines 100 --idle 2 --timeout 1500   # RSS, 10,000 running
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.services.schemas import MAX_REPLICAS
from bench.common import (
    API,
    ROOT,
    BerthServer,
    free_port,
    ok,
    percentile,
    process_cpu_seconds,
    say,
)
from bench.hollow.fleet import SEED_IMAGE

POLL = 0.25
GOALS = {
    "dead": 15.0,  # seconds, 1,000 engines
    "idle_cpu": 10.0,  # % of one core, 1,000 engines
    "rss_mb": 200.0,  # per process, 10,000 containers on 100 engines
    "placed": 1500.0,  # decisions/s, 1,000 engines
    "started": 500.0,  # replicas/s end to end, instant engines
    "p99_ms": 50.0,  # GET /containers?limit=50
}


@dataclass
class Figures:
    engines: int
    lines: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, goal: str = "") -> None:
        line = f"  {name:<38} {value:>16}   {goal}"
        self.lines.append(line)
        say(line)


class HollowProcess:
    """`python -m bench.hollow` serving N engines on unix sockets, with a control port."""

    def __init__(self, engines: int, folder: Path, latency_ms: float) -> None:
        self.control = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.hollow",
                "--engines",
                str(engines),
                "--socket-dir",
                str(folder),
                "--latency-ms",
                str(latency_ms),
                "--control-port",
                self.control.rsplit(":", 1)[1],
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.urls: list[str] = []
        for line in self.process.stdout:
            if line.strip() == "ready":
                break
            self.urls.append(line.strip())
        if len(self.urls) != engines:
            raise RuntimeError(f"hollow fleet started {len(self.urls)} of {engines} engines")
        self.client = httpx.Client(base_url=self.control, timeout=30)

    def post(self, path: str) -> None:
        self.client.post(path).raise_for_status()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines)


def peak_rss_mb(pid: int) -> float:
    """The most RSS the process has had so far (VmHWM), in MB."""
    return int(_status(pid)["VmHWM"].split()[0]) / 1024


def process_facts(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, threads, open sockets) of a process."""
    status = _status(pid)
    rss = int(status["VmRSS"].split()[0]) / 1024
    sockets = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            sockets += str(entry.readlink()).startswith("socket:")
    return rss, int(status["Threads"]), sockets


def profile_top(pid: int, seconds: float, entries: int = 12) -> list[str]:
    """The functions `pid` spent its time in (py-spy, all threads, idle ones left out), by
    inclusive and by own share of samples."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return ["(py-spy not installed: pip install py-spy)"]
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        # 20 samples/s: py-spy reads every thread's stack per sample, and with a thousand
        # threads it cannot keep its default 100/s (it then runs for minutes, not `seconds`).
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
        command += ["--rate", "20", "--format", "raw", "--output", out.name, "--nonblocking"]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=3 * seconds + 30
            )
        except subprocess.TimeoutExpired:
            return [f"(py-spy did not finish within {3 * seconds + 30:.0f} s)"]
        text = Path(out.name).read_text()
    if done.returncode != 0 and not text:
        return [f"(py-spy failed: {done.stderr.strip()[-300:]})"]
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1] for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]
    lines = ["  inclusive:"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(entries)]
    lines += ["  own:"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(entries)]
    return lines


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = POLL
) -> float | None:
    """Seconds until `condition()` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def replica_counts(database: Path) -> tuple[int, int]:
    """(replicas given a host, replicas running), read from Berth's database."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        placed, running = db.execute(
            "SELECT count(*), coalesce(sum(state = 'running'), 0) FROM containers "
            "WHERE service_id IS NOT NULL AND desired_state != 'removed'"
        ).fetchone()
    return int(placed), int(running)


def run_size(args: argparse.Namespace, engines: int, workdir: Path) -> Figures:
    figures = Figures(engines)
    say(f"\n== {engines} hollow engines, {args.replicas:,} replicas ==")
    hollow = HollowProcess(engines, workdir / "sock", args.latency_ms)
    server = BerthServer(workdir / "berth", hollow.urls[0], BERTH_REGISTER_LOCAL_HOST="false")
    server.start()
    client = httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60)
    try:
        if wait_until(lambda: _ready(client), timeout=60, interval=0.1) is None:
            raise RuntimeError(f"berth serve did not start:\n{server.log_tail()}")
        figures.add("cores on this machine", str(os.cpu_count()))

        # Ready.
        start = time.monotonic()
        host_ids = []
        for index, url in enumerate(hollow.urls):
            response = client.post(f"{API}/hosts", json={"name": f"e{index:04d}", "url": url})
            response.raise_for_status()
            host_ids.append(str(response.json()["id"]))
        registered = time.monotonic() - start
        waited = wait_until(lambda: _count_ready(client) >= engines, timeout=args.timeout)
        if waited is None:
            figures.add("hosts ready", f"{_count_ready(client)} of {engines}", "not reached")
            _profile(figures, server.pid, args)
            return figures
        figures.add("seconds to register all", f"{registered:.1f}")
        figures.add("seconds until all ready", f"{registered + waited:.1f}")

        # Idle. The first seconds after all are ready are the start's work, not idling: each
        # host's inventory is read when its event stream first opens, and again by the
        # inventory loop's first round. Measured on its own.
        before, then = process_cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.settle)
        cpu = (process_cpu_seconds(server.pid) - before) / (time.monotonic() - then) * 100
        figures.add(f"CPU in the {args.settle:g} s after ready, % of one core", f"{cpu:.1f}")
        before, then = process_cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.idle)
        cpu = (process_cpu_seconds(server.pid) - before) / (time.monotonic() - then) * 100
        rss, threads, sockets = process_facts(server.pid)
        big = engines >= 1000
        goal = f"<= {GOALS['idle_cpu']:g} % at 1,000 engines"
        figures.add(
            "idle CPU, % of one core", f"{cpu:.1f}", f"{goal} {ok(cpu <= 10)}" if big else goal
        )
        figures.add("idle RSS, MB", f"{rss:.0f}")
        figures.add("threads · open sockets", f"{threads} · {sockets}")
        if args.profile:
            _profile(figures, server.pid, args)

        # A dead engine.
        victim = engines - 1
        hollow.post(f"/fleet/{victim}/die")
        noticed = wait_until(
            lambda: client.get(f"{API}/hosts/{host_ids[victim]}").json()["status"] == "unreachable",
            timeout=args.timeout,
        )
        goal = f"<= {GOALS['dead']:g} s at 1,000 engines"
        if noticed is None:
            figures.add("seconds to notice a dead engine", "not reached", goal)
        else:
            verdict = f" {ok(noticed <= GOALS['dead'])}" if big else ""
            figures.add("seconds to notice a dead engine", f"{noticed:.1f}", goal + verdict)

        if args.idle_only:
            return figures

        # A fleet-wide service.
        hollow.post("/fleet/latency/0")
        _service_phase(args, figures, client, server)

        # Reads.
        for path in ("/containers?limit=50", "/services?limit=50"):
            times = []
            for _ in range(args.reads):
                began = time.perf_counter()
                client.get(f"{API}{path}").raise_for_status()
                times.append((time.perf_counter() - began) * 1000)
            p50, p99 = percentile(times, 50), percentile(times, 99)
            figures.add(
                f"GET {path.split('?')[0]} p50 · p99 ms",
                f"{p50:.1f} · {p99:.1f}",
                f"p99 <= {GOALS['p99_ms']:g} {ok(p99 <= GOALS['p99_ms'])}",
            )
        _rss(figures, "RSS after the reads, MB", server.pid, args.replicas)
        peak = peak_rss_mb(server.pid)
        figures.add(
            "peak RSS (VmHWM) of the run, MB", f"{peak:.0f}", _rss_goal(peak, args.replicas)
        )
        return figures
    finally:
        client.close()
        server.stop()
        hollow.stop()


def _service_phase(
    args: argparse.Namespace,
    figures: Figures,
    client: httpx.Client,
    server: BerthServer,
) -> None:
    database = server.workdir / "berth.db"
    total = args.replicas
    sizes = [MAX_REPLICAS] * (total // MAX_REPLICAS) + (
        [total % MAX_REPLICAS] if total % MAX_REPLICAS else []
    )
    start = time.monotonic()
    for index, replicas in enumerate(sizes):
        spec = {"image": SEED_IMAGE, "command": ["sleep", "3600"], "replicas": replicas}
        response = client.post(f"{API}/services", json={"name": f"fleet-{index}", "spec": spec})
        response.raise_for_status()
    # With --profile, a profile of the placing server, taken while it places.
    profile: list[str] = []
    profiler = threading.Thread(
        target=lambda: profile.extend(profile_top(server.pid, args.profile_seconds))
    )
    if args.profile:
        profiler.start()
    readings: list[tuple[float, int, int]] = []
    placed_at = running_at = None
    while time.monotonic() - start < args.timeout:
        placed, running = replica_counts(database)
        now = time.monotonic() - start
        readings.append((now, placed, running))
        if placed_at is None and placed >= total:
            placed_at = now
        if running >= total:
            running_at = now
            break
        time.sleep(POLL)
    figures.add("services · replicas", f"{len(sizes)} · {total:,}")
    _rate(figures, "placement decisions/s", readings, 1, total, placed_at, GOALS["placed"])
    _rate(figures, "replicas started/s", readings, 2, total, running_at, GOALS["started"])
    first = next((t for t, _, running in readings if running), None)
    figures.add("first replica running after, s", "-" if first is None else f"{first:.1f}")
    if running_at is not None:
        _rss(figures, "RSS with all running, MB", server.pid, total)
    if args.profile:
        profiler.join()
        say(f"  profile of berth serve over the first {args.profile_seconds:g} s of the service:")
        for line in profile:
            say(f"  {line}")
    if running_at is None:
        _profile(figures, server.pid, args)


def _rate(
    figures: Figures,
    name: str,
    readings: list[tuple[float, int, int]],
    column: int,
    total: int,
    done_at: float | None,
    goal: float,
) -> None:
    if done_at is None:
        reached = readings[-1][column] if readings else 0
        elapsed = readings[-1][0] if readings else 0.0
        figures.add(
            name,
            f"{reached / max(elapsed, 1e-9):,.0f}",
            f"{reached:,} of {total:,} in {elapsed:.0f} s: not reached",
        )
        return
    rate = total / done_at
    figures.add(name, f"{rate:,.0f}", f">= {goal:,.0f} {ok(rate >= goal)}")
    # The rate in each quarter: flat, or falling as the tables grow.
    quarters = []
    for low, high in ((0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)):
        t0 = next(t for t, *counts in readings if counts[column - 1] >= low * total)
        t1 = next(t for t, *counts in readings if counts[column - 1] >= high * total)
        quarters.append(f"{total / 4 / max(t1 - t0, POLL):,.0f}")
    figures.add(f"  {name} by quarter", " · ".join(quarters))


def _rss_goal(rss: float, replicas: int) -> str:
    """The RSS goal, judged only where it applies: 10,000 containers (on 100 engines)."""
    goal = f"<= {GOALS['rss_mb']:g} MB at 10,000 containers"
    return f"{goal} {ok(rss <= GOALS['rss_mb'])}" if replicas >= 10_000 else goal


def _rss(figures: Figures, name: str, pid: int, replicas: int) -> None:
    rss, threads, sockets = process_facts(pid)
    figures.add(name, f"{rss:.0f}", _rss_goal(rss, replicas))
    figures.add("  threads · open sockets", f"{threads} · {sockets}")


def _profile(figures: Figures, pid: int, args: argparse.Namespace) -> None:
    say(f"  profile of berth serve over {args.profile_seconds:g} s:")
    for line in profile_top(pid, args.profile_seconds):
        say(f"  {line}")


def _ready(client: httpx.Client) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return client.get("/readyz").status_code == 200
    return False


def _count_ready(client: httpx.Client) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"status": "ready", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        body = client.get(f"{API}/hosts", params=params).json()
        count += len(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--engines", default="100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=1.0, help="hollow engines' latency")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after all are ready, before idle"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase")
    parser.add_argument("--reads", type=int, default=200, help="requests per list read")
    parser.add_argument("--profile", action="store_true", help="profile idle and service too")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument(
        "--idle-only", action="store_true", help="stop after the dead engine: no service, reads"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.engines.split(",")]
    results = []
    for engines in sizes:
        with tempfile.TemporaryDirectory(prefix="berth-fleet-") as folder:
            results.append(run_size(args, engines, Path(folder)))
    say("\n== summary ==")
    for figures in results:
        say(f"{figures.engines} engines:")
        for line in figures.lines:
            say(line)


if __name__ == "__main__":
    main()

"""The read path for pollers: `GET /containers?limit=50` over 10,000 rows (its first page, a
page from the middle, and the first page of `?state=running`, a filter every row matches) and
`GET /services` (a page of 20 services of 50 tasks each), with 1 and 2 API processes (`berth
serve --workers N --no-workers`), loaded by wrk (a C load generator: it does not share the
server's interpreter), with the same run's floor `GET /healthz` on the same server. With
`--rows 50000`, the same over 50,000 rows: keyset pages should cost the same.

The containers and services are inserted directly into a fresh SQLite database (one host row,
no engine): the figure is the API's, not the engines'. Goal: >= 1,500 req/s and p99 <= 50 ms
with 2 processes for the container page.

    .venv/bin/python -m bench.read_path [--rows 10000] [--services 20] [--replicas 50]
        [--processes 1,2] [--seconds 10] [--profile FILE]

`--profile FILE` then loads the container page once more per process count, under py-spy
(`--gil`, the API processes included; .txt: raw stacks, .svg: a flame graph, .json:
speedscope), FILE named `<stem>-<processes>p<suffix>`; that row is slowed by the profiler and
is not in the table. py-spy: `.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import insert

from app.api.pagination import encode_cursor
from app.containers.models import Container
from app.core.db import Database, new_id, utcnow
from app.core.migrate import upgrade
from app.hosts.models import Host
from app.services.models import Service
from bench.common import API, ROOT, STOP_TIMEOUT, free_port, ok, process_cpu_seconds, say
from bench.container_start import profiling

GOAL_RPS = 1500.0
GOAL_P99_MS = 50.0
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def fill(database_url: str, rows: int, *, services: int, replicas: int) -> None:
    """`rows` containers on one ready host; the first `services * replicas` of them are the
    tasks (slots 0..replicas-1, revision 1) of `services` services."""
    database = Database(database_url)
    try:
        upgrade(database)
        now = utcnow()
        host_id = new_id()
        with database.session() as session:
            session.add(
                Host(
                    id=host_id,
                    name="bench",
                    url="tcp://127.0.0.1:1",
                    status="ready",
                    labels={},
                    created_at=now,
                    updated_at=now,
                )
            )
        spec = {"image": "busybox:1.36", "command": ["sleep", "infinity"], "env": {"A": "1"}}
        service_ids = [new_id() for _ in range(services)]
        with database.session() as session:
            session.execute(
                insert(Service),
                [
                    {
                        "id": service_id,
                        "name": f"bench-service-{n}",
                        "spec": {**spec, "replicas": replicas},
                        "replicas": replicas,
                        "status": "running",
                        "slots": {},
                    }
                    for n, service_id in enumerate(service_ids)
                ],
            )

        def owner(i: int) -> dict[str, object]:
            if i >= services * replicas:
                return {}
            return {"service_id": service_ids[i // replicas], "slot": i % replicas, "revision": 1}

        batch = 1000
        for start in range(0, rows, batch):
            with database.session() as session:
                session.execute(
                    insert(Container),
                    [
                        {
                            "id": new_id(),
                            "name": f"bench-{i}",
                            "host_id": host_id,
                            "spec": spec,
                            "image": "busybox:1.36",
                            "state": "running",
                            "desired_state": "running",
                            "labels": {"bench": "true"},
                            "created_at": now,
                            **owner(i),
                        }
                        for i in range(start, min(start + batch, rows))
                    ],
                )
    finally:
        database.dispose()


class Server:
    """`berth serve --workers N --no-workers` on the filled database."""

    def __init__(self, workdir: Path, database_url: str, processes: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = "berth_bench_" + secrets.token_hex(24)
        self.log_path = workdir / f"serve-{processes}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update(
            BERTH_DATABASE_URL=database_url,
            BERTH_BOOTSTRAP_TOKEN=self.token,
            BERTH_KEY_FILE=str(workdir / "berth.key"),
            BERTH_REGISTER_LOCAL_HOST="false",
            BERTH_LOG_LEVEL="WARNING",
        )
        command = [sys.executable, "-m", "app.cli", "serve", "--no-workers"]
        command += ["--workers", str(processes), "--port", str(self.port)]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"berth serve exited; see {self.log_path}")
            try:
                # A few answers in a row: with several processes each must have started.
                if all(
                    httpx.get(f"{self.base}{API}/me", headers=headers, timeout=5).status_code == 200
                    for _ in range(8)
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"berth serve not ready after {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by `berth serve` and its API processes (its children)."""
        pids = [self.process.pid]
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        return sum(process_cpu_seconds(pid) for pid in pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def middle_cursor(database: Path, rows: int) -> str:
    """The cursor of the page that starts halfway through the containers, in id order."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (key,) = db.execute(
            "SELECT id FROM containers ORDER BY id LIMIT 1 OFFSET ?", (rows // 2,)
        ).fetchone()
    return encode_cursor(key)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


# The percentiles are read from wrk's "Latency Distribution" lines (anchored: the "+/- Stdev"
# column of the thread stats also ends in "%").
def wrk(url: str, *, headers: dict[str, str], seconds: int, connections: int) -> Load:
    # A long timeout: a slow answer is counted in the percentiles, not dropped as an error.
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(bad.group(1)) if bad else 0
    count += sum(int(n) for n in errors.groups()) if errors else 0
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Load(rps, p50, p99, count, done)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", type=Path, help="py-spy output file (see above)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        say("wrk is not installed (Debian: apt-get install -y wrk)")
        return 2
    say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="berth-read-path-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'berth.db'}"
        if args.services * args.replicas > args.rows:
            parser.error("--services x --replicas is more than --rows")
        fill(database_url, args.rows, services=args.services, replicas=args.replicas)
        say(
            f"{args.rows:,} containers inserted directly into a fresh SQLite database, of which"
            f" {args.services * args.replicas:,} are the tasks of {args.services} services"
        )
        say(f"wrk: 2 threads, {args.connections} connections, {args.seconds} s per figure")
        # CPU per request: the server's own CPU time over the requests wrk counted, which other
        # work on a shared machine moves far less than the rates.
        columns = ("req/s", "p50 ms", "p99 ms", "CPU ms/req")
        say(f"{'processes':>9} {'request':<40} " + " ".join(f"{c:>8}" for c in columns) + " errors")
        verdicts = []
        for processes in (int(n) for n in args.processes.split(",")):
            server = Server(workdir, database_url, processes)
            try:
                server.wait_ready()
                auth = {"Authorization": f"Bearer {server.token}"}
                page = f"{server.base}{API}/containers?limit=50"
                etag = httpx.get(page, headers=auth).headers["etag"]
                middle = f"{page}&cursor={middle_cursor(workdir / 'berth.db', args.rows)}"
                # A viewer's list is narrowed to its projects (`project_id IN (...)`).
                viewer = httpx.post(
                    f"{server.base}{API}/tokens",
                    headers=auth,
                    json={"name": "bench-viewer", "role": "viewer"},
                ).json()["token"]
                services = f"{server.base}{API}/services?limit={args.services}"
                listed = httpx.get(services, headers=auth).json()["items"]
                assert sum(len(s["tasks"]) for s in listed) == args.services * args.replicas
                cases = [
                    ("GET /healthz (floor)", f"{server.base}/healthz", {}),
                    ("GET /containers?limit=50", page, auth),
                    ("  same, If-None-Match (304)", page, {**auth, "If-None-Match": etag}),
                    ("  a page from the middle (cursor)", middle, auth),
                    ("  ?state=running (every row matches)", f"{page}&state=running", auth),
                    ("  same, a viewer's token", page, {"Authorization": f"Bearer {viewer}"}),
                    (f"GET /services ({args.services} x {args.replicas} tasks)", services, auth),
                ]
                for label, url, headers in cases:
                    cpu = server.cpu_seconds()
                    load = wrk(
                        url, headers=headers, seconds=args.seconds, connections=args.connections
                    )
                    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(load.requests, 1)
                    say(
                        f"{processes:>9} {label:<40} {load.rps:>8.0f} {load.p50_ms:>8.1f}"
                        f" {load.p99_ms:>8.1f} {cpu_ms:>10.2f} {load.errors:>7}"
                    )
                    if processes == 2 and label == "GET /containers?limit=50":
                        verdicts.append(load.rps >= GOAL_RPS and load.p99_ms <= GOAL_P99_MS)
                        say(
                            f"{'':>9} goal with 2 processes: >= {GOAL_RPS:.0f} req/s, p99 <="
                            f" {GOAL_P99_MS:.0f} ms: {ok(verdicts[-1])}"
                        )
                if args.profile is not None:
                    target = args.profile.with_name(
                        f"{args.profile.stem}-{processes}p{args.profile.suffix}"
                    )
                    with profiling(target, server.process.pid, args.seconds, subprocesses=True):
                        load = wrk(
                            page, headers=auth, seconds=args.seconds, connections=args.connections
                        )
                    say(f"{processes:>9} under py-spy (not in the table): {load.rps:.0f} req/s")
            finally:
                server.stop()
    say(f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine skews all)")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

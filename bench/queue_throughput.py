"""Throughput and idle latency of the durable operation queue, with real `berth worker` processes.

For each backend (SQLite, PostgreSQL) and each worker-process count this starts that many
`python -m app.cli worker` subprocesses on a fresh database, then measures:

* throughput: enqueue N `debug.noop` operations (500 per transaction) and time from the first
  enqueue until every one of them is finished;
* drain: the same N rows bulk-inserted in one statement, timed until all are finished, which
  shows what the workers do when the enqueueing side is not the limit;
* idle latency: enqueue one operation at a time, wait until a worker has started it, and take
  `started_at - created_at` (`started_at` is when its handler started; both written by Python
  UTC clocks on this machine).

A baseline per backend puts the numbers in proportion: single-row INSERT+UPDATE transactions a
second from one Python process with SQLAlchemy Core, through the same kind of engine Berth uses.

    .venv/bin/python -m bench.queue_throughput [--backend sqlite|postgresql|both] [--ops N]
        [--workers 1,2,4]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    make_url,
    select,
    update,
)

from app.core.db import Database, utcnow
from app.core.migrate import upgrade
from app.operations import queue
from app.operations.models import QUEUED, TERMINAL, Operation
from app.security.crypto import load_or_create_key
from app.workers.models import WorkerProcess
from bench.common import ROOT, STARTUP_TIMEOUT, STOP_TIMEOUT, percentile, say

BACKENDS = ("sqlite", "postgresql")
# The testbed's role (scripts/testbed.sh), which may create databases.
PG_ADMIN_URL = "postgresql://berth:berth-test-pw@127.0.0.1:5432/postgres"
PG_BENCH_DATABASE = "berth_bench"
# Databases this script must never drop, whatever it is told.
PROTECTED_DATABASES = frozenset({"berth_test", "postgres", "template0", "template1"})

DEFAULT_OPS = {"sqlite": 2000, "postgresql": 4000}
GOAL_OPS_PER_SECOND = {"sqlite": 300.0, "postgresql": 3000.0}  # issue 15
GOAL_P99_MS = 50.0
ENQUEUE_BATCH = 500
WARMUP_OPS_PER_WORKER = 25
BASELINE_SECONDS = 3.0
BASELINE_THREADS = 8
NOOP = "debug.noop"


@dataclass(frozen=True)
class Result:
    backend: str
    workers: int
    ops: int
    wall_seconds: float
    enqueue_seconds: float
    drain_seconds: float
    failed: int
    latencies_ms: tuple[float, ...]

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.wall_seconds

    @property
    def enqueue_per_second(self) -> float:
        return self.ops / self.enqueue_seconds

    @property
    def drain_per_second(self) -> float:
        return self.ops / self.drain_seconds

    def latency(self, pct: float) -> float:
        return percentile(self.latencies_ms, pct)


# Databases


@dataclass(frozen=True)
class PgServer:
    """Where the PostgreSQL runs go: an admin connection (CREATEDB) and the database this
    script drops and creates for each run."""

    admin_url: str
    database: str = PG_BENCH_DATABASE


def pg_bench_url(pg: PgServer) -> str:
    url = make_url(pg.admin_url).set(drivername="postgresql+psycopg", database=pg.database)
    return url.render_as_string(hide_password=False)


def recreate_pg_database(pg: PgServer) -> None:
    assert pg.database not in PROTECTED_DATABASES
    name = sql.Identifier(pg.database)
    with psycopg.connect(pg.admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_pg_database(pg: PgServer) -> None:
    assert pg.database not in PROTECTED_DATABASES
    name = sql.Identifier(pg.database)
    with psycopg.connect(pg.admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def fresh_database(backend: str, workdir: Path, label: str, pg: PgServer) -> str:
    """An empty, migrated database; returns its SQLAlchemy URL."""
    if backend == "sqlite":
        path = workdir / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        recreate_pg_database(pg)
        url = pg_bench_url(pg)
    database = Database(url)
    try:
        upgrade(database)
    finally:
        database.dispose()
    return url


def status_counts(db: Database) -> dict[str, int]:
    with db.session(write=False) as session:
        rows = session.execute(
            select(Operation.status, func.count()).group_by(Operation.status)
        ).all()
    return {str(status): int(count) for status, count in rows}


def finished_count(db: Database) -> tuple[int, int]:
    """(operations in a terminal status, of which not succeeded)."""
    counts = status_counts(db)
    finished = sum(n for status, n in counts.items() if status in TERMINAL)
    return finished, finished - counts.get("succeeded", 0)


def enqueue_noops(db: Database, count: int, *, batch: int = ENQUEUE_BATCH) -> None:
    left = count
    while left > 0:
        size = min(batch, left)
        with db.session() as session:
            for _ in range(size):
                queue.enqueue(session, kind=NOOP, created_by="bench")
        left -= size


def bulk_insert_noops(db: Database, count: int) -> None:
    """The rows `queue.enqueue` would write, in one multi-row INSERT: no per-row round trips."""
    now = utcnow()
    rows = [
        {"kind": NOOP, "params": {}, "status": QUEUED, "run_after": now, "created_at": now}
        for _ in range(count)
    ]
    with db.session() as session:
        session.execute(insert(Operation), rows)
        queue.notify_workers(session)


# Baseline: what the database itself does from one Python process


@contextmanager
def scratch_table(engine: Engine) -> Iterator[Table]:
    metadata = MetaData()
    table = Table(
        "bench_baseline",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("n", Integer, nullable=False),
        Column("note", String(64)),
    )
    metadata.drop_all(engine)
    metadata.create_all(engine)
    try:
        yield table
    finally:
        metadata.drop_all(engine)


def insert_update_loop(engine: Engine, table: Table, first_id: int, deadline: float) -> int:
    """Single-row INSERT, then UPDATE of that row, one transaction each, until the deadline."""
    done = 0
    while time.perf_counter() < deadline:
        row_id = first_id + done
        with engine.begin() as connection:
            connection.execute(insert(table).values(id=row_id, n=0, note="baseline"))
            connection.execute(update(table).where(table.c.id == row_id).values(n=table.c.n + 1))
        done += 1
    return done


def baseline_transactions_per_second(
    engine: Engine, *, threads: int = 1, seconds: float = BASELINE_SECONDS
) -> float:
    with scratch_table(engine) as table:
        counts = [0] * threads
        start = time.perf_counter()
        deadline = start + seconds

        def run(index: int) -> None:
            counts[index] = insert_update_loop(engine, table, index * 100_000_000, deadline)

        if threads == 1:
            run(0)
        else:
            pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
        return sum(counts) / (time.perf_counter() - start)


def run_baselines(backend: str, workdir: Path, pg: PgServer) -> list[tuple[str, float]]:
    url = fresh_database(backend, workdir, "baseline", pg)
    figures: list[tuple[str, float]] = []
    database = Database(url)
    engine_label = (
        "Berth's engine (WAL, synchronous=NORMAL, BEGIN IMMEDIATE)"
        if backend == "sqlite"
        else "Berth's engine (pool_pre_ping=True)"
    )
    try:
        figures.append(
            (f"1 thread, {engine_label}", baseline_transactions_per_second(database.engine))
        )
        if backend == "postgresql":
            plain = create_engine(url)
            try:
                figures.append(
                    (
                        "1 thread, plain engine (no pre-ping)",
                        baseline_transactions_per_second(plain),
                    )
                )
            finally:
                plain.dispose()
        figures.append(
            (
                f"{BASELINE_THREADS} threads, {engine_label}",
                baseline_transactions_per_second(database.engine, threads=BASELINE_THREADS),
            )
        )
    finally:
        database.dispose()
    return figures


# Worker processes


def worker_environment(url: str, workdir: Path, slots: int | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BERTH_")}
    env.update(
        BERTH_DATABASE_URL=url,
        BERTH_KEY_FILE=str(workdir / "berth.key"),
        BERTH_ENABLE_DEBUG_OPERATIONS="true",
        BERTH_REGISTER_LOCAL_HOST="false",
        BERTH_LOG_LEVEL="WARNING",
        BERTH_HOST_PROBE_INTERVAL_SECONDS="60",
    )
    if slots is not None:
        env["BERTH_WORKERS"] = str(slots)
    return env


class WorkerProcesses:
    """`berth worker` subprocesses, each logging to its own file in the work directory."""

    def __init__(self, count: int, env: dict[str, str], logdir: Path) -> None:
        self.count = count
        self.env = env
        self.logdir = logdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        for index in range(self.count):
            log_path = self.logdir / f"worker-{index}.log"
            handle = log_path.open("wb")
            self._logs.append(handle)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker"],
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )

    def check_alive(self) -> None:
        for index, process in enumerate(self.processes):
            code = process.poll()
            if code is not None:
                tail = (self.logdir / f"worker-{index}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"worker {index} (pid {process.pid}) exited with {code}:\n{tail}"
                )

    def stop(self) -> None:
        """SIGTERM every worker; SIGKILL whichever is still there after STOP_TIMEOUT."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"  worker pid {process.pid} ignored SIGTERM; killing it")
                process.kill()
                process.wait()
        for handle in self._logs:
            handle.close()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


@contextmanager
def running_workers(
    count: int, url: str, workdir: Path, slots: int | None
) -> Iterator[WorkerProcesses]:
    workers = WorkerProcesses(count, worker_environment(url, workdir, slots), workdir)
    try:
        workers.start()
        yield workers
    except BaseException:
        workers.stop()
        for index in range(count):
            log = (workdir / f"worker-{index}.log").read_text(errors="replace").strip()
            say(f"  worker {index} log (last 3000 characters):\n{log[-3000:] or '(empty)'}")
        raise
    else:
        workers.stop()


def wait_until_finished(
    db: Database, workers: WorkerProcesses, target: int, timeout: float, poll: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        finished, _ = finished_count(db)
        if finished >= target:
            return
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {finished} of {target} operations finished in {timeout:.0f}s "
                f"(by status: {status_counts(db)})"
            )
        time.sleep(poll)


def wait_until_ready(db: Database, workers: WorkerProcesses) -> None:
    """Every worker has registered itself, and a warm-up batch has gone through."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        with db.session(write=False) as session:
            alive = session.execute(select(func.count()).select_from(WorkerProcess)).scalar_one()
        if alive >= workers.count:
            break
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{alive} of {workers.count} workers up after {STARTUP_TIMEOUT}s")
        time.sleep(0.1)
    warmup = WARMUP_OPS_PER_WORKER * workers.count
    enqueue_noops(db, warmup)
    wait_until_finished(db, workers, warmup, STARTUP_TIMEOUT)


# The measurements


def measure_throughput(
    db: Database, workers: WorkerProcesses, ops: int
) -> tuple[float, float, int]:
    """Returns (wall seconds, seconds spent enqueueing, operations not succeeded)."""
    before, failed_before = finished_count(db)
    start = time.perf_counter()
    enqueue_noops(db, ops)
    enqueued = time.perf_counter()
    wait_until_finished(db, workers, before + ops, timeout=max(120.0, ops / 20))
    wall = time.perf_counter() - start
    _, failed = finished_count(db)
    return wall, enqueued - start, failed - failed_before


def measure_drain(db: Database, workers: WorkerProcesses, ops: int) -> float:
    """Seconds the workers take to finish `ops` operations that all arrive at once."""
    before, _ = finished_count(db)
    start = time.perf_counter()
    bulk_insert_noops(db, ops)
    wait_until_finished(db, workers, before + ops, timeout=max(120.0, ops / 20))
    return time.perf_counter() - start


def measure_idle_latency(db: Database, workers: WorkerProcesses, samples: int) -> list[float]:
    """Enqueue-to-start of lone operations, in ms, from the database's own timestamps."""
    latencies: list[float] = []
    for _ in range(samples):
        time.sleep(random.uniform(0.02, 0.05))
        with db.session() as session:
            operation_id = queue.enqueue(session, kind=NOOP, created_by="bench-latency").id
        deadline = time.monotonic() + 30.0
        while True:
            with db.session(write=False) as session:
                created, started = session.execute(
                    select(Operation.created_at, Operation.started_at).where(
                        Operation.id == operation_id
                    )
                ).one()
            if started is not None:
                latencies.append((started - created).total_seconds() * 1000)
                break
            if time.monotonic() > deadline:
                workers.check_alive()
                raise TimeoutError(f"operation {operation_id} not started after 30s")
            time.sleep(0.002)
    return latencies


def run_one(
    backend: str,
    count: int,
    *,
    ops: int,
    samples: int,
    slots: int | None,
    workdir: Path,
    pg: PgServer,
) -> Result:
    url = fresh_database(backend, workdir, f"queue-{count}", pg)
    db = Database(url)
    try:
        with running_workers(count, url, workdir, slots) as workers:
            started = time.perf_counter()
            wait_until_ready(db, workers)
            say(
                f"  {count} worker(s) up (pids {', '.join(map(str, workers.pids))}) "
                f"in {time.perf_counter() - started:.1f}s"
            )
            wall, enqueue_seconds, failed = measure_throughput(db, workers, ops)
            say(
                f"  throughput: {ops} ops in {wall:.2f}s = {ops / wall:,.0f} ops/s "
                f"(enqueueing alone took {enqueue_seconds:.2f}s = "
                f"{ops / enqueue_seconds:,.0f} ops/s)"
            )
            drain = measure_drain(db, workers, ops)
            say(
                f"  drain: {ops} ops inserted at once, all finished in {drain:.2f}s = "
                f"{ops / drain:,.0f} ops/s"
            )
            latencies = measure_idle_latency(db, workers, samples)
            result = Result(
                backend=backend,
                workers=count,
                ops=ops,
                wall_seconds=wall,
                enqueue_seconds=enqueue_seconds,
                drain_seconds=drain,
                failed=failed,
                latencies_ms=tuple(latencies),
            )
            say(
                f"  idle latency over {samples}: p50 {result.latency(50):.1f} ms, "
                f"p99 {result.latency(99):.1f} ms, max {max(latencies):.1f} ms"
            )
            return result
    finally:
        db.dispose()


# Report


def print_table(results: list[Result], baselines: dict[str, list[tuple[str, float]]]) -> None:
    header = (
        f"{'backend':<10} {'workers':>7} {'ops':>6} {'ops/s':>7} {'goal ops/s':>13} "
        f"{'p50 ms':>6} {'p99 ms':>6} {'goal p99':>10} {'of base':>7} "
        f"{'enq/s':>7} {'drain/s':>7} {'failed':>6}"
    )
    say("")
    say("Durable queue, debug.noop operations, `berth worker` processes")
    say(header)
    say("-" * len(header))
    for result in results:
        goal = GOAL_OPS_PER_SECOND[result.backend]
        ops_ok = "ok" if result.ops_per_second >= goal else "MISS"
        p99 = result.latency(99)
        p99_ok = "ok" if p99 <= GOAL_P99_MS else "MISS"
        reference = baselines.get(result.backend)
        share = f"{result.ops_per_second / reference[0][1]:.0%}" if reference else "-"
        say(
            f"{result.backend:<10} {result.workers:>7} {result.ops:>6} "
            f"{result.ops_per_second:>7,.0f} {f'>= {goal:,.0f} {ops_ok}':>13} "
            f"{result.latency(50):>6.1f} {p99:>6.1f} {f'<= {GOAL_P99_MS:.0f} {p99_ok}':>10} "
            f"{share:>7} {result.enqueue_per_second:>7,.0f} {result.drain_per_second:>7,.0f} "
            f"{result.failed:>6}"
        )
    say(
        "ops/s: first enqueue -> all finished, enqueued with queue.enqueue, "
        f"{ENQUEUE_BATCH} per transaction"
    )
    say("p50/p99: started_at - created_at of lone operations enqueued while the workers idle")
    say("of base: ops/s / the backend's first baseline below; enq/s: the enqueueing alone")
    say("drain/s: the same number of operations bulk-inserted at once, until all finished")
    if baselines:
        say("")
        say("Baseline: single-row INSERT+UPDATE transactions/s from one Python process (Core)")
        for backend, figures in baselines.items():
            for label, value in figures:
                say(f"  {backend:<10} {value:>7,.0f} txn/s  {label}")


def parse_workers(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument(
        "--ops",
        type=int,
        default=None,
        help="operations per throughput run (default: "
        + ", ".join(f"{name} {n}" for name, n in DEFAULT_OPS.items())
        + ")",
    )
    parser.add_argument(
        "--workers", type=parse_workers, default=[1, 2, 4], help="worker process counts (1,2,4)"
    )
    parser.add_argument(
        "--samples", type=int, default=200, help="idle-latency samples per run (200)"
    )
    parser.add_argument(
        "--slots", type=int, default=None, help="BERTH_WORKERS per process (Berth's default)"
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BERTH_BENCH_PG_ADMIN_URL", PG_ADMIN_URL),
        help="libpq URL of a connection (CREATEDB) used to drop/create the database "
        f"--pg-database (env BERTH_BENCH_PG_ADMIN_URL; default {PG_ADMIN_URL})",
    )
    parser.add_argument(
        "--pg-database",
        default=PG_BENCH_DATABASE,
        help=f"the database dropped and created for each run ({PG_BENCH_DATABASE}); a name of "
        "your own when others use the same server",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw-database figures")
    args = parser.parse_args(argv)
    pg = PgServer(args.pg_admin_url, args.pg_database)

    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    results: list[Result] = []
    baselines: dict[str, list[tuple[str, float]]] = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        workdir = Path(tmp)
        # Created once here: several workers starting at once would race to create it.
        load_or_create_key(workdir / "berth.key", may_create=True)
        for backend in backends:
            ops = args.ops or DEFAULT_OPS[backend]
            try:
                if not args.no_baseline:
                    say(f"[{backend}] baseline")
                    baselines[backend] = run_baselines(backend, workdir, pg)
                    for label, value in baselines[backend]:
                        say(f"  {value:,.0f} txn/s  {label}")
                for count in args.workers:
                    say(f"[{backend}] {count} worker process(es), {ops} ops")
                    results.append(
                        run_one(
                            backend,
                            count,
                            ops=ops,
                            samples=args.samples,
                            slots=args.slots,
                            workdir=workdir,
                            pg=pg,
                        )
                    )
            finally:
                if backend == "postgresql":
                    try:
                        drop_pg_database(pg)
                    except psycopg.Error as exc:
                        say(f"  could not drop {pg.database}: {exc}")
    print_table(results, baselines)
    say(f"\n(total run time {time.perf_counter() - began:.0f}s on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: printing, percentiles, ports, CPU readings, and one
`berth serve` subprocess on a fresh SQLite database."""

from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
# The testbed's first engine (scripts/testbed.sh).
DEFAULT_DOCKER_HOST = "unix:///tmp/berth-tb/h1/docker.sock"
API = "/api/v1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except OSError:
        return math.nan, math.nan
    values = [float(value) for value in fields]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    return sum(values) - values[3] - values[4], sum(values)


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How busy all CPUs together were between two `machine_cpu()` readings (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far (/proc/PID/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = text[text.rindex(")") + 2 :].split()
    # Fields 14 and 15 of the file (utime, stime); the list starts at field 3.
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


class BerthServer:
    """One `berth serve` subprocess on a fresh SQLite database, logging to serve.log.

    `settings` are extra BERTH_* variables, e.g. `BERTH_WORKERS="8"`.
    """

    def __init__(
        self, workdir: Path, docker_host: str, *, root: Path = ROOT, **settings: str
    ) -> None:
        self.workdir = workdir
        self.root = root  # the checkout whose `app` runs (another one to compare with this)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = "berth_bench_" + secrets.token_hex(24)
        self.database_url = f"sqlite:///{workdir / 'berth.db'}"
        self.log_path = workdir / "serve.log"
        env = {name: value for name, value in os.environ.items() if not name.startswith("BERTH_")}
        env.update(
            BERTH_DATABASE_URL=self.database_url,
            BERTH_BOOTSTRAP_TOKEN=self.token,
            BERTH_LOG_LEVEL="WARNING",
            DOCKER_HOST=docker_host,
            **settings,
        )
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=self.root,
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

    def wait_ready(self, client: httpx.Client) -> str:
        """Waits for /readyz and for host `local` to be ready; returns that host's id."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if client.get("/readyz").status_code == 200:
                    hosts = client.get(f"{API}/hosts").json()["items"]
                    local = [h for h in hosts if h["name"] == "local"]
                    if local and local[0]["status"] == "ready":
                        return str(local[0]["id"])
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
                say(f"  berth serve pid {process.pid} ignored SIGTERM; killing it")
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

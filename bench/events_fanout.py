"""Many event-stream subscribers against the API's read path, on one `berth serve` process.

For each subscriber count (0 first: the baseline, measured in the same run), N Server-Sent
Events streams are opened from a separate process (so their client CPU is not the load
generator's), a producer queues `debug.noop` operations at a steady rate (three events each:
queued, running, succeeded), and `GET /api/v1/hosts` is driven by concurrent keep-alive clients
for D seconds. Printed per row: read requests/s, p50 and p99 latency, and for the subscribers the
events each received (min/max; every subscriber should see every event) and the delivery lag
(event `at` → received) p50/p99.

    .venv/bin/python -m bench.events_fanout [--subscribers 0,100,500] [--duration 10]
        [--rate 30] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import (
    API,
    DEFAULT_DOCKER_HOST,
    ROOT,
    BerthServer,
    percentile,
    process_cpu_seconds,
    say,
)


async def _subscribe(url: str, token: str, count: int, seconds: float) -> None:
    """Subscriber process: open `count` streams, read for `seconds`, print one JSON line."""
    received = [0] * count
    lags: list[float] = []
    opened = 0
    ready = asyncio.Event()
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(60.0),
        limits=limits,
    ) as client:

        async def one(index: int) -> None:
            nonlocal opened
            async with client.stream("GET", f"{API}/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("retry:"):
                        opened += 1
                        if opened == count:
                            ready.set()
                    elif line.startswith("data: "):
                        received[index] += 1
                        if index % 10 == 0:
                            at = json.loads(line[6:])["at"].replace("Z", "+00:00")
                            lag = datetime.now(UTC) - datetime.fromisoformat(at)
                            lags.append(lag.total_seconds() * 1000)

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.wait_for(ready.wait(), 60)
        print("ready", flush=True)
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        json.dumps(
            {
                "min": min(received),
                "max": max(received),
                "lag_p50": percentile(lags, 50) if lags else 0.0,
                "lag_p99": percentile(lags, 99) if lags else 0.0,
                "client_cpu": time.process_time() / seconds,
            }
        ),
        flush=True,
    )


def _produce(server: BerthServer, rate: float, stop: threading.Event, made: list[int]) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            response = client.post(f"{API}/debug/operations", json={"kind": "debug.noop"})
            if response.status_code == 202:
                made[0] += 1
            next_at += 1 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))


async def _read_load(server: BerthServer, connections: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.headers, timeout=30
    ) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.get(f"{API}/hosts")
                response.raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


def run_round(server: BerthServer, subscribers: int, args: argparse.Namespace) -> dict[str, float]:
    watcher = None
    if subscribers:
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.events_fanout",
                "--subscribe",
                str(subscribers),
                "--url",
                server.base_url,
                "--token",
                server.token,
                "--duration",
                str(args.duration + 2),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "ready"
    stop, made = threading.Event(), [0]
    producer = threading.Thread(target=_produce, args=(server, args.rate, stop, made))
    producer.start()
    time.sleep(1)
    cpu_before = process_cpu_seconds(server.pid)
    latencies = asyncio.run(_read_load(server, args.connections, args.duration))
    server_cpu = process_cpu_seconds(server.pid) - cpu_before
    stop.set()
    producer.join()
    row: dict[str, float] = {
        "subscribers": subscribers,
        "rps": len(latencies) / args.duration,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "operations": made[0],
        "server_cpu": server_cpu / args.duration,
    }
    if watcher is not None:
        out, _ = watcher.communicate(timeout=120)
        row.update(json.loads(out.strip().splitlines()[-1]))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="0,100,500")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="debug.noop operations/s")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--docker-host", default=DEFAULT_DOCKER_HOST)
    parser.add_argument("--subscribe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscribe:
        asyncio.run(_subscribe(args.url, args.token, args.subscribe, args.duration))
        return 0

    with tempfile.TemporaryDirectory(prefix="berth-bench-events-") as tmp:
        server = BerthServer(Path(tmp), args.docker_host, BERTH_ENABLE_DEBUG_OPERATIONS="true")
        server.start()
        try:
            with httpx.Client(base_url=server.base_url, headers=server.headers) as client:
                server.wait_ready(client)
            rows = [
                run_round(server, int(n), args) for n in args.subscribers.split(",") if n.strip()
            ]
        finally:
            server.stop()
    say(
        f"GET /hosts with {args.connections} connections for {args.duration:.0f} s while "
        f"{args.rate:.0f} operations/s ({3 * args.rate:.0f} events/s) are made"
    )
    say(
        "subscribers   req/s    p50 ms   p99 ms   server CPU   events each (min/max)   "
        "lag p50/p99 ms   subscriber-process CPU"
    )
    for row in rows:
        events = (
            f"{int(row['min'])}/{int(row['max'])} of ~{3 * int(row['operations'])}"
            if row["subscribers"]
            else "-"
        )
        lag = f"{row['lag_p50']:.0f}/{row['lag_p99']:.0f}" if row["subscribers"] else "-"
        subscriber_cpu = f"{row['client_cpu']:.2f} cores" if row["subscribers"] else "-"
        say(
            f"{int(row['subscribers']):>11} {row['rps']:>7.0f} {row['p50']:>9.1f} "
            f"{row['p99']:>8.1f}   {row['server_cpu']:>5.2f} cores  {events:<23} {lag:<17} "
            f"{subscriber_cpu}"
        )
    baseline = rows[0]
    for row in rows[1:]:
        say(
            f"{int(row['subscribers'])} subscribers: read throughput "
            f"{row['rps'] / baseline['rps']:.2f}x the baseline, p99 "
            f"{row['p99'] / baseline['p99']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serve a fleet of hollow engines until interrupted.

    .venv/bin/python -m bench.hollow --engines 100 --base-port 30000 --latency-ms 1
    .venv/bin/python -m bench.hollow --engines 10 --socket-dir /tmp/hollow --control-port 29999

Prints one line per engine URL, then `ready`, on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
from pathlib import Path

from bench.hollow.fleet import HollowFleet


async def serve(args: argparse.Namespace) -> None:
    fleet = HollowFleet(
        args.engines,
        base_port=None if args.socket_dir else args.base_port,
        socket_dir=args.socket_dir,
        latency_ms=args.latency_ms,
    )
    await fleet.start(control_port=args.control_port)
    for engine in fleet.engines:
        print(engine.url)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await fleet.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hollow", description=__doc__)
    parser.add_argument("--engines", type=int, default=100)
    parser.add_argument("--base-port", type=int, default=30000, help="engine i listens on +i")
    parser.add_argument("--socket-dir", type=Path, help="unix sockets here instead of ports")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="before every answer")
    parser.add_argument("--control-port", type=int, help="the control API (bench/hollow/fleet.py)")
    args = parser.parse_args()
    if args.socket_dir:
        args.socket_dir.mkdir(parents=True, exist_ok=True)
    # A thousand engines, each with a listening socket and the clients' connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

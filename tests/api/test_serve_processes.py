"""`berth serve --workers N`: N API processes answer on one port, and the background loops run
once, in their supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.workers.models import WorkerProcess
from tests.support import BOOTSTRAP_TOKEN, berth_env, free_port, stop_process, wait_for
from tests.testbed import ROOT


def _api_processes(supervisor: int) -> set[int]:
    """The supervisor's children that uvicorn spawned to serve (not multiprocessing helpers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == supervisor and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _answers(base: str, count: int) -> bool:
    headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    # Long: the survivor may itself still be starting on a busy machine.
    with httpx.Client(base_url=base, timeout=120) as client:
        # A new connection each time, so the kernel hands each one to a process that accepts.
        return all(
            client.get("/api/v1/me", headers={**headers, "Connection": "close"}).status_code == 200
            for _ in range(count)
        )


def test_serve_workers_2_answers_from_two_processes_and_runs_the_loops_once(
    settings: Settings, db: Database
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=berth_env(settings),
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        first = wait_for(
            lambda: len(_api_processes(process.pid)) == 2 and _api_processes(process.pid),
            timeout=180,
            what="two API processes",
        )
        wait_for(lambda: _safe_answers(base), timeout=180, what="the API to answer")

        # Each process in turn is the only one left: the other answers every request alone.
        for victim in sorted(first):
            os.kill(victim, signal.SIGKILL)
            assert _answers(base, 20)
            wait_for(
                partial(_replaced, process.pid, victim),
                timeout=180,
                what="uvicorn to replace the killed API process",
            )
            wait_for(lambda: _safe_answers(base), timeout=180, what="the API to answer")

        # One heartbeat, the supervisor's: the loops and the executor run there only.
        def heartbeats() -> list[int]:
            with db.session(write=False) as session:
                return list(session.execute(select(WorkerProcess.pid)).scalars())

        assert wait_for(heartbeats, timeout=30, what="a worker heartbeat") == [process.pid]
    finally:
        stop_process(process, grace=30)
    assert process.returncode == 0
    assert not _api_processes(process.pid)


def _replaced(supervisor: int, killed: int) -> bool:
    return len(_api_processes(supervisor) - {killed}) == 2


def _safe_answers(base: str) -> bool:
    try:
        return _answers(base, 1)
    except httpx.TransportError:
        return False

"""Separate `berth worker` processes: a worker killed with SIGKILL loses nothing, and several
workers on one database never run the same operation twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.operations import queue
from app.operations.models import Operation, OperationLog
from tests.support import BOOTSTRAP_TOKEN, Api, stop_process, wait_for
from tests.testbed import ROOT, Testbed


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BERTH_DATABASE_URL": settings.database_url,
            "BERTH_KEY_FILE": str(settings.key_file),
            "BERTH_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
            "BERTH_ENABLE_DEBUG_OPERATIONS": "true",
            "BERTH_REGISTER_LOCAL_HOST": "false",
            "BERTH_HOST_PROBE_INTERVAL_SECONDS": "30",
            "BERTH_LEASE_SECONDS": "3",
            "BERTH_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


@contextmanager
def worker_process(
    env: dict[str, str], log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A `berth worker`; with `log`, its log lines go to that file instead of the test's stderr."""
    with ExitStack() as stack:
        output = stack.enter_context(log.open("wb")) if log else None
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=output,
        )
        try:
            yield process
        finally:
            stop_process(process, grace=20)


@pytest.fixture
def enqueuer(
    settings_factory: Callable[..., Settings], db: Database
) -> Iterator[tuple[Api, Settings]]:
    """The API without workers of its own: every operation must be run by a worker process."""
    settings = settings_factory(lease_seconds=3)
    with TestClient(create_app(settings, run_workers=False)) as client:
        yield Api(client, db), settings


def test_operation_survives_kill_9_of_its_worker_and_acts_once(
    enqueuer: tuple[Api, Settings], bed: Testbed
) -> None:
    api, settings = enqueuer
    host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()
    engine = docker.DockerClient(base_url=bed.h1_url)
    operation = api.debug_operation(
        "debug.container", host_id=host["id"], params={"seconds": 4, "image": bed.image}
    )
    label = f"berth.operation={operation['id']}"
    try:
        env = worker_env(settings)
        with worker_process(env) as first:
            wait_for(
                lambda: engine.containers.list(
                    all=True, filters={"label": label, "status": "running"}
                ),
                timeout=30,
                what="the first attempt's container to run",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        running = api.get(f"/operations/{operation['id']}").json()
        assert running["status"] == "running" and running["attempts"] == 1

        with worker_process(env):
            done = api.wait_operation(operation["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["result"]["exit_code"] == 0
        containers = engine.containers.list(all=True, filters={"label": label})
        assert len(containers) == 1, "the retried attempt must reuse the container, not add one"
        assert done["result"]["container_id"] == containers[0].id
        logs = [
            line["message"]
            for line in api.get(f"/operations/{operation['id']}/logs").json()["items"]
        ]
        assert any("from an earlier attempt" in message for message in logs)
    finally:
        for container in engine.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        engine.close()


def test_two_workers_never_run_an_operation_twice(
    enqueuer: tuple[Api, Settings], db: Database, tmp_path: Path
) -> None:
    _, settings = enqueuer
    env = worker_env(settings, BERTH_WORKERS="4", BERTH_LOG_LEVEL="INFO")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with worker_process(env, log=logs[0]), worker_process(env, log=logs[1]):
        # Work enqueued before both workers run could all go to the one that started first.
        wait_for(
            lambda: all("worker running" in log.read_text() for log in logs),
            timeout=60,
            what="both workers to run",
        )
        # 400 x 20 ms on 4 slots keeps one worker alone busy for 2 s, longer than the other's
        # idle poll (1 s at most), so both must take work unless claiming is broken.
        count = 400
        with db.session() as session:
            ids = [
                queue.enqueue(session, kind="debug.sleep", params={"seconds": 0.02}).id
                for _ in range(count)
            ]

        def finished() -> bool:
            with db.session(write=False) as session:
                done = session.execute(
                    select(func.count())
                    .select_from(Operation)
                    .where(Operation.status == "succeeded")
                ).scalar_one()
            return done == count

        wait_for(finished, timeout=120, interval=0.2, what="all operations to finish")

    with db.session(write=False) as session:
        attempts = (
            session.execute(select(Operation.attempts).where(Operation.id.in_(ids))).scalars().all()
        )
        runs: dict[str, list[str]] = {}
        for operation_id, message in session.execute(
            select(OperationLog.operation_id, OperationLog.message)
        ).all():
            runs.setdefault(operation_id, []).append(message)
    assert set(attempts) == {1}
    assert sorted(runs) == sorted(ids)
    assert all(len(messages) == 1 for messages in runs.values()), "an operation ran twice"
    pids = {messages[0].rsplit(" ", 1)[-1] for messages in runs.values()}
    assert len(pids) == 2, f"both workers should have taken work: {pids}"


def test_sigterm_hands_running_work_back(enqueuer: tuple[Api, Settings]) -> None:
    """A worker stopped cleanly mid-operation gives it back at once; another finishes it."""
    api, settings = enqueuer
    operation = api.debug_operation("debug.sleep", params={"seconds": 15})
    env = worker_env(settings, BERTH_LEASE_SECONDS="60")
    with worker_process(env) as first:
        wait_for(
            lambda: api.get(f"/operations/{operation['id']}").json()["status"] == "running",
            timeout=30,
            what="the sleep to start",
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0
    handed_back: dict[str, Any] = api.get(f"/operations/{operation['id']}").json()
    assert handed_back["status"] == "queued"
    assert handed_back["attempts"] == 0
    # With a 60 s lease, only a hand-back lets the next worker start it this soon.
    with worker_process(env):
        done = api.wait_operation(operation["id"], timeout=45)
    assert done["status"] == "succeeded"

"""Several Berth processes on PostgreSQL: 2 `berth serve --no-workers` and 2 `berth worker`.
The leased loops spread over the workers, and when the holder of a rolling service's lease is
killed with SIGKILL, the other worker takes every loop over within 15 s and finishes the
rollout: no replica lost or doubled on the engines."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any

import docker
import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database, utcnow
from app.workers.models import Lease
from tests.support import (
    BOOTSTRAP_TOKEN,
    HEALTHY,
    HTTPD,
    berth_env,
    free_port,
    stop_process,
    wait_for,
)
from tests.testbed import ROOT, Testbed, remove_containers

pytestmark = pytest.mark.postgres_only

REPLICAS = 4


def _held(db: Database) -> dict[str, int]:
    """Every loop lease held now, by the pid of its process (holders start with it)."""
    with db.session(write=False) as session:
        rows = session.execute(
            select(Lease.name, Lease.holder).where(
                Lease.expires_at > utcnow(), ~Lease.name.startswith("member.")
            )
        ).all()
    return {row.name: int(row.holder.split("-", 1)[0]) for row in rows}


@pytest.fixture
def processes(settings: Settings, tmp_path: Any) -> Iterator[tuple[list[str], list[int]]]:
    env = berth_env(
        settings,
        BERTH_RECONCILE_INTERVAL_SECONDS="0.5",
        BERTH_HOST_PROBE_INTERVAL_SECONDS="1",
        BERTH_LEASE_SECONDS="5",
        # The leases counted below are the probe's, the inventory's, the followers' and the
        # service's: the image check (a lease of its own) is off.
        BERTH_IMAGE_CHECK_INTERVAL_SECONDS="0",
    )
    ports = [free_port(), free_port()]
    commands = [
        *(
            [sys.executable, "-m", "app.cli", "serve", "--no-workers", "--port", str(p)]
            for p in ports
        ),
        *([sys.executable, "-m", "app.cli", "worker"] for _ in range(2)),
    ]
    with ExitStack() as stack:
        started = []
        for command in commands:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
            stack.callback(stop_process, process, 30)
            started.append(process)
        yield [f"http://127.0.0.1:{p}/api/v1" for p in ports], [p.pid for p in started[2:]]


def test_loops_spread_over_workers_and_move_within_15s_of_a_kill_9(
    processes: tuple[list[str], list[int]], db: Database, bed: Testbed
) -> None:
    bases, workers = processes
    clients = [
        httpx.Client(base_url=b, headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}, timeout=60)
        for b in bases
    ]
    engines = [docker.DockerClient(base_url=bed.h1_url), docker.DockerClient(base_url=bed.h2_url)]
    service_id = ""

    def up(client: httpx.Client) -> bool:
        try:
            return client.get("/me").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        for client in clients:
            wait_for(partial(up, client), timeout=120, what="berth serve --no-workers")
        first, second = clients
        for name in ("h1", "h2"):
            assert first.post("/hosts", json={"name": name, **bed.host(name)}).status_code == 201
        wait_for(
            lambda: all(h["status"] == "ready" for h in second.get("/hosts").json()["items"]),
            timeout=120,
            what="both hosts ready",
        )
        spec = {
            "image": bed.image,
            "command": HTTPD,
            "replicas": REPLICAS,
            "healthcheck": HEALTHY,
            "update_config": {
                "parallelism": 1,
                "delay_s": 0,
                "order": "start-first",
                "failure_action": "rollback",
                "monitor_s": 2,
            },
        }
        name = f"spread-{uuid.uuid4().hex[:6]}"
        created = first.post("/services", json={"name": name, "spec": spec})
        assert created.status_code == 202, created.text
        service_id = created.json()["service"]["id"]
        wait_for(
            lambda: second.get(f"/services/{service_id}").json()["status"] == "running",
            timeout=180,
            what="the service running",
        )

        host_ids = {h["name"]: h["id"] for h in second.get("/hosts").json()["items"]}
        # Every loop a worker runs here: the probe, the inventory, the change windows, one
        # follower per host and the service's converge. Each worker holds its fair share.
        loops = {
            "hosts.probe",
            "images.inventory",
            "changes.windows",
            *(f"containers.follow.{host_id}" for host_id in host_ids.values()),
            f"service.{service_id}",
        }

        def spread() -> dict[str, int] | None:
            held = _held(db)
            pids = list(held.values())
            fair = all(pids.count(pid) <= math.ceil(len(held) / 2) for pid in workers)
            return held if set(held) == loops and set(pids) == set(workers) and fair else None

        wait_for(spread, timeout=60, what="the loop leases spread over both workers")

        update = first.put(f"/services/{service_id}", json={"spec": {**spec, "env": {"V": "2"}}})
        assert update.status_code == 202, update.text
        wait_for(
            lambda: any(
                t["revision"] == 2 for t in second.get(f"/services/{service_id}").json()["tasks"]
            ),
            timeout=60,
            interval=0.05,
            what="the rollout to start",
        )
        holder = _held(db)[f"service.{service_id}"]
        survivor = next(pid for pid in workers if pid != holder)
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: set(_held(db).values()) == {survivor} and set(_held(db)) == loops,
            timeout=15,
            interval=0.1,
            what="the surviving worker to hold every loop lease",
        )
        taken_over = time.monotonic() - killed_at
        print(f"every loop taken over {taken_over:.1f} s after the kill -9")

        def finished() -> bool:
            svc = second.get(f"/services/{service_id}").json()
            live = [t for t in svc["tasks"] if t["desired_state"] == "running"]
            return (
                svc["status"] == "running"
                and len(live) == REPLICAS
                and {t["revision"] for t in live} == {2}
            )

        wait_for(finished, timeout=180, interval=0.3, what="the rollout to finish")
        done = first.get(f"/operations/{update.json()['operation']['id']}", params={"wait": 60})
        assert done.json()["status"] == "succeeded", done.json()

        def on_engines() -> list[dict[str, str]]:
            return [
                c.labels
                for e in engines
                for c in e.containers.list(filters={"label": f"berth.service={service_id}"})
            ]

        # Neither lost nor doubled: one running container per replica, each of revision 2.
        wait_for(lambda: len(on_engines()) == REPLICAS, timeout=60, what="4 replicas, no more")
        slots = [labels.get("berth.slot") for labels in on_engines()]
        assert len(set(slots)) == REPLICAS, slots
    finally:
        for client in clients:
            client.close()
        for engine in engines:
            if service_id:
                remove_containers(engine, f"berth.service={service_id}")
            engine.close()

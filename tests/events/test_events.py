"""The event stream over real HTTP (uvicorn), as a client sees it: subscribe, lose the
connection half-way, resume from the cursor — every event exactly once, in order."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from app.core.config import Settings
from app.core.db import Database
from app.events import recorder
from app.events.models import Event
from app.events.sequencer import sequence
from app.events.stream import EventHub
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, HTTPD, served, wait_for
from tests.testbed import Testbed, remove_containers

HEADERS = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
Event_ = dict[str, Any]


@pytest.fixture
def h1_cleaned(bed: Testbed) -> Iterator[None]:
    yield
    engine = docker.DockerClient(base_url=bed.h1_url)
    remove_containers(engine, "berth.managed=true")
    engine.close()


@pytest.fixture
def live_app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def live(live_app: FastAPI) -> Iterator[str]:
    with served(live_app) as url:
        yield url


class Subscriber:
    """Reads an event stream in a thread until `done(events)` says so, then disconnects."""

    def __init__(
        self,
        base: str,
        done: Callable[[list[Event_]], bool],
        headers: dict[str, str] = HEADERS,
        **params: str,
    ) -> None:
        self.headers = headers
        self.events: list[Event_] = []
        self.connected = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._done = done
        self._thread = threading.Thread(target=self._run, args=(base, params), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "the stream did not open"

    def _run(self, base: str, params: dict[str, str]) -> None:
        try:
            with httpx.stream(
                "GET", f"{base}/api/v1/events", params=params, headers=self.headers, timeout=60
            ) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    self.connected.set()
                    if line.startswith("data: "):
                        event = orjson.loads(line.removeprefix("data: "))
                        self.events.append(event)
                        if self._done(self.events):
                            return  # leaving the block closes the connection
        except BaseException as exc:
            self.error = exc
        finally:
            self.connected.set()
            self.finished.set()

    def wait(self, timeout: float = 60) -> list[Event_]:
        assert self.finished.wait(timeout), f"stream not done; got {self.events[-5:]}"
        assert self.error is None, self.error
        return self.events


def _cursors(events: list[Event_]) -> list[int]:
    return [int(e["cursor"]) for e in events]


def _has(kind: str, resource_id: str) -> Callable[[list[Event_]], bool]:
    return lambda events: any(e["type"] == kind and e["resource_id"] == resource_id for e in events)


def test_subscribe_disconnect_resume_exactly_once_in_order(
    live: str, bed: Testbed, db: Database, h1_cleaned: None
) -> None:
    client = httpx.Client(base_url=f"{live}/api/v1", headers=HEADERS, timeout=30)
    service_id: list[str] = []

    def half_way(events: list[Event_]) -> bool:
        # Disconnect in the middle: once the service exists and a few more things happened.
        mine = [e for e in events if service_id and e["resource_id"] == service_id[0]]
        return bool(mine) and len(events) >= len(events[: events.index(mine[0])]) + 4

    first = Subscriber(live, half_way)
    host = client.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()
    wait_for(
        lambda: client.get(f"/hosts/{host['id']}").json()["status"] == "ready",
        timeout=30,
        what="host ready",
    )
    created = client.post(
        "/services",
        json={"name": "evt", "spec": {"image": bed.image, "command": HTTPD, "replicas": 1}},
    ).json()
    service_id.append(created["service"]["id"])
    operation = client.get(f"/operations/{created['operation']['id']}", params={"wait": 60})
    assert operation.json()["status"] == "succeeded", operation.text
    before = first.wait()
    last = before[-1]["cursor"]

    assert client.delete(f"/services/{service_id[0]}").status_code == 202
    wait_for(
        lambda: client.get(f"/services/{service_id[0]}").status_code == 404,
        timeout=60,
        what="service deleted",
    )
    deleted = _has("service.deleted", service_id[0])
    after = Subscriber(live, deleted, since=last).wait()
    whole = Subscriber(live, deleted, since=str(int(before[0]["cursor"]) - 1)).wait()

    # Exactly once, in order: the two halves are the whole, cursors strictly increasing.
    assert _cursors(before) + _cursors(after) == _cursors(whole)
    assert _cursors(whole) == sorted(set(_cursors(whole)))

    types = [(e["resource_type"], e["type"]) for e in whole]
    assert ("host", "host.created") in types
    host_states = [e["data"].get("status") for e in whole if e["type"] == "host.updated"]
    assert "ready" in host_states  # a host status change
    mine = [e["type"] for e in whole if e["resource_id"] == service_id[0]]
    assert mine[0] == "service.created" and mine[-1] == "service.deleted"
    assert "service.updated" in mine  # converging → running → removing
    converge = [e["type"] for e in whole if e["resource_id"] == created["operation"]["id"]]
    assert converge == ["operation.queued", "operation.running", "operation.succeeded"]
    containers = {e["type"] for e in whole if e["resource_type"] == "container"}
    assert {"container.created", "container.updated", "container.deleted"} <= containers
    for event in whole:
        assert set(event) == {"cursor", "type", "resource_type", "resource_id", "data", "at"}

    # Filters: one resource's events only, replayed from the same point.
    only = Subscriber(
        live, deleted, since=str(int(before[0]["cursor"]) - 1), resource_id=service_id[0]
    ).wait()
    assert [e["type"] for e in only] == mine
    typed = Subscriber(
        live,
        lambda events: any(e["type"] == "operation.succeeded" for e in events),
        since=str(int(before[0]["cursor"]) - 1),
        resource_type="operation",
        type="operation.succeeded",
    ).wait()
    assert {e["type"] for e in typed} == {"operation.succeeded"}

    # Bad and expired cursors are refused before the stream starts.
    assert client.get("/events", params={"since": "abc"}).status_code == 422
    assert httpx.get(f"{live}/api/v1/events").status_code == 401
    with db.session() as session:
        newest = session.execute(select(func.max(Event.seq))).scalar_one()
        session.execute(delete(Event).where(Event.seq < newest))
    expired = client.get("/events", params={"since": "1"})
    assert expired.status_code == 410
    assert expired.headers["content-type"] == "application/problem+json"
    client.close()


def test_many_subscribers_share_one_reader(live: str, bed: Testbed) -> None:
    """Fifty streams at once: every one sees the same events, and the API still answers."""
    client = httpx.Client(base_url=f"{live}/api/v1", headers=HEADERS, timeout=30)
    marker = "fanout"
    subscribers = [
        Subscriber(live, _has("host.created", marker), resource_type="host") for _ in range(50)
    ]
    started = time.monotonic()
    host = client.post("/hosts", json={"name": marker, "url": bed.h1_url}).json()
    for subscriber in subscribers:
        subscriber._done = _has("host.created", host["id"])
    assert client.get("/hosts").status_code == 200
    for subscriber in subscribers:
        events = subscriber.wait(30)
        assert [e["resource_id"] for e in events if e["type"] == "host.created"] == [host["id"]]
    assert time.monotonic() - started < 30
    client.close()


def test_concurrent_writers_leave_no_gap_for_a_reader(db: Database) -> None:
    """Writers that commit out of order (a late commit after an earlier one's event was read)
    must still be seen by a reader that only ever moves its cursor forward."""
    writers, transactions = 4, 40
    written: list[str] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        rng = random.Random(worker)
        for n in range(transactions):
            with db.transaction() as connection:
                rows = [
                    recorder.row("test.created", "test", f"{worker}-{n}-{k}")
                    for k in range(rng.randint(1, 3))
                ]
                recorder.write(connection, rows)
                time.sleep(rng.random() * 0.01)  # commit late, after others' events
            with lock:
                written.extend(r["resource_id"] for r in rows)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[tuple[int, str]] = []
    cursor = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sequence(db)
        with db.session(write=False) as session:
            rows = session.execute(
                select(Event.seq, Event.resource_id).where(Event.seq > cursor).order_by(Event.seq)
            ).all()
        for seq, resource_id in rows:
            assert seq is not None
            seen.append((seq, resource_id))
            cursor = seq
        if not any(t.is_alive() for t in threads) and not rows and sequence(db) == 0:
            break
        time.sleep(0.002)
    for thread in threads:
        thread.join()
    ids = [resource_id for _, resource_id in seen]
    assert sorted(ids) == sorted(written)  # every event, exactly once
    assert [seq for seq, _ in seen] == sorted({seq for seq, _ in seen})


def test_a_revoked_token_ends_its_stream(live: str, live_app: FastAPI) -> None:
    live_app.state.events.keepalive = 0.3  # ask again after 0.3 s rather than 15 s
    client = httpx.Client(base_url=f"{live}/api/v1", headers=HEADERS, timeout=30)
    token = client.post("/tokens", json={"name": "watcher", "role": "viewer"}).json()
    stream = Subscriber(
        live, lambda _events: False, headers={"Authorization": f"Bearer {token['token']}"}
    )
    assert not stream.finished.wait(1.0)  # open, and kept open
    assert client.delete(f"/tokens/{token['id']}").status_code == 204
    assert stream.finished.wait(10), "the stream outlived its token"
    assert stream.error is None
    client.close()


def test_a_viewer_sees_no_token_events(live: str) -> None:
    admin = httpx.Client(base_url=f"{live}/api/v1", headers=HEADERS, timeout=30)
    viewer = admin.post("/tokens", json={"name": "watcher", "role": "viewer"}).json()
    created = admin.post("/tokens", json={"name": "secret-name", "role": "admin"}).json()
    host = admin.post(
        "/hosts", json={"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True}
    ).json()
    as_viewer = {"Authorization": f"Bearer {viewer['token']}"}
    # Asked for tokens by name, from the start: the filter narrows, never widens.
    seen = Subscriber(live, _has("host.created", host["id"]), headers=as_viewer, since="0").wait()
    assert not [e for e in seen if e["resource_type"] == "token"]
    asked = Subscriber(
        live,
        _has("host.created", host["id"]),
        headers=as_viewer,
        since="0",
        resource_type="token,host",
    ).wait()
    assert [e["resource_type"] for e in asked] == ["host"]
    # An admin still sees them.
    everything = Subscriber(live, _has("token.created", created["id"]), since="0").wait()
    assert any(e["resource_id"] == viewer["id"] for e in everything)
    admin.close()


def test_a_revoked_token_ends_its_quiet_stream_within_a_second(live: str) -> None:
    client = httpx.Client(base_url=f"{live}/api/v1", headers=HEADERS, timeout=30)
    token = client.post("/tokens", json={"name": "watcher", "role": "viewer"}).json()
    stream = Subscriber(
        live, lambda _events: False, headers={"Authorization": f"Bearer {token['token']}"}
    )
    assert not stream.finished.wait(1.0)
    assert client.delete(f"/tokens/{token['id']}").status_code == 204
    revoked = time.monotonic()
    # Nothing is published meanwhile, and the keep-alive is 15 s: only the re-check ends it.
    assert stream.finished.wait(5), "the stream outlived its token"
    assert time.monotonic() - revoked < 2.5
    assert stream.error is None
    client.close()


def test_a_burst_of_commits_wakes_the_hub_once_a_round_and_it_reads_them_all(
    db: Database,
) -> None:
    """Each commit that writes events wakes the hub; in a burst, one wake-up on its way at a
    time (each was a callback and a self-pipe write in the committer), and none is lost: with
    no periodic poll to fall back on, the hub still reads every event of the burst."""
    commits = 50

    async def run() -> int:
        hub = EventHub(db, poll_interval=60, coalesce=0.2)
        await hub.start()
        loop = asyncio.get_running_loop()
        scheduled = 0
        real = loop.call_soon_threadsafe

        def counted(callback: Callable[..., object], *args: object) -> asyncio.Handle:
            nonlocal scheduled
            scheduled += 1
            return real(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]

        def burst() -> None:
            for n in range(commits):
                with db.session() as session:
                    recorder.emit(session, [recorder.row("test.created", "test", str(n))])

        try:
            await asyncio.to_thread(burst)
            deadline = loop.time() + 10
            while True:
                with db.session(write=False) as session:
                    waiting = session.execute(
                        select(func.count()).select_from(Event).where(Event.seq.is_(None))
                    ).scalar_one()
                    newest = session.execute(select(func.max(Event.seq))).scalar_one()
                if waiting == 0 and hub.last_cursor == newest:
                    break
                assert loop.time() < deadline, "the hub missed the burst's last commits"
                await asyncio.sleep(0.05)
        finally:
            await hub.close()
        return scheduled

    scheduled = asyncio.run(run())
    assert 1 <= scheduled < commits / 2

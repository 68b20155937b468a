"""Live container state: a follower per host reads the engine's event stream and re-lists the
host's containers on every (re)connect, so state follows reality within a second or two and a
missed event is repaired by the next re-list. One process follows each host (a lease per host).

Managed containers (labelled `berth.container=<id>`) get their observed state updated; a managed
container that vanished shows `missing`. Containers Berth did not create are listed with
`managed: false` and only ever observed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from app.containers.engine_config import is_newer, not_newer_than, observed
from app.containers.models import Container
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.engine.errors import EngineError, ObjectNotFound
from app.engine.protocol import Engine, EventStream
from app.events import recorder as events
from app.hosts.models import Host
from app.hosts.service import tls_material
from app.workers import leases, wakeups
from app.workers.loops import LoopService

log = logging.getLogger("berth.containers")

_LEASE_SECONDS = 10.0
# A silent event stream is re-opened (and the host re-listed) after this long.
_SILENCE_SECONDS = 30
_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_ACTIONS = {
    "create",
    "start",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "restart",
    "oom",
    "rename",
    "update",
}


def _summary_state(summary: dict[str, Any]) -> dict[str, Any]:
    """State from a `GET /containers/json` entry, without an inspect per container."""
    state = str(summary.get("State", "unknown"))
    status = str(summary.get("Status", ""))
    exit_code = _EXIT_CODE.match(status)
    health = _HEALTH.search(status)
    return {
        "docker_id": summary.get("Id"),
        "state": state,
        "health": None if health is None else health.group(1).replace("health: ", ""),
        "exit_code": int(exit_code.group(1)) if exit_code and state in ("exited", "dead") else None,
    }


def _foreign_spec(summary: dict[str, Any]) -> dict[str, Any]:
    ports = [
        {
            "container_port": int(p["PrivatePort"]),
            "host_port": int(p["PublicPort"]) if p.get("PublicPort") else None,
            "protocol": p.get("Type", "tcp"),
            "host_ip": p.get("IP", "") if p.get("PublicPort") else "",
        }
        for p in summary.get("Ports") or []
    ]
    command = summary.get("Command")
    return {
        "image": str(summary.get("Image", "")),
        "command": [command] if command else None,
        "ports": ports,
    }


def _name(summary: dict[str, Any]) -> str:
    names = summary.get("Names") or [str(summary.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")[:128]


_STATE_COLUMNS = (
    Container.id,
    Container.docker_id,
    Container.managed,
    Container.desired_state,
    Container.state,
    Container.health,
    Container.exit_code,
)


class StateWriter:
    """Applies what an engine says to the containers table of one host."""

    def __init__(self, app: AppContext, host_id: str) -> None:
        self.app = app
        self.host_id = host_id

    def relist(self, engine: Engine) -> None:
        """Compare the engine's list with the stored state (read without a write lock) and
        write only what differs, in one short transaction."""
        now = utcnow()  # when the engine was read: a newer reading already stored wins
        summaries = engine.list_containers()
        with self.app.db.session(write=False) as session:
            stored = session.execute(
                select(*_STATE_COLUMNS).where(Container.host_id == self.host_id)
            ).all()
        managed = {row.id: row for row in stored if row.managed}
        foreign = {row.docker_id: row for row in stored if not row.managed}
        seen: set[str] = set()
        changes: dict[str, dict[str, Any]] = {}
        added: list[Container] = []
        for summary in summaries:
            docker_id = str(summary["Id"])
            seen.add(docker_id)
            labels = summary.get("Labels") or {}
            row = managed.get(str(labels.get("berth.container", ""))) or foreign.get(docker_id)
            state = _summary_state(summary)
            if row is None:
                fresh = self._add_foreign(summary)
                for key, value in state.items():
                    setattr(fresh, key, value)
                fresh.observed_at = now
                added.append(fresh)
            elif any(getattr(row, key) != value for key, value in state.items()):
                changes[row.id] = state
        for row in managed.values():
            vanished = row.docker_id is not None and row.docker_id not in seen
            if vanished and row.desired_state != "removed" and row.state != "missing":
                changes[row.id] = {"state": "missing", "health": None}
        gone = [docker_id for docker_id in foreign if docker_id not in seen]
        if not (changes or added or gone):
            return
        with self.app.db.session() as session:
            written = {}
            for row_id, values in changes.items():
                if session.execute(
                    update(Container)
                    .where(Container.id == row_id, not_newer_than(now))
                    .values(**values, observed_at=now)
                    .returning(Container.id)
                    .execution_options(synchronize_session=False)
                ).scalar_one_or_none():
                    written[row_id] = values
            session.add_all(added)
            if gone:
                removed = session.execute(
                    delete(Container)
                    .where(
                        Container.host_id == self.host_id,
                        Container.managed.is_(False),
                        Container.docker_id.in_(gone),
                    )
                    .returning(Container.id, Container.name)
                ).all()
                events.emit(
                    session,
                    (
                        events.row("container.deleted", "container", r.id, {"name": r.name})
                        for r in removed
                    ),
                )
            # Written with Core for speed, so the event stream hears of them here.
            events.emit(
                session,
                (
                    events.row("container.updated", "container", row_id, values)
                    for row_id, values in written.items()
                ),
            )
        if any(managed.get(row_id) is not None for row_id in written):
            wakeups.notify(wakeups.SERVICES)

    def _add_foreign(self, summary: dict[str, Any]) -> Container:
        spec = _foreign_spec(summary)
        labels = {str(k): str(v) for k, v in (summary.get("Labels") or {}).items()}
        return Container(
            id=new_id(),
            name=_name(summary),
            host_id=self.host_id,
            spec=spec,
            image=spec["image"][:512],
            labels=labels,
            managed=False,
            desired_state="running",
            state="unknown",
            created_at=utcnow(),
            version=1,
        )

    def apply_event(self, engine: Engine, event: dict[str, Any]) -> None:
        """Re-read one container after an event about it (level-triggered: the event only says
        where to look)."""
        actor = event.get("Actor") or {}
        docker_id = str(event.get("id") or actor.get("ID", ""))
        if not docker_id:
            return
        action = str(event.get("Action", "")).split(":")[0]
        if action == "create" and (actor.get("Attributes") or {}).get("berth.container"):
            # One of Berth's own, just made by a create operation, which records it; a
            # re-list repairs anything that operation does not live to record.
            return
        now = utcnow()  # when the engine was read: a newer reading already stored wins
        try:
            details = engine.inspect_container(docker_id)
        except ObjectNotFound:
            self._vanished(docker_id, now)
            return
        labels = (details.get("Config") or {}).get("Labels") or {}
        state = observed(details)
        with self.app.db.session() as session:
            row = None
            berth_id = labels.get("berth.container")
            if berth_id:
                row = session.get(Container, berth_id, with_for_update=True)
                if row is not None and (row.host_id != self.host_id or not row.managed):
                    row = None
            if row is None:
                row = session.execute(
                    select(Container)
                    .where(Container.host_id == self.host_id, Container.docker_id == docker_id)
                    .with_for_update()
                ).scalar_one_or_none()
            if row is not None and is_newer(row, docker_id, now):
                return  # an operation read this container after us and stored what it saw
            if row is None:
                if berth_id and session.get(Container, berth_id) is not None:
                    return  # ours, just created: the create operation records it
                summary = {
                    "Id": docker_id,
                    "Names": [details.get("Name", docker_id[:12])],
                    "Image": (details.get("Config") or {}).get("Image", ""),
                    "Labels": labels,
                }
                row = self._add_foreign(summary)
                session.add(row)
            changed = any(getattr(row, key) != value for key, value in state.items())
            for key, value in state.items():
                setattr(row, key, value)
            row.observed_at = now
            replica = row.service_id is not None
        if replica and changed:
            wakeups.notify(wakeups.SERVICES)

    def _vanished(self, docker_id: str, read_at: datetime) -> None:
        with self.app.db.session() as session:
            for row in session.execute(
                select(Container)
                .where(Container.host_id == self.host_id, Container.docker_id == docker_id)
                .with_for_update()
            ).scalars():
                if not row.managed:
                    session.delete(row)
                elif row.desired_state != "removed" and not is_newer(row, docker_id, read_at):
                    row.state, row.health, row.observed_at = "missing", None, read_at
        wakeups.notify(wakeups.SERVICES)


class HostFollower:
    """Follows one host's events in a thread until stopped."""

    def __init__(self, app: AppContext, host_id: str) -> None:
        self.app = app
        self.host_id = host_id
        self.writer = StateWriter(app, host_id)
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"berth-follow-{host_id[-6:]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            # Closing a stream that already broke may raise; it is closed either way.
            with contextlib.suppress(Exception):
                stream.close()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _engine(self) -> Engine | None:
        with self.app.db.session(write=False) as session:
            row = session.execute(
                select(Host.url, Host.tls_encrypted, Host.insecure).where(Host.id == self.host_id)
            ).first()
        if row is None:
            return None
        tls = tls_material(self.app.cipher, row.tls_encrypted)
        return self.app.engine_factory.client(
            row.url, tls=tls, insecure=row.insecure, timeout=_SILENCE_SECONDS
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            engine = None
            try:
                engine = self._engine()
                if engine is None:
                    return
                # Open the stream first, then re-list: nothing can happen in between unseen.
                self._stream = engine.events(since=int(time.time()) - 1)
                self.writer.relist(engine)
                for event in self._stream:
                    if self._stop.is_set():
                        break
                    if event.get("Type") == "container" and event.get("Action", "").split(":")[
                        0
                    ] in _ACTIONS | {"health_status"}:
                        self.writer.apply_event(engine, event)
            except (EngineError, OSError, ValueError) as exc:
                log.debug(
                    "event stream ended; re-listing",
                    extra={"host_id": self.host_id, "error": str(exc)},
                )
            except Exception:
                log.exception("container follower failed", extra={"host_id": self.host_id})
            finally:
                if engine is not None:
                    engine.close()
            self._stop.wait(1.0)


class ContainerWatcher(LoopService):
    """Starts and stops a follower per host, holding a lease per host so that one process
    follows each host; renews the leases every round."""

    name = "container-watcher"

    def __init__(self, app: AppContext) -> None:
        super().__init__(2.0)
        self.app = app
        self.holder = leases.member_holder("watcher")
        self.followers: dict[str, HostFollower] = {}

    def run_once(self) -> None:
        with self.app.db.session(write=False) as session:
            hosts = set(session.execute(select(Host.id).where(Host.status == "ready")).scalars())
        for host_id in list(self.followers):
            follower = self.followers[host_id]
            if host_id not in hosts or not follower.alive:
                follower.stop()
                del self.followers[host_id]
        for host_id in hosts:
            lease = f"containers.follow.{host_id}"
            if (
                leases.acquire(self.app.db, lease, holder=self.holder, ttl_seconds=_LEASE_SECONDS)
                is None
            ):
                if host_id in self.followers:
                    self.followers.pop(host_id).stop()
                continue
            if host_id not in self.followers:
                follower = HostFollower(self.app, host_id)
                follower.start()
                self.followers[host_id] = follower

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        for follower in self.followers.values():
            follower.stop()
        # Wait for them: a follower mid re-list must not write after its process stopped.
        for host_id, follower in self.followers.items():
            follower.join(timeout)
            leases.release(self.app.db, f"containers.follow.{host_id}", holder=self.holder)
        self.followers.clear()

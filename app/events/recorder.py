"""Records every change of a tracked resource as an event, in the transaction that makes it.

ORM changes are captured after each flush (what was created, which watched fields changed,
what was deleted) and written just before commit; code that changes rows with Core statements
adds its events with `emit` (ORM session) or `write` (Core connection). Sensitive columns are
never tracked: each resource names the fields its events carry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.events.models import Event

_PENDING = "berth.events"


def _own_project(obj: Any) -> str | None:
    return getattr(obj, "project_id", None)


@dataclass(frozen=True)
class Tracked:
    resource_type: str
    fields: tuple[str, ...]
    # A status-like field whose change names the event (operation.succeeded, ...).
    state_field: str | None = None
    # The project a resource's events belong to, for readers limited to some projects.
    project_of: Callable[[Any], str | None] = _own_project

    def event(self, verb: str, obj: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {
            **row(f"{self.resource_type}.{verb}", self.resource_type, obj.id, data),
            "project_id": self.project_of(obj),
        }


_tracked: dict[type[Any], Tracked] = {}
# resource type -> its model, for the types whose rows belong to a project (`project_id`).
_scoped: dict[str, Any] = {}
# Called after a commit that wrote events: wakes this process's stream at once.
_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def track(
    model: type[Any],
    resource_type: str,
    *fields: str,
    state: str | None = None,
    project_of: Callable[[Any], str | None] = _own_project,
) -> None:
    """Record `model`'s changes as `<resource_type>.<verb>` events carrying `fields`. Each domain
    calls it beside the model, in its models.py: whatever a process imported, if it can write
    the model it records the model's events. An event belongs to the project `project_of`
    names (by default the row's `project_id`; none for a model without one)."""
    _tracked[model] = Tracked(resource_type, fields, state, project_of)
    if hasattr(model, "project_id"):
        _scoped[resource_type] = model


def project_scoped_types() -> frozenset[str]:
    """The resource types whose events belong to a project: one of them without a project (a
    row gone before its event was written) is shown to admins only."""
    return frozenset(_scoped)


def on_commit(listener: Callable[[], None]) -> Callable[[], None]:
    """Call `listener` after every local commit that wrote events; returns an unsubscribe."""
    with _listeners_lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def notify_listeners() -> None:
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def row(
    type_: str, resource_type: str, resource_id: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": type_,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "data": data or {},
    }


def emit(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Add events to the session's transaction (for changes made with Core statements)."""
    session.info.setdefault(_PENDING, []).extend(rows)


def write(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert events in the caller's transaction; the sequencer places them once committed."""
    if not rows:
        return
    now = utcnow()
    projects = _projects(connection, rows)
    connection.execute(
        insert(Event),
        [
            {
                **r,
                "at": now,
                "project_id": r.get("project_id")
                or projects.get((r["resource_type"], r["resource_id"])),
            }
            for r in rows
        ],
    )


def _projects(connection: Connection, rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The projects of the rows' resources that their writer did not name (events written
    with Core statements, as the operation queue's): one read per resource type."""
    missing: dict[str, set[str]] = {}
    for r in rows:
        if r.get("project_id") is None and r["resource_type"] in _scoped:
            missing.setdefault(r["resource_type"], set()).add(r["resource_id"])
    found: dict[tuple[str, str], str] = {}
    for resource_type, ids in missing.items():
        model = _scoped[resource_type]
        for resource_id, project_id in connection.execute(
            select(model.id, model.project_id).where(model.id.in_(sorted(ids)))
        ):
            found[(resource_type, resource_id)] = project_id
    return found


def _fields(obj: Any, tracked: Tracked) -> dict[str, Any]:
    return {name: _json(getattr(obj, name)) for name in tracked.fields}


def _json(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _changed(obj: Any, tracked: Tracked) -> dict[str, Any]:
    state = inspect(obj)
    changed = {}
    for name in tracked.fields:
        history = state.attrs[name].history
        if not history.added:
            continue
        before = history.deleted[0] if history.deleted else None
        after = history.added[0]
        if before != after or not history.deleted:
            changed[name] = _json(after)
    return changed


@event.listens_for(Session, "after_flush")
def _capture(session: Session, _context: Any) -> None:
    if not _tracked:
        return
    captured: list[dict[str, Any]] = []
    for obj in session.new:
        tracked = _tracked.get(type(obj))
        if tracked is not None:
            data = _fields(obj, tracked)
            verb = str(data[tracked.state_field]) if tracked.state_field else "created"
            captured.append(tracked.event(verb, obj, data))
    for obj in session.dirty:
        tracked = _tracked.get(type(obj))
        if tracked is None or obj in session.deleted:
            continue
        changed = _changed(obj, tracked)
        if not changed:
            continue
        verb = "updated"
        if tracked.state_field and tracked.state_field in changed:
            verb = str(changed[tracked.state_field])
        if "version" in tracked.fields:
            changed["version"] = obj.version
        captured.append(tracked.event(verb, obj, changed))
    for obj in session.deleted:
        tracked = _tracked.get(type(obj))
        if tracked is not None:
            data = {"name": obj.name} if "name" in tracked.fields else {}
            captured.append(tracked.event("deleted", obj, data))
    if captured:
        emit(session, captured)


def _collapse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resource made and removed again in one transaction never existed for anyone else."""

    def keys(verb: str) -> set[tuple[str, str]]:
        return {(r["resource_type"], r["resource_id"]) for r in rows if r["type"].endswith(verb)}

    transient = keys(".created") & keys(".deleted")
    if not transient:
        return rows
    return [r for r in rows if (r["resource_type"], r["resource_id"]) not in transient]


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    if session.new or session.dirty or session.deleted:
        session.flush()
    pending = session.info.pop(_PENDING, None)
    if pending:
        write(session.connection(), _collapse(pending))
        session.info["berth.events_written"] = True


def changed(session: Session) -> bool:
    """Whether this transaction changed a tracked resource (its events are pending or were
    written), whichever before_commit hook asks first."""
    return bool(session.info.get(_PENDING)) or bool(session.info.get("berth.events_written"))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop("berth.events_written", False):
        notify_listeners()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop("berth.events_written", None)

"""Change requests: submitted in place of a protected project's writes, approved or rejected
by another principal, applied as their author (now, or when the project's window opens)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import Page, paginate
from app.changes import clock, kinds
from app.changes.models import ChangeRequest, ChangeState
from app.changes.schemas import ChangeRead
from app.core.config import Settings
from app.core.errors import BerthError, Conflict, Forbidden
from app.core.lookup import get_or_404
from app.projects import windows
from app.projects.models import Project
from app.security.crypto import Cipher
from app.stacks import releases

_WINDOWS = TypeAdapter(list[windows.Window])


class WindowClosed(Conflict):
    """An approval a project refuses outside its change windows (`outside_window: refuse`)."""

    kind = "outside-change-window"


@dataclass(frozen=True)
class Author:
    """Who submits or decides: a token, by id and as the audit names it."""

    token_id: str
    actor: str


def project_windows(project: Project) -> list[windows.Window]:
    return _WINDOWS.validate_python(project.windows or [])


def get(session: Session, *, change_id: str, for_update: bool = False) -> ChangeRequest:
    return get_or_404(session, ChangeRequest, change_id, what="change", for_update=for_update)


def _shown(change: ChangeRequest) -> dict[str, Any]:
    """The payload as a read shows it: a stack's secret-bearing variables masked, as its
    releases keep them (a secret's value is never in the payload at all)."""
    variables = change.payload.get("variables")
    if change.target_type != "stacks" or not isinstance(variables, dict):
        return change.payload
    return {**change.payload, "variables": releases.masked(variables)}


def to_read(change: ChangeRequest, project_name: str) -> ChangeRead:
    return ChangeRead(
        id=change.id,
        project=project_name,
        kind=change.kind,
        target=f"{change.target_type}/{change.target_id}" if change.target_id else None,
        target_name=change.target_name,
        payload=_shown(change),
        plan=change.plan,
        state=ChangeState(change.state),
        author=change.author,
        approver=change.approver,
        reason=change.reason,
        break_glass=change.break_glass,
        error=change.error,
        operations=change.operations,
        created_at=change.created_at,
        expires_at=change.expires_at,
        decided_at=change.decided_at,
        not_before=change.not_before,
        applied_at=change.applied_at,
        version=change.version,
    )


def _names(session: Session, project_ids: Collection[str]) -> dict[str, str]:
    rows = session.execute(select(Project.id, Project.name).where(Project.id.in_(project_ids)))
    return {row.id: row.name for row in rows}


def to_reads(session: Session, changes: Sequence[ChangeRequest]) -> list[ChangeRead]:
    names = _names(session, {c.project_id for c in changes})
    return [to_read(change, names[change.project_id]) for change in changes]


def read(session: Session, *, change: ChangeRequest) -> ChangeRead:
    return to_reads(session, [change])[0]


def read_page(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    readable: frozenset[str] | None,
    state: ChangeState | None = None,
    project: str | None = None,
) -> Page[ChangeRead]:
    """Oldest first, as every list; only the projects in `readable` (None: every project),
    and of those the one named `project`, if given."""
    statement = select(ChangeRequest)
    if readable is not None:
        statement = statement.where(ChangeRequest.project_id.in_(readable))
    if state is not None:
        statement = statement.where(ChangeRequest.state == state)
    if project is not None:
        named = select(Project.id).where(Project.name == project).scalar_subquery()
        statement = statement.where(ChangeRequest.project_id == named)
    rows, next_cursor = paginate(session, statement, ChangeRequest.id, limit=limit, cursor=cursor)
    return Page(items=to_reads(session, rows), next_cursor=next_cursor)


def open_image_updates(session: Session, *, service_id: str) -> set[str]:
    """The digests of the automatic updates of a service that still wait or will apply."""
    rows = session.execute(
        select(ChangeRequest.payload).where(
            ChangeRequest.kind == kinds.IMAGE_UPDATE,
            ChangeRequest.target_id == service_id,
            ChangeRequest.state.in_(
                [ChangeState.PENDING, ChangeState.APPROVED, ChangeState.WAITING_WINDOW]
            ),
        )
    ).scalars()
    return {payload["digest"] for payload in rows}


def submit(
    session: Session,
    *,
    kind: str,
    project_id: str,
    target_id: str | None,
    target_name: str | None,
    payload: dict[str, Any],
    value: str | None,
    if_match: str | None,
    author: Author,
    settings: Settings,
    cipher: Cipher,
) -> ChangeRequest:
    """A held change and its plan. Planning checks what the direct route would (the spec, the
    Compose file, the target's existence), so a change that cannot apply is refused now, not
    after someone approved it."""
    spec = kinds.get(kind)
    now = clock.now()
    change = ChangeRequest(
        project_id=project_id,
        kind=kind,
        target_type=spec.target_type,
        target_id=target_id,
        target_name=target_name,
        payload=payload,
        value_encrypted=None if value is None else cipher.encrypt(value),
        if_match=if_match,
        state=ChangeState.PENDING,
        author_token_id=author.token_id,
        author=author.actor,
        operations=[],
        created_at=now,
        expires_at=now + timedelta(seconds=settings.change_request_ttl_seconds),
        version=1,
    )
    change.plan = spec.plan(session, kinds.Job(change, settings, cipher))
    session.add(change)
    session.flush()
    return change


def _decided(change: ChangeRequest, state: ChangeState, by: Author, now: datetime) -> None:
    change.state = state
    change.approver_token_id = by.token_id
    change.approver = by.actor
    change.decided_at = now
    change.version += 1


def _answerable(change: ChangeRequest, now: datetime, *states: ChangeState) -> None:
    """Refuse an answer to a change not in one of `states`, or past its TTL: the loop closes
    it, but an answer must not depend on the loop having run."""
    if change.state == ChangeState.PENDING and change.expires_at <= now:
        raise Conflict(f"change {change.id} expired at {change.expires_at:%Y-%m-%dT%H:%MZ}")
    if change.state not in states:
        raise Conflict(
            f"change {change.id} is {change.state}; only {' or '.join(states)} ones are answered"
        )


def _not_the_author(change: ChangeRequest, by: Author) -> None:
    if change.author_token_id == by.token_id:
        raise Forbidden(
            f"change {change.id} was submitted by this token ({change.author}): another "
            "principal with the approver role must approve or reject it (four eyes)"
        )


def approve(
    session: Session,
    *,
    change: ChangeRequest,
    approver: Author,
    break_glass: str | None,
    settings: Settings,
    cipher: Cipher,
) -> str:
    """Apply the change as its author now, or, outside the project's windows, wait for the
    next one (`not_before`) or refuse, as the project says. Break glass skips the windows.
    Returns the resource the approval's audit entry names."""
    now = clock.now()
    _answerable(change, now, ChangeState.PENDING)
    _not_the_author(change, approver)
    project = session.get_one(Project, change.project_id)
    listed = project_windows(project)
    opens = windows.opening(listed, now) if listed and break_glass is None else now
    if opens != now:
        if project.outside_window == "refuse":
            raise WindowClosed(
                f"project {project.name!r} takes changes only within its windows "
                f"({windows.describe(listed)}); the next opens at {opens:%Y-%m-%dT%H:%MZ}. "
                "Approve it then, or break glass."
            )
        _decided(change, ChangeState.WAITING_WINDOW, approver, now)
        change.not_before = opens
        return f"changes/{change.id}"
    _decided(change, ChangeState.APPROVED, approver, now)
    change.break_glass = break_glass
    return apply(session, change=change, settings=settings, cipher=cipher)


def reject(session: Session, *, change: ChangeRequest, approver: Author, reason: str) -> None:
    """Close the change unapplied; one waiting for its window can still be called off."""
    _answerable(change, clock.now(), ChangeState.PENDING, ChangeState.WAITING_WINDOW)
    _not_the_author(change, approver)
    _decided(change, ChangeState.REJECTED, approver, clock.now())
    change.reason = reason


def apply(session: Session, *, change: ChangeRequest, settings: Settings, cipher: Cipher) -> str:
    """Run the approved change through its kind, as its author. A change the service function
    refuses (the name was taken since, the target changed) fails on its own, in a savepoint:
    the request records why, and nothing of the change is kept. Returns the resource the
    audit names."""
    kind = kinds.get(change.kind)
    try:
        with session.begin_nested():
            applied = kind.apply(session, kinds.Job(change, settings, cipher))
    except BerthError as exc:
        change.state = ChangeState.FAILED
        change.error = exc.detail
        change.version += 1
        return f"changes/{change.id}"
    change.state = ChangeState.APPLIED
    change.operations = applied.operations
    change.applied_at = clock.now()
    change.version += 1
    return applied.resource


def expire(session: Session, *, now: datetime) -> list[ChangeRequest]:
    """Close the pending requests nobody answered in time."""
    due = session.execute(
        select(ChangeRequest)
        .where(ChangeRequest.state == ChangeState.PENDING, ChangeRequest.expires_at <= now)
        .order_by(ChangeRequest.id)
        .limit(100)
        .with_for_update(skip_locked=True)
    ).scalars()
    closed = list(due)
    for change in closed:
        change.state = ChangeState.EXPIRED
        change.version += 1
    return closed


def due_ids(session: Session, *, now: datetime) -> list[str]:
    """The approved changes whose window has opened."""
    return list(
        session.execute(
            select(ChangeRequest.id)
            .where(
                ChangeRequest.state == ChangeState.WAITING_WINDOW,
                ChangeRequest.not_before <= now,
            )
            .order_by(ChangeRequest.not_before, ChangeRequest.id)
            .limit(100)
        ).scalars()
    )


def apply_waiting(
    session: Session, *, change_id: str, now: datetime, settings: Settings, cipher: Cipher
) -> str | None:
    """Apply one change that waited for its window, if it still waits and the window is open
    (the project's windows may have changed meanwhile: then it waits for the new next one).
    Returns the resource applied, or None."""
    change = get(session, change_id=change_id, for_update=True)
    if change.state != ChangeState.WAITING_WINDOW:
        return None
    listed = project_windows(session.get_one(Project, change.project_id))
    opens = windows.opening(listed, now) if listed else now
    if opens != now:
        change.not_before = opens
        change.version += 1
        return None
    change.state = ChangeState.APPROVED
    return apply(session, change=change, settings=settings, cipher=cipher)

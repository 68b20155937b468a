from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.api.deps import Principal, Viewer, while_valid
from app.api.paths import API_PREFIX
from app.core.errors import BerthError, Invalid
from app.events.recorder import project_scoped_types
from app.events.stream import CursorExpired, EventHub, Filter
from app.security.roles import Role

router = APIRouter(prefix=f"{API_PREFIX}/events", tags=["events"])

# The role that may read each resource type (as its GET routes require): a stream shows a
# subscriber only the events of what it could read anyway. A type not named here (a new one)
# is admin-only until someone decides otherwise.
READ_ROLE: dict[str, Role] = {
    "container": Role.viewer,
    "host": Role.viewer,
    "image": Role.viewer,
    "operation": Role.viewer,
    "registry": Role.viewer,
    "service": Role.viewer,
    "stack": Role.viewer,
    "secret": Role.admin,
    "token": Role.admin,
    "audit": Role.admin,
}


def readable(principal: Principal) -> frozenset[str] | None:
    """The resource types whose events `principal` may see; None for all (an admin)."""
    if principal.role is Role.admin:
        return None
    return frozenset(kind for kind, role in READ_ROLE.items() if principal.role.allows(role))


_CSV = Annotated[str | None, Query(max_length=2000)]


class Gone(BerthError):
    status, kind = 410, "cursor-expired"


def _cursor(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19:
        raise Invalid(
            f"{field}: a cursor is the decimal `cursor` of an event",
            errors=[{"loc": field, "msg": "not a cursor"}],
        )
    return int(value)


def _set(value: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


@router.get(
    "",
    summary="Server-Sent Events: every change of every resource and operation",
    description="Each message is `id: <cursor>`, `event: <type>` and `data: {cursor, type, "
    "resource_type, resource_id, data, at}`. Types are `<resource_type>.created|updated|"
    "deleted`, and `operation.<status>` for operations. Resume after a disconnect with "
    "`?since=<cursor>` or the `Last-Event-ID` header: every later event arrives exactly once, "
    "in order. Without either, the stream starts with the next event; `since=0` replays all "
    "that are kept (BERTH_EVENT_RETENTION_HOURS). A cursor older than that → 410. Filters take "
    "comma-separated values. A comment line is sent every 15 s while nothing happens. A token "
    "revoked while its stream is open ends the stream within about a second. A viewer or "
    "operator sees only the events of resource types it may read (not tokens or secrets), "
    "and of those in projects only the events of the projects it may read.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        410: {"description": "The cursor is older than the events kept"},
    },
)
async def stream_events(
    request: Request,
    principal: Viewer,
    since: Annotated[str | None, Query(max_length=20)] = None,
    resource_type: _CSV = None,
    resource_id: _CSV = None,
    type: _CSV = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    hub: EventHub = request.app.state.events
    cursor = _cursor(since, "query.since")
    if cursor is None:
        cursor = _cursor(last_event_id, "header.last-event-id")
    if cursor is not None:
        try:
            await hub.check_cursor(cursor)
        except CursorExpired as exc:
            raise Gone(str(exc)) from exc
    if cursor is None:
        cursor = hub.last_cursor  # "from now": fixed before the answer starts, not after
    matches = Filter(
        _set(resource_type),
        _set(resource_id),
        _set(type),
        readable(principal),
        projects=principal.readable_projects(),
        scoped=project_scoped_types(),
    )

    async def messages() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        # A token revoked (or expired) while its stream is open ends the stream within a second.
        async for chunk in while_valid(request, hub.subscribe(cursor, matches)):
            if chunk:
                yield chunk

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

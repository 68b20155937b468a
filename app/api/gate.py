"""The hold a protected project puts on writes to its services, stacks and secrets. The
change requests that hold them sit above the routers that are held, so create_app hands the
gate in (`app.state.changes`; app/changes/gate.py implements it) instead of those routers
importing it."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple, Protocol

from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import Principal, require_somewhere
from app.security.roles import ProjectRole

# Who answers change requests: an approver in some project here, in the change's in the route
# (of the global roles, only an admin is one everywhere).
Approver = Annotated[Principal, require_somewhere(ProjectRole.approver)]

# A global admin's direct write in a protected project: applied at once, flagged in the audit.
BREAK_GLASS_HEADER = "X-Berth-Break-Glass"


class ChangeGate(Protocol):
    def hold(
        self,
        session: Session,
        *,
        request: Request,
        principal: Principal,
        kind: str,
        payload: dict[str, Any],
        target_id: str | None = None,
        project_id: str | None = None,
        value: str | None = None,
        files: bool = False,
    ) -> Response | None:
        """The 202 answer of a change request when the write's project is protected (and no
        admin broke glass), else None: the route goes ahead. Called once the route has checked
        the caller's role. `payload` is the body as submitted, `target_id` the object changed
        or, for a create, `project_id` the project it creates in; `value` a secret's value
        (kept encrypted), `files` whether the request uploaded files a change request does not
        keep (refused in a protected project)."""
        ...


class Held(NamedTuple):
    """How a route's write is held in a protected project: its gate, the change's kind, the
    body as submitted."""

    gate: ChangeGate
    kind: str
    payload: dict[str, Any]


# async: a plain def dependency would cost a thread hop per request (see deps.py).
async def _gate(request: Request) -> ChangeGate:
    gate: ChangeGate = request.app.state.changes
    return gate


Gate = Annotated[ChangeGate, Depends(_gate)]


# The OpenAPI answer a held route documents besides its own.
HELD: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted; in a protected project, the change request (`ChangeRead`, "
        "`Location: /api/v1/changes/{id}`) that holds the write until an approver approves it"
    }
}

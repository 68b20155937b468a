"""The gate the services, stacks and secrets routers call before a write (app/api/gate.py):
in a protected project the write becomes a change request, unless a global admin breaks
glass."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.api.deps import Principal, set_audit_resource
from app.api.gate import BREAK_GLASS_HEADER
from app.api.paths import API_PREFIX
from app.changes import kinds
from app.changes import service as changes
from app.core.context import AppContext
from app.core.errors import Forbidden, Invalid
from app.core.lookup import get_or_404
from app.projects.models import Project
from app.secrets.models import Secret
from app.security.roles import Role
from app.services import image_updates
from app.services.models import Service
from app.stacks.models import Stack

# The author of the changes Berth submits itself: no token has this id, so any approver may
# answer them.
SYSTEM_AUTHOR_ID = "system"

_TARGETS: dict[str, type[Service | Stack | Secret]] = {
    "services": Service,
    "stacks": Stack,
    "secrets": Secret,
}


def break_glass(request: Request, principal: Principal) -> str | None:
    """The reason a global admin gave to act at once in a protected project, if any; noted
    for the request's audit entry."""
    header = request.headers.get(BREAK_GLASS_HEADER)
    if header is None:
        return None
    if principal.role is not Role.admin:
        raise Forbidden(f"only a global admin may break glass ({BREAK_GLASS_HEADER})")
    reason = header.strip()
    if not reason:
        raise Invalid.listing(
            "breaking glass needs a reason",
            [{"loc": f"header.{BREAK_GLASS_HEADER}", "msg": "give the reason"}],
        )
    request.state.audit_break_glass = reason
    return reason


def change_location(change_id: str) -> str:
    return f"{API_PREFIX}/changes/{change_id}"


class ChangeHold:
    """Implements app.api.gate.ChangeGate."""

    def __init__(self, context: AppContext) -> None:
        self.context = context

    def _project(self, session: Session, kind: str, target_id: str | None) -> Project:
        """The project of the object a write changes."""
        model = _TARGETS[kinds.get(kind).target_type]
        what = model.__tablename__.removesuffix("s")
        target = get_or_404(session, model, target_id or "", what=what)
        return session.get_one(Project, target.project_id)

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
        reason = break_glass(request, principal)
        if project_id is not None:
            project = session.get_one(Project, project_id)
        else:
            project = self._project(session, kind, target_id)
        if not project.protected or reason is not None:
            return None
        if files:
            raise Invalid.listing(
                f"project {project.name!r} is protected: its changes wait for an approver, "
                "who approves them as JSON",
                [{"loc": "body", "msg": "send the Compose file as JSON, without uploads"}],
            )
        change = changes.submit(
            session,
            kind=kind,
            project_id=project.id,
            target_id=target_id,
            target_name=payload.get("name"),
            payload=payload,
            value=value,
            if_match=request.headers.get("if-match"),
            author=changes.Author(principal.token_id, principal.actor),
            settings=self.context.settings,
            cipher=self.context.cipher,
        )
        set_audit_resource(request, f"changes/{change.id}")
        request.state.audit_status = 202
        body = changes.to_read(change, project.name)
        return JSONResponse(
            body.model_dump(mode="json"),
            status_code=202,
            headers={"Location": change_location(change.id)},
        )

    def hold_image_update(self, session: Session, *, service: Service, digest: str) -> bool:
        """Implements app.services.image_updates.ImageUpdateHold: in a protected project, an
        automatic update is a change request by the image check (once per digest), which an
        approver answers and the project's windows time like any other."""
        project = session.get_one(Project, service.project_id)
        if not project.protected:
            return False
        if digest not in changes.open_image_updates(session, service_id=service.id):
            changes.submit(
                session,
                kind=kinds.IMAGE_UPDATE,
                project_id=project.id,
                target_id=service.id,
                target_name=service.name,
                payload={"digest": digest},
                value=None,
                if_match=None,
                author=changes.Author(SYSTEM_AUTHOR_ID, image_updates.ACTOR),
                settings=self.context.settings,
                cipher=self.context.cipher,
            )
        return True

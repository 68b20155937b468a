"""The outermost middleware: what every request carries in and leaves behind."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import anyio
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware.asgi import MUTATING, header
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.core.logging import request_id_var
from app.core.metrics import Metrics

log = logging.getLogger("berth.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AuditWriter(Protocol):
    """Appends the audit entry of one finished mutating request, in the caller's session. The
    audit trail sits above api, so create_app hands it in (`app.audit.service.append_request`)
    instead of api importing it."""

    def __call__(
        self, session: Session, *, scope: Scope, status: int, request_id: str
    ) -> object: ...


@dataclass
class PendingAudit:
    """The audit entry one mutating request still owes. The audit trail's before_commit hook
    writes it into the first transaction of the request that changes a resource, and sets
    `written`; a request that changed nothing gets its entry after the response."""

    scope: Scope
    request_id: str
    written: bool = False


# Set for the whole request; the thread pool copies it into the thread a route runs in.
pending_audit: ContextVar[PendingAudit | None] = ContextVar("berth_pending_audit", default=None)


class RequestContextMiddleware:
    """Request id in, request id out; one log line, metrics, and an audit entry per mutation."""

    def __init__(
        self, app: ASGIApp, *, context: AppContext, metrics: Metrics, audit: AuditWriter
    ) -> None:
        self.app = app
        self.context = context
        self.metrics = metrics
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})
        audited = scope["method"] in MUTATING and scope["path"].startswith(API_PREFIX)
        pending = PendingAudit(scope, request_id) if audited else None
        pending_token = pending_audit.set(pending)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            principal = scope["state"].get("principal")
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "actor": getattr(principal, "actor", None),
                },
            )
            pending_audit.reset(pending_token)
            # A request that changed nothing (refused, failed, replayed) is audited afterwards,
            # except the repeats of a burst of failed authentications (one entry per burst).
            skip = scope["state"].get("audit_skip", False)
            if pending is not None and not pending.written and not skip:
                await self._audit(scope, status, request_id)
            request_id_var.reset(token)

    async def _audit(self, scope: Scope, status: int, request_id: str) -> None:
        def write() -> None:
            with self.context.db.session() as session:
                self.audit(session, scope=scope, status=status, request_id=request_id)

        try:
            await anyio.to_thread.run_sync(write)
        except Exception:
            log.exception("could not write the audit entry", extra={"path": scope["path"]})

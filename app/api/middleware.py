"""ASGI middleware: request ids, access logs, metrics, audit, body limits and idempotent replay.

Pure ASGI rather than BaseHTTPMiddleware so that streamed responses (logs, events) pass
through untouched.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import anyio
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.models import IdempotencyRecord
from app.api.paths import API_PREFIX
from app.audit import service as audit
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.errors import problem
from app.core.logging import request_id_var
from app.core.metrics import Metrics

log = logging.getLogger("berth.http")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A placeholder left by a request that never finished (its process died) stops blocking its key.
_ABANDONED_AFTER = timedelta(seconds=120)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_problem(send: Send, status: int, detail: str) -> None:
    response = problem(status, detail)
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class RequestContextMiddleware:
    """Request id in, request id out; one log line, metrics, and an audit entry per mutation."""

    def __init__(self, app: ASGIApp, *, context: AppContext, metrics: Metrics) -> None:
        self.app = app
        self.context = context
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})
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
            if method in MUTATING and scope["path"].startswith(API_PREFIX):
                await self._audit(scope, status, request_id)
            request_id_var.reset(token)

    async def _audit(self, scope: Scope, status: int, request_id: str) -> None:
        state = scope["state"]
        principal = state.get("principal")
        route = scope.get("route")
        path = scope["path"]
        resource = state.get("audit_resource")
        if resource is None:
            parts = path.removeprefix(API_PREFIX).strip("/").split("/")
            resource = "/".join(parts[:2]) or None
        client = scope.get("client")

        def write() -> None:
            with self.context.db.session() as session:
                audit.append(
                    session,
                    actor=principal.actor if principal else "anonymous",
                    action=getattr(route, "name", None) or "unmatched",
                    method=scope["method"],
                    path=path,
                    resource=resource,
                    request_id=request_id,
                    source=client[0] if client else None,
                    outcome=status,
                )

        try:
            await anyio.to_thread.run_sync(write)
        except Exception:
            log.exception("could not write the audit entry", extra={"path": path})


class BodyLimitMiddleware:
    """413 for request bodies over the limit, whether announced by Content-Length or streamed.

    `uploads` gives larger limits to the few paths that take files (build contexts).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, uploads: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    def _limit(self, path: str) -> int:
        # A key is a path, and the prefix of its sub-resources (/stacks and /stacks/{id}).
        for prefix, limit in self.uploads.items():
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = _header(scope, b"content-length")
        too_large = f"request body larger than {limit} bytes"
        if declared is not None:
            if not declared.isdigit():
                await _send_problem(send, 400, "malformed Content-Length")
                return
            if int(declared) > limit:
                await _send_problem(send, 413, too_large)
                return
        received = 0
        started = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not started:
                    # Answer now; the app sees a client that went away and stops reading.
                    answered = True
                    await _send_problem(send, 413, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


@dataclass(frozen=True)
class _Reservation:
    record_id: str


class IdempotencyMiddleware:
    """`Idempotency-Key` on POST: the first response is stored and replayed for retries."""

    def __init__(self, app: ASGIApp, *, context: AppContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        key = _header(scope, b"idempotency-key")
        authorization = _header(scope, b"authorization")
        if key is None or authorization is None:
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= 255:
            await _send_problem(send, 400, "Idempotency-Key must be 1-255 characters")
            return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        caller = hashlib.sha256(authorization.encode()).hexdigest()
        # Keyed: the stored fingerprint of a body that carries a secret's value must not let
        # anyone who reads the database test guesses of that value against it.
        fingerprint = self.context.cipher.fingerprint(
            scope["path"].encode() + b"\0" + scope.get("query_string", b"") + b"\0" + bytes(body)
        )

        outcome = await anyio.to_thread.run_sync(
            self._reserve, caller, key, scope["path"], fingerprint
        )
        if isinstance(outcome, IdempotencyRecord):
            await self._replay(send, outcome)
            return
        if isinstance(outcome, str):
            await _send_problem(send, 409, outcome)
            return
        record_id = outcome.record_id

        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capturing_send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capturing_send)
        finally:
            keep = status < 500 and status not in (401, 403)
            await anyio.to_thread.run_sync(
                self._settle, record_id, status if keep else None, headers, b"".join(chunks)
            )

    def _reserve(
        self, caller: str, key: str, path: str, fingerprint: str
    ) -> IdempotencyRecord | str | _Reservation:
        """The stored response to replay, a conflict message, or a new reservation."""
        for _ in range(2):
            with self.context.db.session() as session:
                record = session.execute(
                    select(IdempotencyRecord).where(
                        IdempotencyRecord.scope == caller, IdempotencyRecord.key == key
                    )
                ).scalar_one_or_none()
                if record is not None:
                    if record.body_hash != fingerprint:
                        return (
                            "this Idempotency-Key was used with a different request; "
                            "use a new key for a new request"
                        )
                    if record.status_code is not None:
                        return record
                    if utcnow() - record.created_at < _ABANDONED_AFTER:
                        return "a request with this Idempotency-Key is still in progress"
                    session.delete(record)
                    session.flush()
                try:
                    with session.begin_nested():
                        reservation = IdempotencyRecord(
                            scope=caller,
                            key=key,
                            method="POST",
                            path=path,
                            body_hash=fingerprint,
                            created_at=utcnow(),
                        )
                        session.add(reservation)
                    return _Reservation(reservation.id)
                except IntegrityError:
                    continue
        return "a request with this Idempotency-Key is still in progress"

    def _settle(
        self, record_id: str, status: int | None, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        with self.context.db.session() as session:
            if status is None:
                session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
                return
            record = session.get(IdempotencyRecord, record_id)
            if record is None:
                return
            kept = {"content-type", "location", "etag"}
            record.status_code = status
            record.response_headers = {
                k.decode(): v.decode() for k, v in headers if k.decode().lower() in kept
            }
            record.response_body = body

    async def _replay(self, send: Send, record: IdempotencyRecord) -> None:
        headers = [(k.encode(), v.encode()) for k, v in (record.response_headers or {}).items()]
        headers.append((b"idempotent-replayed", b"true"))
        body = record.response_body or b""
        headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": record.status_code or 200, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})

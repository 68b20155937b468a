"""Idempotent replay of POSTs that carry an `Idempotency-Key`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import anyio
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import TokenStore, bearer_is_live
from app.api.middleware.asgi import header, send_problem
from app.api.models import IdempotencyRecord
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.core.db import utcnow

_WITHHELD = (
    "the first request with this Idempotency-Key succeeded, and its response carried a secret, "
    "which Berth never stores, so it cannot be replayed; if that response was lost, find the "
    "token in GET /tokens, revoke it, and create another with a new key"
)

# A placeholder left by a request that never finished (its process died) stops blocking its key.
_ABANDONED_AFTER = timedelta(seconds=120)


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
        key = header(scope, b"idempotency-key")
        authorization = header(scope, b"authorization")
        if key is None or authorization is None:
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= 255:
            await send_problem(send, 400, "Idempotency-Key must be 1-255 characters")
            return
        # Authenticate before anything is replayed: a revoked or expired token gets the 401 the
        # route gives it, never the response it was once sent.
        store: TokenStore = scope["app"].state.tokens
        if not await anyio.to_thread.run_sync(bearer_is_live, self.context, store, authorization):
            await self.app(scope, receive, send)
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
            if outcome.secret_withheld:
                await send_problem(send, 409, _WITHHELD)
                return
            await self._replay(send, outcome)
            return
        if isinstance(outcome, str):
            await send_problem(send, 409, outcome)
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
            secret = bool(scope["state"].get("secret_response"))
            await anyio.to_thread.run_sync(
                self._settle, record_id, status if keep else None, headers, b"".join(chunks), secret
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
        self,
        record_id: str,
        status: int | None,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        secret: bool,
    ) -> None:
        with self.context.db.session() as session:
            if status is None:
                session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
                return
            record = session.get(IdempotencyRecord, record_id)
            if record is None:
                return
            record.status_code = status
            if secret:
                record.secret_withheld = True  # a marker only: the secret is never stored
                return
            kept = {"content-type", "location", "etag"}
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

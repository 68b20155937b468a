"""The request body limit, for every mutating request: small unless it is a file upload."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware.asgi import MUTATING, header, is_multipart, send_problem


class BodyLimitMiddleware:
    """413 for request bodies over the limit, whether announced by Content-Length or streamed.

    `uploads` gives larger limits to the few paths that take files (build contexts), for
    multipart bodies only: a JSON body there is held to `max_bytes` like any other, before it
    is read (a 200 MB JSON document costs far more than 200 MB to parse).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, uploads: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    def _limit(self, scope: Scope) -> int:
        if not is_multipart(header(scope, b"content-type")):
            return self.max_bytes
        path = scope["path"]
        # A key is a path, and the prefix of its sub-resources (/stacks and /stacks/{id}).
        for prefix, limit in self.uploads.items():
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = header(scope, b"content-length")
        too_large = f"request body larger than {limit} bytes"
        if declared is not None:
            if not declared.isdigit():
                await send_problem(send, 400, "malformed Content-Length")
                return
            if int(declared) > limit:
                await send_problem(send, 413, too_large)
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
                    await send_problem(send, 413, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except ClientDisconnect:
            if not answered:
                raise
            # The app read on past the limit and met the disconnect it was handed: answered.

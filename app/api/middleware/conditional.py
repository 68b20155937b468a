"""Conditional GET for pollers: a weak ETag over what a read answered, and 304 when the
client's `If-None-Match` names it.

Every JSON `GET` 200 without an ETag of its own (the lists, and gets without a `version`) gets
`ETag: W/"<SHA-1 of the body>"`. A get that sends its `version` as its ETag keeps it untouched
and is answered in full: the version is the validator of the desired state for `If-Match`, and
what the loops observe (a host's status, a container's state) changes without bumping it, so a
304 against it would hide exactly the change a poller waits for.

The body is still built (the database is read); what a match saves is the encoding on the wire
and the client's parse: a 304 has no body and keeps the ETag.
"""

from __future__ import annotations

import hashlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware.asgi import header


def weak_etag(body: bytes) -> str:
    # A fingerprint, not a secret: SHA-1 is the fastest digest here (half of BLAKE2b's time).
    return 'W/"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """The weak comparison RFC 9110 asks of If-None-Match: a list of tags, or `*`."""
    opaque = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == opaque:
            return True
    return False


class ConditionalGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None

        async def send_tagged(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                taggable = message["status"] == 200 and not any(
                    key == b"etag" for key, _ in headers
                )
                if taggable and any(
                    key == b"content-type" and value.startswith(b"application/json")
                    for key, value in headers
                ):
                    start = message  # held until the body is known
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held, start = start, None
            if message.get("more_body", False):
                # A streamed body cannot be digested before it is sent: no validator.
                await send(held)
                await send(message)
                return
            body = message.get("body", b"")
            etag = weak_etag(body)
            wanted = header(scope, b"if-none-match")
            if wanted is not None and matches(wanted, etag):
                kept = [
                    (k, v)
                    for k, v in held["headers"]
                    if k not in (b"content-length", b"content-type")
                ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": 304,
                        "headers": [*kept, (b"etag", etag.encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            await send({**held, "headers": [*held["headers"], (b"etag", etag.encode())]})
            await send(message)

        await self.app(scope, receive, send_tagged)

"""Just enough HTTP/1.1 for the Engine API on asyncio streams: keep-alive requests with a
Content-Length or chunked body, and answers that are a whole JSON body or a chunked stream.

Hand-written rather than a framework's: a thousand engines in one process must cost little
more than their sockets, and a test of failure injection needs to hold, drop or refuse a
connection at the byte level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def filters(self) -> dict[str, list[str]]:
        """The Engine API's `filters` parameter: JSON of name -> values (a list, or the older
        form name -> {value: true})."""
        raw = json.loads(self.query.get("filters") or "{}")
        return {
            name: list(values) if isinstance(values, list) else [k for k, v in values.items() if v]
            for name, values in raw.items()
        }


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    content_type: str = "application/json"
    # A chunked stream written as it is produced (events, pulls); `body` is ignored then.
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str) -> Response:
    return Response(status, {"message": message})


Handler = Callable[[Request], Awaitable[Response]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a kept-alive connection, or None once the client closed it."""
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    parts_of_url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts_of_url.query, keep_blank_values=True).items()}
    return Request(method.upper(), unquote(parts_of_url.path), query, headers, body)


async def write_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: Response
) -> None:
    """Write the answer; a stream ends when it does or when the client hangs up (watched on
    `reader`, so a stream that stays silent does not outlive its client)."""
    reason = _REASONS.get(response.status, "Status")
    head = [f"HTTP/1.1 {response.status} {reason}", "Server: hollow-engine", "Api-Version: 1.45"]
    head += [f"{name}: {value}" for name, value in response.headers.items()]
    if response.stream is not None:
        head += [f"Content-Type: {response.content_type}", "Transfer-Encoding: chunked"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        pump = asyncio.create_task(_pump(writer, response.stream))
        hang_up = asyncio.create_task(reader.read())
        await asyncio.wait({pump, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        hang_up.cancel()
        # Retrieved, so a reset seen while watching is not reported as never retrieved.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await hang_up
        if not pump.done():
            pump.cancel()
            raise ConnectionResetError("the client closed the stream")
        await pump
        return
    if isinstance(response.body, bytes):
        payload = response.body
    elif response.body is None or response.status in (204, 304):
        payload = b""
    else:
        payload = json.dumps(response.body).encode()
    if response.status not in (204, 304):
        head += [f"Content-Type: {response.content_type}", f"Content-Length: {len(payload)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()


async def _pump(writer: asyncio.StreamWriter, stream: AsyncIterator[bytes]) -> None:
    async for chunk in stream:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()

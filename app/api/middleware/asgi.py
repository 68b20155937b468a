"""What the middleware share: reading a header from the ASGI scope, answering a problem."""

from __future__ import annotations

from starlette.types import Scope, Send

from app.core.errors import problem

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def is_multipart(content_type: str | None) -> bool:
    """A multipart/form-data body: the only kind whose file parts may be uploads. Media types
    are case-insensitive (as the form parser reads them)."""
    return (content_type or "").lstrip().lower().startswith("multipart/form-data")


async def send_problem(send: Send, status: int, detail: str) -> None:
    response = problem(status, detail)
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})

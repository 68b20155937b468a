"""The key check at start-up sees every column that holds ciphertext."""

from __future__ import annotations

from app.models import Base
from app.runtime import ENCRYPTED_COLUMNS


def test_every_encrypted_column_is_checked_before_a_key_is_made() -> None:
    named = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_encrypted")
    }
    checked = {f"{c.class_.__tablename__}.{c.key}" for c in ENCRYPTED_COLUMNS}
    assert named and checked == named

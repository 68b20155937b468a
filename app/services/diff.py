"""What changed between two specs (two service revisions, or a service in two stack releases):
the fields that differ, each with its value before and after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field


class FieldChange(BaseModel):
    field: str = Field(description="The field, as a dotted path", examples=["env.LOG_LEVEL"])
    before: Any = Field(default=None, description="Absent (null) when the field was added")
    after: Any = Field(default=None, description="Absent (null) when the field was removed")


def changes(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = ""
) -> list[FieldChange]:
    """The fields that differ, in name order; mappings are compared key by key (an env
    variable, a label), anything else as a whole (a list of ports)."""
    found: list[FieldChange] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found += changes(old, new, f"{prefix}{key}.")
        else:
            found.append(FieldChange(field=f"{prefix}{key}", before=old, after=new))
    return found

"""Step 2: `${...}` interpolation of every value, from the given variables only.

Strict: an unset variable without a default is an error, never an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.interpolation import InterpolationError, UnsetVariable, interpolate
from app.stacks.compose.errors import Problems, at


def interpolated(node: Any, loc: str, variables: Mapping[str, str], problems: Problems) -> Any:
    """`node` with every string value interpolated; keys stay as written. `x-*` extension keys
    are left out here, so that no later pass sees them."""
    if isinstance(node, dict):
        return {
            str(key): interpolated(value, at(loc, str(key)), variables, problems)
            for key, value in node.items()
            if not str(key).startswith("x-")
        }
    if isinstance(node, list):
        return [
            interpolated(item, at(loc, index), variables, problems)
            for index, item in enumerate(node)
        ]
    if isinstance(node, str):
        try:
            return interpolate(node, variables)
        except UnsetVariable as exc:
            problems.add(
                loc,
                f"variable '{exc.name}' is not set "
                f"(give it in `variables` or a default: ${{{exc.name}:-value}})",
            )
        except InterpolationError as exc:
            problems.add(loc, str(exc))
    return node

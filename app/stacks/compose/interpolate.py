"""Step 2: `${...}` interpolation of every value, from the given variables only.

A variable that is not set and has no default is, as Compose treats it, an empty string with a
warning (once per variable); with `strict`, it is an error instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.interpolation import InterpolationError, UnsetVariable, interpolate
from app.stacks.compose.errors import Problems, at


def interpolated(
    node: Any,
    loc: str,
    variables: Mapping[str, str],
    problems: Problems,
    *,
    strict: bool = True,
) -> Any:
    """`node` with every string value interpolated; keys stay as written. `x-*` extension keys
    are left out here (with a warning), so that no later pass sees them."""
    blanked: dict[str, str] = {}  # the unset variables met so far, each taken as ""
    return _interpolated(node, loc, variables, problems, strict, blanked)


def _interpolated(
    node: Any,
    loc: str,
    variables: Mapping[str, str],
    problems: Problems,
    strict: bool,
    blanked: dict[str, str],
) -> Any:
    if isinstance(node, dict):
        kept = {}
        for key, value in node.items():
            key_loc = at(loc, str(key))
            if str(key).startswith("x-"):
                problems.warn(key_loc, "extension keys (x-*) are ignored")
            else:
                kept[str(key)] = _interpolated(value, key_loc, variables, problems, strict, blanked)
        return kept
    if isinstance(node, list):
        return [
            _interpolated(item, at(loc, index), variables, problems, strict, blanked)
            for index, item in enumerate(node)
        ]
    if isinstance(node, str):
        return _string(node, loc, variables, problems, strict, blanked)
    return node


def _string(
    text: str,
    loc: str,
    variables: Mapping[str, str],
    problems: Problems,
    strict: bool,
    blanked: dict[str, str],
) -> str:
    while True:  # Once more per unset variable the text names: a bounded number of passes.
        try:
            return interpolate(text, {**variables, **blanked} if blanked else variables)
        except UnsetVariable as exc:
            if strict:
                problems.add(
                    loc,
                    f"variable '{exc.name}' is not set "
                    f"(give it in `variables` or a default: ${{{exc.name}:-value}})",
                )
                return text
            problems.warn(loc, f"variable '{exc.name}' is not set: it is taken as an empty string")
            blanked[exc.name] = ""
        except InterpolationError as exc:
            problems.add(loc, str(exc))
            return text

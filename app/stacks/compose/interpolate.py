"""Step 2: `${...}` interpolation of every value, from the given variables only.

A variable that is not set and has no default is, as Compose treats it, an empty string with a
warning (once per variable); with `strict`, it is an error instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    return _Interpolation(variables, problems, strict).value(node, loc)


@dataclass
class _Interpolation:
    variables: Mapping[str, str]
    problems: Problems
    strict: bool
    blanked: dict[str, str] = field(default_factory=dict)  # unset variables met, taken as ""

    def value(self, node: Any, loc: str) -> Any:
        if isinstance(node, dict):
            kept = {}
            for key, value in node.items():
                key_loc = at(loc, str(key))
                if str(key).startswith("x-"):
                    self.problems.warn(key_loc, "extension keys (x-*) are ignored")
                else:
                    kept[str(key)] = self.value(value, key_loc)
            return kept
        if isinstance(node, list):
            return [self.value(item, at(loc, index)) for index, item in enumerate(node)]
        if isinstance(node, str):
            return self.text(node, loc)
        return node

    def text(self, text: str, loc: str) -> str:
        while True:  # Once more per unset variable the text names: a bounded number of passes.
            variables = {**self.variables, **self.blanked} if self.blanked else self.variables
            try:
                return interpolate(text, variables)
            except UnsetVariable as exc:
                if self.strict:
                    self.problems.add(
                        loc,
                        f"variable '{exc.name}' is not set "
                        f"(give it in `variables` or a default: ${{{exc.name}:-value}})",
                    )
                    return text
                self.problems.warn(
                    loc, f"variable '{exc.name}' is not set: it is taken as an empty string"
                )
                self.blanked[exc.name] = ""
            except InterpolationError as exc:
                self.problems.add(loc, str(exc))
                return text

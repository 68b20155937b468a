"""`$VAR` and `${VAR...}` expansion: the one expander of Compose files and Dockerfiles.

The grammar is Compose's interpolation: `$$` for a literal `$`, `$VAR`, `${VAR}`,
`${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+other}` and
`${VAR+other}`; with a colon, an empty value counts as unset. A Dockerfile's FROM and ARG lines
read the same forms through BuildKit's shell lexer, which has no `$$` and no `?` forms and keeps
a `$` that starts no variable as it is: that is the `DOCKERFILE` dialect. A variable whose
value is None is unset (a Dockerfile ARG declared without a default).

Each caller words its own errors from the typed ones raised here.
"""

# Hand-written: no maintained Python library reads Compose's interpolation (python-dotenv's
# knows only ${VAR} and ${VAR:-default}, and os.path.expandvars leaves unset variables as is).

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Variables = Mapping[str, str | None]


@dataclass(frozen=True)
class Dialect:
    dollar_escape: bool
    """`$$` is a literal `$`, and a `$` that starts no variable is an error (else it is kept)."""
    operators: str
    """The operators a `${NAME<colon?><operator>argument}` may use."""


COMPOSE = Dialect(dollar_escape=True, operators="-?+")
DOCKERFILE = Dialect(dollar_escape=False, operators="-+")


class InterpolationError(ValueError):
    """A `$` expression that cannot be expanded."""


class UnsetVariable(InterpolationError):
    def __init__(self, name: str) -> None:
        super().__init__(f"variable '{name}' is not set")
        self.name = name


class MissingValue(InterpolationError):
    """`${NAME:?message}` or `${NAME?message}` of a variable without a value."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(
            f"required variable '{name}' is missing a value" + (f": {message}" if message else "")
        )
        self.name = name


class BadSubstitution(InterpolationError):
    """A `${` that is not closed or not a valid expression; `source` is the text from the `$`."""

    def __init__(self, message: str, source: str) -> None:
        super().__init__(message)
        self.source = source


class StrayDollar(InterpolationError):
    def __init__(self) -> None:
        super().__init__("a '$' must start a variable: write '$$' for a literal '$'")


def interpolate(text: str, variables: Variables, *, dialect: Dialect = COMPOSE) -> str:
    """`text` with every `$` expression expanded (a Dockerfile word, whose quotes and escapes
    come first, goes through `substitute` instead)."""
    parts: list[str] = []
    position = 0
    while (dollar := text.find("$", position)) != -1:
        parts.append(text[position:dollar])
        value, position = substitute(
            text,
            dollar,
            variables,
            dialect=dialect,
            expand=lambda argument: interpolate(argument, variables, dialect=dialect),
        )
        parts.append(value)
    parts.append(text[position:])
    return "".join(parts)


def substitute(
    text: str,
    start: int,
    variables: Variables,
    *,
    dialect: Dialect,
    expand: Callable[[str], str],
) -> tuple[str, int]:
    """The value of the `$` expression at `text[start]` and the index after it. `expand`
    expands the argument of an operator (a default may hold expressions and, in a Dockerfile,
    quotes)."""
    if dialect.dollar_escape and text.startswith("$$", start):
        return "$", start + 2
    if text.startswith("${", start):
        end = _closing_brace(text, start, dialect)
        return _braced(text[start + 2 : end - 1], text[start:end], variables, dialect, expand), end
    name = VARIABLE_NAME.match(text, start + 1)
    if name is not None:
        return _value_of(name.group(), variables), name.end()
    if dialect.dollar_escape:
        raise StrayDollar()
    return "$", start + 1


def _closing_brace(text: str, start: int, dialect: Dialect) -> int:
    """The index after the `}` that closes the `${` at `start`, past nested `${...}`."""
    depth = 1
    index = start + 2
    while index < len(text):
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if dialect.dollar_escape and text.startswith("$$", index):
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise BadSubstitution(f"'${{' without a closing '}}' in {text!r}", text[start:])


@functools.cache
def _expression(operators: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?P<name>{VARIABLE_NAME.pattern})"
        rf"(?:(?P<operator>:?[{re.escape(operators)}])(?P<argument>.*))?",
        re.DOTALL,
    )


def _braced(
    expression: str,
    source: str,
    variables: Variables,
    dialect: Dialect,
    expand: Callable[[str], str],
) -> str:
    """The value of one `${...}`: `expression` is what is between the braces."""
    match = _expression(dialect.operators).fullmatch(expression)
    if match is None:
        raise BadSubstitution(f"invalid interpolation '{source}'", source)
    name, operator, argument = match.group("name", "operator", "argument")
    if operator is None:
        return _value_of(name, variables)
    value = variables.get(name)
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present and value is not None else expand(argument)
    if operator.endswith("+"):
        return expand(argument) if present else ""
    if present and value is not None:
        return value
    raise MissingValue(name, argument)


def _value_of(name: str, variables: Variables) -> str:
    value = variables.get(name)
    if value is None:
        raise UnsetVariable(name)
    return value

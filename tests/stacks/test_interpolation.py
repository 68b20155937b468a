"""The one `${VAR}` expander (app.core.interpolation): Compose's grammar, and the Dockerfile
dialect that image references use (no `$$`, no `?` forms, a stray `$` kept)."""

from __future__ import annotations

import pytest

from app.core.interpolation import (
    COMPOSE,
    DOCKERFILE,
    BadSubstitution,
    InterpolationError,
    MissingValue,
    StrayDollar,
    UnsetVariable,
    Variables,
    interpolate,
)


def _dockerfile(text: str, variables: Variables) -> str:
    return interpolate(text, variables, dialect=DOCKERFILE)


@pytest.mark.parametrize(
    ("text", "compose", "dockerfile"),
    [
        ("a$$", "a$", "a$$"),
        ("100$", StrayDollar, "100$"),
        ("${SET:-x}${EMPTY:-y}${NONE-z}", "syz", "syz"),
        ("${EMPTY+x}${NONE:+y}", "x", "x"),
        ("${NONE:?needed}", MissingValue, BadSubstitution),
        ("${DECLARED}", UnsetVariable, UnsetVariable),
        ("${A:-$${B}}", "${B}", UnsetVariable),
        ("${SET", BadSubstitution, BadSubstitution),
    ],
)
def test_dialects(
    text: str, compose: str | type[InterpolationError], dockerfile: str | type[InterpolationError]
) -> None:
    variables: dict[str, str | None] = {"SET": "s", "EMPTY": "", "DECLARED": None, "B": None}
    for dialect, expected in ((interpolate, compose), (_dockerfile, dockerfile)):
        if isinstance(expected, str):
            assert dialect(text, variables) == expected
        else:
            with pytest.raises(expected):
                dialect(text, variables)


def test_errors_carry_what_callers_word_them_from() -> None:
    with pytest.raises(UnsetVariable) as unset:
        interpolate("x${A:-$B}", {})
    with pytest.raises(BadSubstitution) as bad:
        interpolate("x${A B}y", {})

    assert (unset.value.name, str(unset.value)) == ("B", "variable 'B' is not set")
    assert (bad.value.source, str(bad.value)) == ("${A B}", "invalid interpolation '${A B}'")
    assert COMPOSE.operators == "-?+"

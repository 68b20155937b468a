"""Step 1: the Compose file's text -> a mapping, read as YAML 1.2 as Compose reads it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from app.stacks.compose.errors import ComposeError


class _ComposeLoader(yaml.SafeLoader):
    """Resolves plain scalars as YAML 1.2 (like Compose), not YAML 1.1: `22:22` is not the
    sexagesimal 1342, `2024-01-01` is not a date, and yes/no/on/off are not booleans."""


_YAML_1_1_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp"}
_ComposeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _YAML_1_1_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # Leading-zero octal stays: Compose reads a secret's `mode: 0440` as octal too.
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def load(text: str) -> dict[str, Any]:
    try:
        # The reader refuses non-printable characters as the loader is made, before parsing.
        loader = _ComposeLoader(text)
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ComposeError(
            [{"loc": "compose", "msg": f"invalid YAML{where}: {exc.problem}"}]
        ) from exc
    except yaml.YAMLError as exc:
        raise ComposeError([{"loc": "compose", "msg": f"invalid YAML: {exc}"}]) from exc
    if not isinstance(document, dict):
        raise ComposeError([{"loc": "compose", "msg": "a Compose file is a mapping of keys"}])
    return document

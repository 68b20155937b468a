"""Step 1: the Compose file's text -> a mapping, read as YAML 1.2 as Compose reads it."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import CollectionNode, MappingNode, Node

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


# Every later step (interpolation, the schema, the mapping) walks the document as expanded,
# an alias as often as it is referenced: nested anchors ("billion laughs") make a few hundred
# bytes expand to billions of values. Real Compose files, merge keys and all, stay in the
# thousands.
MAX_EXPANDED_NODES = 100_000
# Interpolation, the schema and the mapping recurse into nested values; a Compose file nests a
# dozen levels at most.
MAX_DEPTH = 64


def load(text: str, *, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """The document as a mapping; ComposeError when it is larger than `max_bytes` (UTF-8),
    or larger or deeper, aliases expanded, than MAX_EXPANDED_NODES and MAX_DEPTH allow."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise _refused(f"the file is {size} bytes; the limit is {max_bytes}")
    try:
        # The reader refuses non-printable characters as the loader is made, before parsing.
        loader = _ComposeLoader(text)
    except yaml.YAMLError as exc:
        raise ComposeError([{"loc": "compose", "msg": f"invalid YAML: {exc}"}]) from exc
    try:
        # Composing builds the node graph, where an alias is the anchored node itself: it
        # costs what the text costs. Only constructing Python objects expands it.
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        document = loader.construct_document(node) if node is not None else None
    except RecursionError:  # The composer recursed past Python's limit before the check.
        raise _refused(_TOO_DEEP) from None
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


def _refused(message: str) -> ComposeError:
    return ComposeError([{"loc": "compose", "msg": message}])


_TOO_DEEP = f"the YAML nests more than {MAX_DEPTH} levels deep"


def _check_expansion(root: Node) -> None:
    """ComposeError when the document, its aliases expanded, has more than MAX_EXPANDED_NODES
    nodes or MAX_DEPTH levels, or an alias inside the collection it names (a document that
    never ends). Iterative, counting each anchored node once: it costs what the text costs."""
    expanded: dict[int, int] = {}  # id(node) -> its size with every alias expanded
    open_ids: set[int] = set()  # collections whose size is being counted
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if len(open_ids) > MAX_DEPTH:
            raise _refused(_TOO_DEEP)
        if children_done:
            open_ids.discard(key)
            size = 1 + sum(expanded[id(child)] for child in _children(node))
            if size > MAX_EXPANDED_NODES:
                raise _refused(
                    f"the YAML has more than {MAX_EXPANDED_NODES} values (aliases expanded)"
                )
            expanded[key] = size
        elif key in open_ids:
            raise _refused("a YAML alias refers to a collection that contains it")
        elif key not in expanded:
            if not isinstance(node, CollectionNode):
                expanded[key] = 1
                continue
            open_ids.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, CollectionNode):
        return list(node.value)
    return []

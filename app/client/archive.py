"""Build contexts as the server takes them: a directory packed into a tar.gz in memory, less
what its `.dockerignore` leaves out (as the docker CLI does before it sends a context)."""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
from pathlib import Path

# The docker CLI sends these even when .dockerignore names them: the build needs them.
_ALWAYS_SENT = frozenset({"Dockerfile", ".dockerignore"})


def pack_directory(path: str | Path) -> bytes:
    """`path` and everything under it as a gzipped tar, names relative to `path` (the form
    `images.build` and the build contexts of `stacks.create` take), without what its
    `.dockerignore` excludes. Symbolic links are kept as links, not followed: a context never
    carries files from outside its directory."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    ignore = root / ".dockerignore"
    rules = ignore_rules(ignore.read_text()) if ignore.is_file() else []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in sorted(root.rglob("*")):
            name = entry.relative_to(root).as_posix()
            if name not in _ALWAYS_SENT and excluded(name, rules):
                continue
            archive.add(entry, arcname=name, recursive=False)
    return buffer.getvalue()


Rule = tuple[bool, re.Pattern[str]]  # (an exception: `!pattern`, the pattern)


def ignore_rules(text: str) -> list[Rule]:
    """The patterns of a .dockerignore as Docker reads them: trimmed, `#` lines and blank ones
    skipped, `!` an exception, each pattern cleaned (`./a/`, `/a` and `a` are one) and matched
    as Go's filepath.Match with `**` for any number of directories."""
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        if pattern not in ("", "."):
            rules.append((negated, re.compile(_translate(pattern))))
    return rules


def excluded(name: str, rules: list[Rule]) -> bool:
    """Whether `name` (relative, /-separated) is left out: the last rule that matches it or
    one of its parent directories decides."""
    parts = name.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


def _translate(pattern: str) -> str:
    """A Docker ignore pattern as a regular expression: `*` and `?` stop at `/`, `**/` is any
    number of directories (none too), `[...]` a class (`[^...]` negated), `\\` escapes."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        char = pattern[i]
        end = pattern.find("]", i + 1) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif end != -1:
            out.append("[" + pattern[i + 1 : end] + "]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)

"""Build contexts as the server takes them: a directory packed into a tar.gz in memory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def pack_directory(path: str | Path) -> bytes:
    """`path` and everything under it as a gzipped tar, names relative to `path` (the form
    `images.build` and the build contexts of `stacks.create` take). Symbolic links are kept
    as links, not followed: a context never carries files from outside its directory."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in sorted(root.rglob("*")):
            archive.add(entry, arcname=entry.relative_to(root).as_posix(), recursive=False)
    return buffer.getvalue()

"""Check an uploaded build context (a tar, or a gzip-compressed tar) before Docker sees it.

The archive is read as a stream of headers and never extracted; the caller gets the file object
back rewound, ready to send on to the engine.
"""

from __future__ import annotations

import contextlib
import gzip
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

DOCKERFILE_MAX_BYTES = 2**20
# tarfile reads a pax or GNU long-name header whole; a forged size must not become one huge read.
_HEADER_MAX_BYTES = 16 * 2**20
_MAX_LINK_HOPS = 40
_GZIP_MAGIC = b"\x1f\x8b"
_UNSUPPORTED_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


class InvalidContext(ValueError):
    """A build context that is not a safe tar archive with a readable Dockerfile."""


@dataclass(frozen=True)
class BuildContext:
    compressed: bool
    files: int  # archive members: files, directories and links
    total_bytes: int  # sum of the members' sizes, as unpacked
    dockerfile: str


class _TooMuch(Exception):
    """Raised by `_Bounded` when the archive reads past what its limits allow."""


class _Bounded:
    """A read-only view of the (decompressed) archive that refuses oversized reads and seeks."""

    def __init__(self, inner: BinaryIO | gzip.GzipFile, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > _HEADER_MAX_BYTES:
            raise _TooMuch(f"a single header or read of {size} bytes")
        if self.inner.tell() + size > self.limit:
            raise _TooMuch(f"more than {self.limit} bytes of headers and data")
        return self.inner.read(size)

    def seek(self, pos: int, whence: int = 0, /) -> int:
        if whence != 0 or pos > self.limit:
            raise _TooMuch(f"more than {self.limit} bytes of headers and data")
        return self.inner.seek(pos)

    def tell(self) -> int:
        return self.inner.tell()

    def write(self, data: bytes, /) -> int:
        raise OSError("read only")

    def close(self) -> None:
        """The caller owns the underlying file; tarfile must not close it."""


def normalise_member_path(path: str) -> str:
    """`./a//b/` -> `a/b`; raise ValueError for NUL, absolute paths and `..` components.

    Backslash is an ordinary character (the daemon runs on Linux); "" is the context root.
    """
    if "\x00" in path:
        raise ValueError("contains a NUL character")
    if path.startswith("/"):
        raise ValueError("is absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("has a '..' component")
    return "/".join(parts)


def _link_target(member: tarfile.TarInfo, name: str) -> str:
    """Where a link points inside the context; ValueError when it points outside."""
    target = member.linkname
    if "\x00" in target:
        raise ValueError(f"link target {target!r} contains a NUL character")
    if target.startswith("/"):
        raise ValueError(f"link target {target!r} is absolute")
    # A symlink is relative to its own folder, a hard link to the archive root.
    base = posixpath.dirname(name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise ValueError(f"link target {target!r} points outside the context")
    return "" if resolved == "." else resolved


def inspect_context(
    fileobj: BinaryIO,
    *,
    dockerfile_path: str = "Dockerfile",
    max_members: int = 100_000,
    max_unpacked_bytes: int = 2 * 2**30,
) -> BuildContext:
    """Check every member of the archive in `fileobj` and read its Dockerfile.

    Rejects what Docker would refuse or what could reach outside the context when unpacked:
    absolute or `..` paths, links pointing out, device and fifo nodes, too many members, more
    than `max_unpacked_bytes` unpacked. `fileobj` must be seekable; it is rewound on return.
    """
    try:
        wanted = normalise_member_path(dockerfile_path)
    except ValueError as exc:
        raise InvalidContext(f"the Dockerfile path {dockerfile_path!r} {exc}") from None
    if not wanted:
        raise InvalidContext("the Dockerfile path is empty")
    if not fileobj.seekable():
        raise ValueError("the build context must be a seekable file")
    fileobj.seek(0)
    magic = fileobj.read(6)
    for prefix, kind in _UNSUPPORTED_MAGIC.items():
        if magic.startswith(prefix):
            fileobj.seek(0)
            raise InvalidContext(f"the build context is {kind}-compressed; send a tar or a tar.gz")
    scan = _Scan(
        compressed=magic.startswith(_GZIP_MAGIC),
        max_members=max_members,
        max_unpacked_bytes=max_unpacked_bytes,
        # Headers take 512 bytes a member; leave generous room for pax records on top.
        limit=max_unpacked_bytes + (max_members + 2) * 4096 + _HEADER_MAX_BYTES,
    )
    resolved = wanted
    try:
        text = scan.run(fileobj, wanted)
        resolved = _resolve(wanted, scan.links)
        if resolved != wanted:  # The Dockerfile is a link; Docker follows it within the context.
            text = scan.run(fileobj, resolved)
    except _TooMuch as exc:
        raise InvalidContext(f"the build context is too large: {exc}") from None
    except RecursionError:
        raise InvalidContext("the build context chains too many extended headers") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        kind = "gzip-compressed tar" if scan.compressed else "tar"
        raise InvalidContext(f"the build context is not a valid {kind} archive: {exc}") from None
    finally:
        fileobj.seek(0)
    if text is None:
        shown = dockerfile_path if resolved == wanted else f"{dockerfile_path} -> {resolved}"
        raise InvalidContext(f"the build context has no Dockerfile at {shown!r}")
    return BuildContext(
        compressed=scan.compressed, files=scan.files, total_bytes=scan.total, dockerfile=text
    )


@dataclass
class _Scan:
    compressed: bool
    max_members: int
    max_unpacked_bytes: int
    limit: int
    files: int = 0
    total: int = 0
    links: dict[str, str] = field(default_factory=dict)

    def run(self, fileobj: BinaryIO, wanted: str) -> str | None:
        """One forward pass: check each member, note links, read the member named `wanted`."""
        self.files = self.total = 0
        self.links = {}
        fileobj.seek(0)
        with contextlib.ExitStack() as stack:
            inner: BinaryIO | gzip.GzipFile = fileobj
            if self.compressed:
                inner = stack.enter_context(gzip.GzipFile(fileobj=fileobj, mode="rb"))
            # Random-access mode read strictly forward: unlike "r|" it notices a truncated tar.
            archive = stack.enter_context(
                tarfile.open(fileobj=_Bounded(inner, self.limit), mode="r:")
            )
            text: str | None = None
            while (member := archive.next()) is not None:
                # tarfile keeps every header it has read (an undocumented list); this pass needs
                # none of them again, so memory stays flat however many members there are.
                seen = getattr(archive, "members", None)
                if isinstance(seen, list):
                    seen.clear()
                name = self.check(member)
                if name == wanted:
                    text = _read_dockerfile(archive, member)
            return text

    def check(self, member: tarfile.TarInfo) -> str:
        """The member's normalised name, once it passed every rule."""
        self.files += 1
        self.total += member.size
        shown = repr(member.name[:200])
        if self.files > self.max_members:
            raise InvalidContext(
                f"the build context has more than {self.max_members} members (at {shown})"
            )
        if self.total > self.max_unpacked_bytes:
            raise InvalidContext(
                f"the build context unpacks to more than {self.max_unpacked_bytes} bytes "
                f"(at member {shown})"
            )
        try:
            name = normalise_member_path(member.name)
        except ValueError as exc:
            raise InvalidContext(f"member {shown} {exc}") from None
        if member.ischr() or member.isblk() or member.isfifo():
            raise InvalidContext(f"member {shown} is a device or fifo node")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidContext(f"member {shown} has unsupported type {member.type!r}")
        if not name and not member.isdir():
            raise InvalidContext(f"member {shown} has an empty name")
        if member.issym() or member.islnk():
            try:
                self.links[name] = _link_target(member, name)
            except ValueError as exc:
                raise InvalidContext(f"member {shown} {exc}") from None
        else:  # A later member replaces an earlier one of the same name.
            self.links.pop(name, None)
        return name


def _read_dockerfile(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str | None:
    """The text of the Dockerfile member; None when it is a link (resolved afterwards)."""
    shown = repr(member.name[:200])
    if member.issym() or member.islnk():
        return None
    if member.isdir():
        raise InvalidContext(f"the Dockerfile {shown} is a directory")
    if member.size > DOCKERFILE_MAX_BYTES:
        raise InvalidContext(
            f"the Dockerfile {shown} is {member.size} bytes; the limit is {DOCKERFILE_MAX_BYTES}"
        )
    extracted = archive.extractfile(member)
    assert extracted is not None  # A regular file always has content.
    try:
        return extracted.read(member.size).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidContext(
            f"the Dockerfile {shown} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None


def _resolve(path: str, links: dict[str, str]) -> str:
    """Follow links in every component of `path`, as Docker does within the context root."""
    parts = path.split("/")
    done: list[str] = []
    hops = 0
    while parts:
        current = "/".join([*done, parts.pop(0)])
        if current in links:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise InvalidContext(f"too many links while resolving the Dockerfile {path!r}")
            parts = [part for part in links[current].split("/") if part] + parts
            done = []
        else:
            done = current.split("/")
    return "/".join(done)

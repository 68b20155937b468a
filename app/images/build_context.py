"""Check an uploaded build context (a tar, or a gzip-compressed tar) before Docker sees it.

The archive is read as a stream of headers and never extracted; the caller gets the file object
back rewound, ready to send on to the engine.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from app.core.config import Settings

DOCKERFILE_MAX_BYTES = 2**20
# tarfile reads a pax or GNU long-name header whole; a forged size must not become one huge read.
_HEADER_MAX_BYTES = 16 * 2**20
_MAX_LINK_HOPS = 40  # As the kernel (MAXSYMLINKS): a longer chain is not followed.
# The compression ratio is checked past this much unpacked data: a small tar is mostly padding.
_RATIO_GRACE_BYTES = 16 * 2**20
# Skipping a member in a gzip stream inflates it: in steps this size, each one checked.
_SKIP_STEP_BYTES = 2**20
# The kernel's limit on a path (and a link's target): longer ones could not be unpacked.
_PATH_MAX = 4096
# Steps of following links, for the whole archive: a few per member in real contexts (pnpm
# trees of links included); about two seconds of work at worst.
_MAX_LINK_STEPS = 2_000_000
_GZIP_MAGIC = b"\x1f\x8b"
_UNSUPPORTED_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


class InvalidContext(ValueError):
    """A build context that is not a safe tar archive with a readable Dockerfile."""


class MissingDockerfile(InvalidContext):
    """A safe archive (every member checked) without the file asked for."""


@dataclass(frozen=True)
class BuildContext:
    compressed: bool
    files: int  # archive members: files, directories and links
    total_bytes: int  # sum of the members' sizes, as unpacked
    dockerfile: str


class _TooMuch(Exception):
    """Raised by `_Bounded` when the archive reads past what its limits allow."""


class _Bounded:
    """A read-only view of the (decompressed) archive that refuses oversized reads and seeks,
    and, over a gzip stream (`compressed` is the file under it), a ratio beyond `max_ratio`."""

    def __init__(
        self,
        inner: BinaryIO | gzip.GzipFile,
        limit: int,
        *,
        compressed: BinaryIO | None,
        max_ratio: int,
    ) -> None:
        self.inner = inner
        self.limit = limit
        self.compressed = compressed
        self.max_ratio = max_ratio

    def _check_ratio(self) -> None:
        if self.compressed is None:
            return
        unpacked = self.inner.tell()
        if unpacked > _RATIO_GRACE_BYTES and unpacked > self.max_ratio * self.compressed.tell():
            raise _TooMuch(f"it inflates more than {self.max_ratio} times (a decompression bomb)")

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > _HEADER_MAX_BYTES:
            raise _TooMuch(f"a single header or read of {size} bytes")
        if self.inner.tell() + size > self.limit:
            raise _TooMuch(f"more than {self.limit} bytes of headers and data")
        data = self.inner.read(size)
        self._check_ratio()
        return data

    def seek(self, pos: int, whence: int = 0, /) -> int:
        if whence != 0 or pos > self.limit:
            raise _TooMuch(f"more than {self.limit} bytes of headers and data")
        if self.compressed is None or pos <= self.inner.tell():
            return self.inner.seek(pos)
        # GzipFile.seek would inflate the whole skip in one call, ratio unchecked.
        while (position := self.inner.tell()) < pos:
            if not self.inner.read(min(_SKIP_STEP_BYTES, pos - position)):
                break
            self._check_ratio()
        return self.inner.tell()

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


class _Escapes(Exception):
    """A path that, its links followed, leads above the context root."""


class _TooManyLinks(Exception):
    """More than _MAX_LINK_HOPS links on one path: the kernel would not follow them either."""


@dataclass(frozen=True)
class _Link:
    """A symlink, or a hard link (to a path from the root; `symlink` False), where it really is."""

    member: str  # its name in the archive, for messages
    base: str  # the folder its target is relative to ("" is the root)
    target: str
    symlink: bool


@dataclass
class _Links:
    """The links met so far, by where extraction really put them (through earlier links)."""

    by_path: dict[str, _Link] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)  # every folder above some link
    steps: int = 0

    def add(self, path: str, link: _Link) -> None:
        self.by_path[path] = link
        parts = path.split("/")
        self.folders.update("/".join(parts[:end]) for end in range(1, len(parts)))

    def follow(
        self, path: str, *, base: str = "", follow_last: bool = True, hops: int = _MAX_LINK_HOPS
    ) -> str:
        """Where `path` (relative to the folder `base`) leads as the kernel resolves it: a
        link's target relative to the folder the link really is in, `..` from where the links
        led. _Escapes above the root; _TooManyLinks past `hops` links."""
        done = base.split("/") if base else []
        pending = path.split("/")[::-1]
        climbs = pending.count("..")  # while none is left, no link lies off the link tree
        while pending:
            part = pending.pop()
            self.steps += 1
            if self.steps > _MAX_LINK_STEPS:
                raise InvalidContext("the build context has too many links to check")
            if part in ("", "."):
                continue
            if part == "..":
                climbs -= 1
                if not done:
                    raise _Escapes
                done.pop()
                continue
            here = "/".join([*done, part])
            link = self.by_path.get(here)
            if link is None or (not pending and not follow_last):
                done.append(part)
                if link is None and climbs == 0 and here not in self.folders:
                    done.extend(p for p in reversed(pending) if p not in ("", "."))
                    break
                continue
            hops -= 1
            if hops < 0:
                raise _TooManyLinks
            done = link.base.split("/") if link.base else []
            targets = link.target.split("/")
            climbs += targets.count("..")
            pending.extend(reversed(targets))
        return "/".join(done)

    def escapes(self, link: _Link) -> bool:
        try:
            self.follow(link.target, base=link.base)
        except _Escapes:
            return True
        except _TooManyLinks:  # A loop: nothing follows it, it leads nowhere.
            return False
        return False


def inspect_context(
    fileobj: BinaryIO,
    *,
    dockerfile_path: str = "Dockerfile",
    max_members: int = 100_000,
    max_unpacked_bytes: int = 2 * 2**30,
    max_ratio: int = 100,
) -> BuildContext:
    """Check every member of the archive in `fileobj` and read its Dockerfile.

    Rejects what Docker would refuse or what could reach outside the context when unpacked:
    absolute or `..` paths, links pointing out (followed as extraction follows them, through
    earlier links), device and fifo nodes, too many members, more than `max_unpacked_bytes`
    unpacked, a gzip stream that inflates more than `max_ratio` times. `fileobj` must be
    seekable; it is rewound on return.
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
        max_ratio=max_ratio,
        # Headers take 512 bytes a member; leave generous room for pax records on top.
        limit=max_unpacked_bytes + (max_members + 2) * 4096 + _HEADER_MAX_BYTES,
    )
    resolved = wanted
    try:
        text = scan.run(fileobj, wanted)
        try:
            resolved = scan.links.follow(wanted)
        except (_Escapes, _TooManyLinks):  # A loop (no link escapes: each was checked).
            raise InvalidContext(
                f"too many links while resolving the Dockerfile {wanted!r}"
            ) from None
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
        raise MissingDockerfile(f"the build context has no Dockerfile at {shown!r}")
    return BuildContext(
        compressed=scan.compressed, files=scan.files, total_bytes=scan.total, dockerfile=text
    )


def inspect_upload(fileobj: BinaryIO, *, dockerfile_path: str, settings: Settings) -> BuildContext:
    """`inspect_context` under the limits the settings give an uploaded context."""
    return inspect_context(
        fileobj,
        dockerfile_path=dockerfile_path,
        max_unpacked_bytes=settings.max_build_context_unpacked_bytes,
        max_ratio=settings.max_build_context_ratio,
    )


@dataclass
class _Scan:
    compressed: bool
    max_members: int
    max_unpacked_bytes: int
    max_ratio: int
    limit: int
    files: int = 0
    total: int = 0
    links: _Links = field(default_factory=_Links)

    def run(self, fileobj: BinaryIO, wanted: str) -> str | None:
        """One forward pass: check each member, note links, read the member named `wanted`."""
        self.files = self.total = 0
        self.links = _Links()
        fileobj.seek(0)
        with contextlib.ExitStack() as stack:
            inner: BinaryIO | gzip.GzipFile = fileobj
            if self.compressed:
                inner = stack.enter_context(gzip.GzipFile(fileobj=fileobj, mode="rb"))
            bounded = _Bounded(
                inner,
                self.limit,
                compressed=fileobj if self.compressed else None,
                max_ratio=self.max_ratio,
            )
            # Random-access mode read strictly forward: unlike "r|" it notices a truncated tar.
            archive = stack.enter_context(tarfile.open(fileobj=bounded, mode="r:"))
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
        # A later link may lead an earlier one out (`a -> b/../x`, then `b -> .`).
        for link in self.links.by_path.values():
            if self.links.escapes(link):
                raise InvalidContext(
                    f"member {link.member[:200]!r} link target {link.target!r} points outside "
                    "the context through the links that follow it"
                )
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
        if max(len(member.name), len(member.linkname)) >= _PATH_MAX:
            raise InvalidContext(f"member {shown} has a path of {_PATH_MAX} characters or more")
        if member.ischr() or member.isblk() or member.isfifo():
            raise InvalidContext(f"member {shown} is a device or fifo node")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidContext(f"member {shown} has unsupported type {member.type!r}")
        if not name and not member.isdir():
            raise InvalidContext(f"member {shown} has an empty name")
        # Where extraction puts it: its folder as the earlier links lead there; its own name
        # is not followed (a member replaces whatever was at its path).
        folder, _, own = name.rpartition("/")
        try:
            folder = self.links.follow(folder)
        except (_Escapes, _TooManyLinks):
            raise InvalidContext(
                f"member {shown} is unpacked through links that point outside the context"
            ) from None
        real = f"{folder}/{own}" if folder else own
        self.links.by_path.pop(real, None)
        if member.issym() or member.islnk():
            link = self._link(member, folder)
            if self.links.escapes(link):
                raise InvalidContext(
                    f"member {shown} link target {member.linkname!r} points outside the context"
                )
            self.links.add(real, link)
        return real

    def _link(self, member: tarfile.TarInfo, folder: str) -> _Link:
        shown = repr(member.name[:200])
        target = member.linkname
        if "\x00" in target:
            raise InvalidContext(f"member {shown} link target {target!r} contains a NUL character")
        if target.startswith("/"):
            raise InvalidContext(f"member {shown} link target {target!r} is absolute")
        if member.issym():  # Relative to the folder it is really in.
            return _Link(member.name, folder, target, symlink=True)
        # A hard link names a path from the root; linkat follows links in its folders only.
        try:
            path = self.links.follow(target, follow_last=False)
        except (_Escapes, _TooManyLinks):
            raise InvalidContext(
                f"member {shown} link target {target!r} points outside the context"
            ) from None
        linked = self.links.by_path.get(path)
        if linked is None:
            return _Link(member.name, "", path, symlink=False)
        # The same inode: a hard link to a symlink is a symlink read from its own folder.
        base = folder if linked.symlink else linked.base
        return _Link(member.name, base, linked.target, linked.symlink)


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

"""A stack's project directory, uploaded as one tar or tar.gz (the multipart part `project`):
the Compose file, the files it names (`.env`, `env_file`, `include`, `extends.file`) and the
build contexts, each resolved as Compose resolves it, from the folder of the Compose file.

The archive passes the same checks as an uploaded build context (app.images.build_context:
no path or link out of it, no device nodes, bounded size and compression ratio) before any of
its files is read; it is never unpacked to disk.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from dotenv import dotenv_values

from app.core.config import Settings
from app.images.build_context import (
    InvalidContext,
    MissingDockerfile,
    inspect_upload,
    normalise_member_path,
)
from app.stacks.compose.extend import relative_to

# Compose's search order in the project directory.
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
# Only small files are read (Compose files, `.env`, env files): bigger ones are build inputs.
_READABLE_FILE_BYTES = 2**20
_READABLE_TOTAL_BYTES = 32 * 2**20
_MAX_LINK_HOPS = 40


class InvalidProject(ValueError):
    """A project archive that is unsafe, unreadable or has no Compose file where asked."""


@dataclass
class _Index:
    """What one pass over the checked archive found: folders, links and small files' bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # path -> its target, from the root
    folders: set[str] = field(default_factory=set)

    def resolve(self, path: str) -> str | None:
        """`path` with its links followed (the archive check found none leading out)."""
        for _ in range(_MAX_LINK_HOPS):
            parts = path.split("/")
            for end in range(1, len(parts) + 1):
                target = self.links.get("/".join(parts[:end]))
                if target is not None:
                    path = posixpath.normpath("/".join([target, *parts[end:]]))
                    break
            else:
                return path
        return None


class ProjectFiles(Mapping[str, str]):
    """The project's small text files by path from the archive root (`./a` is `a`)."""

    def __init__(self, index: _Index, given: Mapping[str, str] | None = None) -> None:
        self._index = index
        self._given = given or {}

    def with_given(self, given: Mapping[str, str]) -> ProjectFiles:
        """These files, and over them the env files given in the request, by the exact path
        the Compose file uses."""
        return ProjectFiles(self._index, given)

    def located(self, path: str) -> str | None:
        """Where `path` really is in the archive, its links followed."""
        relative = relative_to("", path)
        return None if relative is None else self._index.resolve(relative)

    def __getitem__(self, path: str) -> str:
        if path in self._given:
            return self._given[path]
        key = self.located(path)
        data = self._index.files.get(key) if key is not None else None
        if data is None:
            raise KeyError(path)
        return data.decode("utf-8-sig", errors="replace")

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        key = self.located(path)
        return path in self._given or (key is not None and key in self._index.files)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._given, *self._index.files]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self._given, *self._index.files]))


@dataclass(frozen=True)
class Project:
    """A checked project archive and the Compose file it holds."""

    data: bytes
    compose_path: str  # from the archive root
    compose: str
    files: ProjectFiles
    folders: frozenset[str]

    @property
    def folder(self) -> str:
        """The project directory: the Compose file's folder, from the archive root."""
        return posixpath.dirname(self.compose_path)

    def dotenv(self) -> dict[str, str]:
        """The variables of `.env` in the project directory, as Compose reads it; not
        interpolated, so that no variable of Berth's own process reaches the file."""
        path = posixpath.join(self.folder, ".env")
        if path not in self.files:
            return {}
        values = dotenv_values(stream=io.StringIO(self.files[path]), interpolate=False)
        return {key: value for key, value in values.items() if value is not None}

    def context(self, path: str) -> bytes | None:
        """The build context at `path` (from the archive root) as a tar of its own; None when
        the project has no such folder."""
        folder = relative_to("", path)
        if folder is None or (folder != "." and folder not in self.folders):
            return None
        if folder == ".":
            return self.data
        return _subtree(self.data, folder)

    def content(self, path: str) -> tuple[bytes, bool] | None:
        """The file or folder at `path` (from the archive root, its links followed) as a tar
        to unpack in a volume, and whether it is a file (then the tar's only member, `file`,
        with its mode); None when the project has neither."""
        located = self.files.located(path)
        if located is None:
            return None
        folder = self.context(located)
        if folder is not None:
            return folder, False
        file = _file_tar(self.data, located)
        return None if file is None else (file, True)


def open_project(data: bytes, *, file: str | None, settings: Settings) -> Project:
    """The archive checked in full, then its Compose file: `file`, or the first of Compose's
    names found at the archive root."""
    wanted = file or COMPOSE_FILE_NAMES[0]
    try:
        # The archive's check reads one file as it goes: the Compose file, when it is a file.
        inspect_upload(io.BytesIO(data), dockerfile_path=wanted, settings=settings)
    except MissingDockerfile:
        pass  # Every member was checked; which Compose file there is is looked up below.
    except InvalidContext as exc:
        message = str(exc).replace("the build context", "the project archive")
        raise InvalidProject(message.replace("Dockerfile", "Compose file")) from None
    index = _index(data)
    files = ProjectFiles(index)
    names = [file] if file else list(COMPOSE_FILE_NAMES)
    found = next((name for name in names if name in files), None)
    if found is None:
        raise InvalidProject(
            f"the project archive has no Compose file ({', '.join(names)}) "
            "that is a text file of at most 1 MiB"
        )
    compose_path = files.located(found)
    assert compose_path is not None  # `found in files` resolved it
    return Project(
        data=data,
        compose_path=compose_path,
        compose=files[found],
        files=files,
        folders=frozenset(index.folders),
    )


def _open(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")


def _index(data: bytes) -> _Index:
    """One pass over the (already checked) archive."""
    index = _Index()
    budget = _READABLE_TOTAL_BYTES
    with _open(data) as archive:
        for member in archive:
            name = normalise_member_path(member.name)
            parts = name.split("/")
            index.folders.update("/".join(parts[:end]) for end in range(1, len(parts)))
            if member.isdir():
                index.folders.add(name)
            elif member.issym():
                index.links[name] = posixpath.normpath(
                    posixpath.join(posixpath.dirname(name), member.linkname)
                )
            elif member.islnk():
                index.links[name] = normalise_member_path(member.linkname)
            elif member.isreg() and member.size <= min(_READABLE_FILE_BYTES, budget):
                extracted = archive.extractfile(member)
                if extracted is not None:
                    index.files[name] = extracted.read()
                    budget -= member.size
    index.folders.discard("")
    return index


def _file_tar(data: bytes, path: str) -> bytes | None:
    """The regular file at `path` as the member `file` of a tar of its own: its mode kept (a
    mounted script stays executable), its owner and time not (the same file, the same bytes)."""
    with _open(data) as archive:
        for member in archive:
            if member.isreg() and normalise_member_path(member.name) == path:
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file
                copy = tarfile.TarInfo("file")
                copy.size, copy.mode = member.size, member.mode
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as out:
                    out.addfile(copy, extracted)
                return buffer.getvalue()
    return None


def _subtree(data: bytes, folder: str) -> bytes:
    """The members under `folder`, renamed from it, as an uncompressed tar: the same project
    gives the same bytes (a build's tag is their digest, so an unchanged folder rolls nothing)."""
    prefix = folder + "/"
    buffer = io.BytesIO()
    with _open(data) as archive, tarfile.open(fileobj=buffer, mode="w") as out:
        for member in archive:
            name = normalise_member_path(member.name)
            if not name.startswith(prefix):
                continue
            copy = member.replace(name=name.removeprefix(prefix), deep=False)
            if member.islnk():
                copy.linkname = normalise_member_path(member.linkname).removeprefix(prefix)
            out.addfile(copy, archive.extractfile(member) if member.isreg() else None)
    return buffer.getvalue()

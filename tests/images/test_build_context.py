"""Build-context checks on archives built in memory: pure logic, no engine needed."""

from __future__ import annotations

import gzip
import io
import random
import re
import tarfile
import time
from typing import Any

import pytest

from app.images.build_context import (
    DOCKERFILE_MAX_BYTES,
    BuildContext,
    InvalidContext,
    inspect_context,
    normalise_member_path,
)

DOCKERFILE = b"FROM busybox:1.36\nCOPY . /app\n"
Member = tuple[tarfile.TarInfo, bytes | None]


def regular(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, target: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def archive(*members: Member, gz: bool = False) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def rejected(
    fileobj: io.BytesIO,
    message: str,
    *,
    dockerfile_path: str = "Dockerfile",
    max_members: int = 100_000,
    max_unpacked_bytes: int = 2 * 2**30,
) -> None:
    with pytest.raises(InvalidContext, match=re.escape(message)):
        inspect_context(
            fileobj,
            dockerfile_path=dockerfile_path,
            max_members=max_members,
            max_unpacked_bytes=max_unpacked_bytes,
        )
    assert fileobj.tell() == 0, "the file object is rewound even on failure"


@pytest.mark.parametrize("gz", [False, True])
def test_valid_context(gz: bool) -> None:
    fileobj = archive(
        special("src", tarfile.DIRTYPE),
        regular("./Dockerfile", DOCKERFILE),
        regular("src/main.py", b"print('hi')\n"),
        special("src/link", tarfile.SYMTYPE, "main.py"),
        special("src/up", tarfile.SYMTYPE, "../Dockerfile"),
        special("src/hard", tarfile.LNKTYPE, "src/main.py"),
        regular("back\\slash", b""),
        gz=gz,
    )
    fileobj.seek(5)  # Wherever the caller left it, the archive is read from the start.
    context = inspect_context(fileobj)
    assert context == BuildContext(
        compressed=gz,
        files=7,
        total_bytes=len(DOCKERFILE) + 12,
        dockerfile=DOCKERFILE.decode(),
    )
    assert fileobj.tell() == 0
    # The caller can send it on as it came.
    data = fileobj.read()
    assert data[:2] == b"\x1f\x8b" if gz else data[257:262] == b"ustar"


def test_custom_dockerfile_path() -> None:
    fileobj = archive(
        regular("Dockerfile", b"FROM wrong\n"), regular("docker/Dockerfile.prod", DOCKERFILE)
    )
    context = inspect_context(fileobj, dockerfile_path="docker/Dockerfile.prod")
    assert context.dockerfile == DOCKERFILE.decode()
    fileobj.seek(0)
    context = inspect_context(fileobj, dockerfile_path="./docker//Dockerfile.prod")
    assert context.dockerfile == DOCKERFILE.decode()


def test_dockerfile_bom_is_dropped() -> None:
    context = inspect_context(archive(regular("Dockerfile", b"\xef\xbb\xbf" + DOCKERFILE)))
    assert context.dockerfile == DOCKERFILE.decode()


def test_later_member_of_the_same_name_wins() -> None:
    fileobj = archive(regular("Dockerfile", b"FROM old\n"), regular("Dockerfile", DOCKERFILE))
    assert inspect_context(fileobj).dockerfile == DOCKERFILE.decode()


def test_dockerfile_through_links() -> None:
    # Docker follows links to the Dockerfile as long as they stay in the context.
    symlinked = archive(
        special("Dockerfile", tarfile.SYMTYPE, "docker/Dockerfile.prod"),
        regular("docker/Dockerfile.prod", DOCKERFILE),
    )
    assert inspect_context(symlinked).dockerfile == DOCKERFILE.decode()
    folder = archive(
        regular("docker/Dockerfile.prod", DOCKERFILE), special("d", tarfile.SYMTYPE, "docker")
    )
    context = inspect_context(folder, dockerfile_path="d/Dockerfile.prod")
    assert context.dockerfile == DOCKERFILE.decode()
    hard = archive(regular("real", DOCKERFILE), special("Dockerfile", tarfile.LNKTYPE, "real"))
    assert inspect_context(hard, dockerfile_path="Dockerfile").dockerfile == DOCKERFILE.decode()
    rejected(
        archive(special("Dockerfile", tarfile.SYMTYPE, "nowhere")),
        "the build context has no Dockerfile at 'Dockerfile -> nowhere'",
    )
    rejected(
        archive(special("Dockerfile", tarfile.SYMTYPE, "Dockerfile")),
        "too many links while resolving the Dockerfile 'Dockerfile'",
    )


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("member", "message"),
    [
        (regular("../evil"), "member '../evil' has a '..' component"),
        (regular("a/../../evil"), "member 'a/../../evil' has a '..' component"),
        (regular("/etc/passwd"), "member '/etc/passwd' is absolute"),
        (
            special("shadow", tarfile.SYMTYPE, "/etc/shadow"),
            "member 'shadow' link target '/etc/shadow' is absolute",
        ),
        (
            special("a/x", tarfile.SYMTYPE, "../../x"),
            "member 'a/x' link target '../../x' points outside the context",
        ),
        (
            special("up", tarfile.SYMTYPE, ".."),
            "member 'up' link target '..' points outside the context",
        ),
        (
            special("a/h", tarfile.LNKTYPE, "../x"),
            "member 'a/h' link target '../x' points outside the context",
        ),
        (
            special("h", tarfile.LNKTYPE, "/etc/passwd"),
            "member 'h' link target '/etc/passwd' is absolute",
        ),
        (special("null", tarfile.CHRTYPE), "member 'null' is a device or fifo node"),
        (special("sda", tarfile.BLKTYPE), "member 'sda' is a device or fifo node"),
        (special("pipe", tarfile.FIFOTYPE), "member 'pipe' is a device or fifo node"),
        (special("odd", b"Z"), "member 'odd' has unsupported type b'Z'"),
    ],
)
def test_rejects_unsafe_members(member: Member, message: str, gz: bool) -> None:
    rejected(archive(regular("Dockerfile", DOCKERFILE), member, gz=gz), message)


def test_symlink_within_its_folder_may_go_up() -> None:
    # a/b/x -> ../../y resolves to y, still inside the context.
    context = inspect_context(
        archive(regular("Dockerfile", DOCKERFILE), special("a/b/x", tarfile.SYMTYPE, "../../y"))
    )
    assert context.files == 2


def test_rejects_nul_in_a_pax_path() -> None:
    info, data = regular("innocent")
    info.pax_headers = {"path": "a\x00b"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data or b""))
    buffer.seek(0)
    rejected(buffer, "member 'a\\x00b' contains a NUL character")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the build context is not a valid tar archive"),
        (random.Random(1).randbytes(4096), "the build context is not a valid tar archive"),
        (
            gzip.compress(random.Random(2).randbytes(4096)),
            "the build context is not a valid gzip-compressed tar archive",
        ),
        (
            b"\x1f\x8b" + random.Random(3).randbytes(100),
            "the build context is not a valid gzip-compressed tar archive",
        ),
        (b"BZh91AY&SY" + bytes(50), "the build context is bzip2-compressed"),
        (b"\xfd7zXZ\x00" + bytes(50), "the build context is xz-compressed"),
    ],
)
def test_rejects_what_is_not_a_tar(data: bytes, message: str) -> None:
    rejected(io.BytesIO(data), message)


def test_rejects_truncated_archives() -> None:
    full = archive(regular("Dockerfile", DOCKERFILE), regular("big", b"y" * 5000)).getvalue()
    rejected(io.BytesIO(full[:2048]), "not a valid tar archive: unexpected end of data")
    compressed = gzip.compress(full)
    rejected(
        io.BytesIO(compressed[: len(compressed) // 2]),
        "not a valid gzip-compressed tar archive",
    )


def test_missing_dockerfile() -> None:
    rejected(archive(regular("app.py")), "the build context has no Dockerfile at 'Dockerfile'")
    rejected(archive(), "the build context has no Dockerfile at 'Dockerfile'")
    rejected(
        archive(regular("Dockerfile", DOCKERFILE)),
        "the build context has no Dockerfile at 'docker/Dockerfile.prod'",
        dockerfile_path="docker/Dockerfile.prod",
    )
    # Names are case-sensitive, as on the daemon's file system.
    rejected(archive(regular("dockerfile", DOCKERFILE)), "no Dockerfile at 'Dockerfile'")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/Dockerfile", "the Dockerfile path '/Dockerfile' is absolute"),
        ("../Dockerfile", "the Dockerfile path '../Dockerfile' has a '..' component"),
        ("docker/../../Dockerfile", "has a '..' component"),
        ("Docker\x00file", "contains a NUL character"),
        ("", "the Dockerfile path is empty"),
        ("./", "the Dockerfile path is empty"),
    ],
)
def test_rejects_bad_dockerfile_paths(path: str, message: str) -> None:
    rejected(archive(regular("Dockerfile", DOCKERFILE)), message, dockerfile_path=path)


def test_rejects_bad_dockerfiles() -> None:
    rejected(
        archive(regular("Dockerfile", b"FROM busybox\n# caf\xe9\n")),
        "the Dockerfile 'Dockerfile' is not UTF-8 text (invalid byte at offset 18)",
    )
    rejected(
        archive(special("Dockerfile", tarfile.DIRTYPE)),
        "the Dockerfile 'Dockerfile' is a directory",
    )
    too_big = b"#" * (DOCKERFILE_MAX_BYTES + 1)
    rejected(
        archive(regular("Dockerfile", too_big)),
        f"the Dockerfile 'Dockerfile' is {DOCKERFILE_MAX_BYTES + 1} bytes; the limit is",
    )
    at_limit = b"#" * DOCKERFILE_MAX_BYTES
    assert len(inspect_context(archive(regular("Dockerfile", at_limit))).dockerfile) == len(
        at_limit
    )


@pytest.mark.parametrize("gz", [False, True])
def test_too_many_members(gz: bool) -> None:
    members = [regular("Dockerfile", DOCKERFILE), *(regular(f"f{i}") for i in range(9))]
    assert inspect_context(archive(*members, gz=gz), max_members=10).files == 10
    rejected(
        archive(*members, regular("one-more"), gz=gz),
        "the build context has more than 10 members (at 'one-more')",
        max_members=10,
    )


@pytest.mark.parametrize("gz", [False, True])
def test_unpacked_size_limit(gz: bool) -> None:
    members = [regular("Dockerfile", b"FROM a\n"), regular("a", b"a" * 600)]
    assert inspect_context(archive(*members, gz=gz), max_unpacked_bytes=1000).total_bytes == 607
    rejected(
        archive(*members, regular("b", b"b" * 600), gz=gz),
        "the build context unpacks to more than 1000 bytes (at member 'b')",
        max_unpacked_bytes=1000,
    )


def test_gzip_bomb_is_refused_before_it_is_inflated() -> None:
    # A header that claims 10 GiB, then a few compressed zeros: refused from the header alone.
    info = tarfile.TarInfo("huge")
    info.size = 10 * 2**30
    bomb = gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    rejected(io.BytesIO(bomb), "the build context unpacks to more than 2147483648 bytes")


def test_forged_extended_header_is_not_read_into_memory() -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 2**30
    forged = gzip.compress(pax.tobuf(format=tarfile.USTAR_FORMAT) + bytes(2**16))
    rejected(io.BytesIO(forged), "the build context is too large: a single header or read of")


def test_chained_extended_headers() -> None:
    record = b"19 comment=aaaaaaa\n"
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = len(record)
    block = pax.tobuf(format=tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")
    info, data = regular("Dockerfile", DOCKERFILE)
    tail = info.tobuf() + (data or b"").ljust(512, b"\0") + bytes(1024)
    rejected(io.BytesIO(block * 5000 + tail), "chains too many extended headers")


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("Dockerfile", "Dockerfile"),
        ("./Dockerfile", "Dockerfile"),
        ("././a//b/", "a/b"),
        (".", ""),
        ("a\\..\\b", "a\\..\\b"),  # Backslash is an ordinary character.
        ("a/.../b", "a/.../b"),
    ],
)
def test_normalise_member_path(path: str, normal: str) -> None:
    assert normalise_member_path(path) == normal


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (  # d1 is the root, so d1/d2 is d2 and ../.. from there is above the root.
            [special("d1", tarfile.SYMTYPE, "."), special("d1/d2/l", tarfile.SYMTYPE, "../..")],
            "member 'd1/d2/l' link target '../..' points outside the context",
        ),
        (  # A link's target goes through an earlier link, then up.
            [special("d1", tarfile.SYMTYPE, "."), special("l", tarfile.SYMTYPE, "d1/../..")],
            "member 'l' link target 'd1/../..' points outside the context",
        ),
        (  # A folder link whose target is in a deeper folder: `..` is taken from there.
            [special("a/b/up", tarfile.SYMTYPE, ".."), special("x", tarfile.SYMTYPE, "a/b/up/..")],
            "",
        ),
        (  # A member unpacked through a link that a later link leads out.
            [
                special("a", tarfile.SYMTYPE, "b/../x"),
                special("b", tarfile.SYMTYPE, "."),
                regular("a/evil"),
            ],
            "member 'a/evil' is unpacked through links that point outside the context",
        ),
        (  # The same, no member written through it: the link still leads out once unpacked.
            [special("a", tarfile.SYMTYPE, "b/../x"), special("b", tarfile.SYMTYPE, ".")],
            "member 'a' link target 'b/../x' points outside the context through the links",
        ),
        (  # A hard link to a symlink is that symlink, read from the hard link's folder.
            [special("x/s", tarfile.SYMTYPE, "../y"), special("h", tarfile.LNKTYPE, "x/s")],
            "member 'h' link target 'x/s' points outside the context",
        ),
        (  # A hard link whose target's folder is a link out of the context.
            [special("d1", tarfile.SYMTYPE, "."), special("h", tarfile.LNKTYPE, "d1/../x")],
            "member 'h' link target 'd1/../x' points outside the context",
        ),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_link_chains_are_followed_as_extraction_follows_them(
    members: list[Member], message: str, gz: bool
) -> None:
    fileobj = archive(regular("Dockerfile", DOCKERFILE), *members, gz=gz)
    if message:
        rejected(fileobj, message)
    else:  # a/b/up is a, so a/b/up/.. is the root: inside.
        assert inspect_context(fileobj).files == 1 + len(members)


def test_relative_links_inside_the_context_are_accepted() -> None:
    context = inspect_context(
        archive(
            regular("Dockerfile", DOCKERFILE),
            regular("node_modules/pkg/bin/cli.js", b"#!/usr/bin/env node\n"),
            special("node_modules/.bin/cli", tarfile.SYMTYPE, "../pkg/bin/cli.js"),
            special("current", tarfile.SYMTYPE, "releases/v2"),
            regular("releases/v2/app.py"),
            special("current/config", tarfile.SYMTYPE, "../../shared/config"),
            special("loop", tarfile.SYMTYPE, "loop"),
            special("same", tarfile.LNKTYPE, "current/app.py"),
            special("docker", tarfile.SYMTYPE, "."),
        ),
        dockerfile_path="docker/docker/Dockerfile",
    )
    assert (context.files, context.dockerfile) == (9, DOCKERFILE.decode())


def test_overlong_paths_are_refused() -> None:
    rejected(
        archive(regular("Dockerfile", DOCKERFILE), special("l", tarfile.SYMTYPE, "a/" * 2048)),
        "member 'l' has a path of 4096 characters or more",
    )


def _gzip_bomb(unpacked: int) -> io.BytesIO:
    """A tar.gz of zeros in 64 MiB members: about a thousandth of its unpacked size."""
    buffer = io.BytesIO()
    chunk = 64 * 2**20
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as compressed,
        tarfile.open(fileobj=compressed, mode="w|") as tar,
    ):
        info, _ = regular("Dockerfile", DOCKERFILE)
        tar.addfile(info, io.BytesIO(DOCKERFILE))
        for index in range(unpacked // chunk):
            info = tarfile.TarInfo(f"zeros{index}")
            info.size = chunk
            tar.addfile(info, _Zeros(chunk))
    buffer.seek(0)
    return buffer


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.left)
        buffer[:size] = bytes(size)
        self.left -= size
        return size


def test_a_gzip_bomb_stops_at_the_compression_ratio() -> None:
    bomb = _gzip_bomb(256 * 2**20)  # 256 MiB of zeros in about 256 KB
    started = time.process_time()
    rejected(bomb, "it inflates more than 100 times (a decompression bomb)")
    # Stopped after a few tens of MiB inflated, not all of it.
    assert time.process_time() - started < 1.0
    # A higher ratio, set for contexts that hold such files, lets it through.
    assert inspect_context(bomb, max_ratio=2000).total_bytes == 256 * 2**20 + len(DOCKERFILE)

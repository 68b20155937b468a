"""Image references and Dockerfile base images: pure logic, no engine needed."""

from __future__ import annotations

import re

import pytest

from app.images.reference import (
    ImageReference,
    InvalidReference,
    dockerfile_base_images,
    normalise_registry_host,
    parse_reference,
    registry_allowed,
)

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "name", "shown"),
    [
        ("busybox", "docker.io", "library/busybox", None, None, "busybox", "busybox"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox", "busybox:1.36"),
        ("library/busybox", "docker.io", "library/busybox", None, None, "busybox", "busybox"),
        (
            "docker.io/library/busybox:latest",
            "docker.io",
            "library/busybox",
            "latest",
            None,
            "busybox",
            "busybox:latest",
        ),
        ("docker.io/busybox", "docker.io", "library/busybox", None, None, "busybox", "busybox"),
        ("team/app:v2", "docker.io", "team/app", "v2", None, "team/app", "team/app:v2"),
        ("index.docker.io/team/app", "docker.io", "team/app", None, None, "team/app", "team/app"),
        (
            "registry-1.docker.io/alpine",
            "docker.io",
            "library/alpine",
            None,
            None,
            "alpine",
            "alpine",
        ),
        (
            "localhost:5000/a/b:c",
            "localhost:5000",
            "a/b",
            "c",
            None,
            "localhost:5000/a/b",
            "localhost:5000/a/b:c",
        ),
        ("localhost/app", "localhost", "app", None, None, "localhost/app", "localhost/app"),
        (
            "10.203.0.1:5000/team/app:1.0",
            "10.203.0.1:5000",
            "team/app",
            "1.0",
            None,
            "10.203.0.1:5000/team/app",
            "10.203.0.1:5000/team/app:1.0",
        ),
        (
            "ghcr.io/org/tool",
            "ghcr.io",
            "org/tool",
            None,
            None,
            "ghcr.io/org/tool",
            "ghcr.io/org/tool",
        ),
        ("[::1]:5000/app", "[::1]:5000", "app", None, None, "[::1]:5000/app", "[::1]:5000/app"),
        ("a__b-c---d/e.f_g", "docker.io", "a__b-c---d/e.f_g", None, None, "a__b-c---d/e.f_g", ""),
        ("busybox@" + SHA, "docker.io", "library/busybox", None, SHA, "busybox", f"busybox@{SHA}"),
        (
            f"ghcr.io/org/tool:1.2@{SHA}",
            "ghcr.io",
            "org/tool",
            "1.2",
            SHA,
            "ghcr.io/org/tool",
            f"ghcr.io/org/tool:1.2@{SHA}",
        ),
        ("busybox:_Tag.9-x", "docker.io", "library/busybox", "_Tag.9-x", None, "busybox", ""),
    ],
)
def test_parse_valid(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    name: str,
    shown: str,
) -> None:
    ref = parse_reference(text)
    assert ref == ImageReference(registry, repository, tag, digest)
    assert ref.name == name
    assert str(ref) == (shown or text)
    assert parse_reference(str(ref)) == ref


def test_tag_or_default() -> None:
    assert parse_reference("busybox").tag_or_default == "latest"
    assert parse_reference("busybox:1.36").tag_or_default == "1.36"
    assert parse_reference(f"busybox@{SHA}").tag_or_default is None
    assert parse_reference(f"busybox:1.36@{SHA}").tag_or_default == "1.36"


def test_digest_algorithms() -> None:
    assert parse_reference("a@sha512:" + "0" * 128).digest == "sha512:" + "0" * 128
    assert parse_reference("a@sha384:" + "f" * 96).digest == "sha384:" + "f" * 96


def test_host_and_port_without_repository_is_a_tag() -> None:
    # As in Docker: with no '/', "localhost:5000" is the repository "localhost", tag "5000".
    assert parse_reference("localhost:5000") == ImageReference(
        "docker.io", "library/localhost", "5000"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "image reference is empty"),
        ("busy box", "contains whitespace"),
        ("busybox\n", "contains whitespace"),
        ("\tbusybox", "contains whitespace"),
        ("Busybox", "repository name 'Busybox' must be lowercase"),
        ("ghcr.io/Org/app", "repository name 'Org/app' must be lowercase"),
        ("Team/app", "repository name 'Team/app' must be lowercase"),
        ("x" * 256, "the name is 256 characters long; the limit is 255"),
        ("ghcr.io/" + "a" * 250 + ":tag", "the name is 258 characters long; the limit is 255"),
        ("a!b", "invalid character '!' in 'a!b'"),
        ("team/a$p", "invalid character '$' in 'a$p'"),
        ("a..b", "path component 'a..b' must start and end with a letter or digit"),
        ("-a", "path component '-a' must start and end"),
        ("a_", "path component 'a_' must start and end"),
        ("a___b", "path component 'a___b'"),
        ("a//b", "empty path component in 'a//b'"),
        ("a/", "empty path component in 'a/'"),
        ("ghcr.io/", "the repository name is empty"),
        (":tag", "the repository name is empty"),
        ("bad_host.io/app", "'bad_host.io' is not a valid registry host[:port]"),
        ("host.io:port/app", "'host.io:port' is not a valid registry host[:port]"),
        ("-host.io/app", "'-host.io' is not a valid registry host[:port]"),
        ("busybox:", "the tag after ':' is empty"),
        ("busybox:-x", "tag '-x' must start with a letter, digit or '_'"),
        ("busybox:.x", "tag '.x' must start"),
        ("busybox:a+b", "tag 'a+b' must start"),
        ("busybox:" + "a" * 129, "the tag is 129 characters long; the limit is 128"),
        ("busybox@", "digest '' must be algorithm:hex"),
        ("busybox@abc", "digest 'abc' must be algorithm:hex"),
        ("busybox@1sha:" + "a" * 64, "must be algorithm:hex"),
        ("busybox@sha256:abc", "a sha256 digest needs 64 hex digits, got 3"),
        ("busybox@sha256:" + "a" * 65, "a sha256 digest needs 64 hex digits, got 65"),
        ("busybox@sha256:" + "A" * 64, "a sha256 digest takes only lowercase hex digits"),
        ("busybox@sha256:" + "g" * 64, "takes only lowercase hex digits"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
        ("a@b@" + SHA, "more than one '@'"),
        ("a" * 64, "a 64-character hex string is an image ID"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(message)):
        parse_reference(text)


def test_rejection_names_the_reference() -> None:
    with pytest.raises(InvalidReference, match=r"^invalid image reference 'a!b': "):
        parse_reference("a!b")
    with pytest.raises(InvalidReference) as caught:
        parse_reference("A" * 300)
    assert len(str(caught.value)) < 200  # A long reference is shortened in the message.


def test_registry_host() -> None:
    assert parse_reference("busybox").registry_host == "docker.io"
    assert parse_reference("index.docker.io/library/busybox").registry_host == "docker.io"
    assert parse_reference("Registry.Example.com:5000/app").registry_host == (
        "registry.example.com:5000"
    )
    assert parse_reference("10.203.0.1:5000/team/app").registry_host == "10.203.0.1:5000"


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("docker.io", "docker.io"),
        ("Index.Docker.IO", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        (" 10.203.0.1:5000 ", "10.203.0.1:5000"),
        ("http://Reg.Example.com:5000/", "reg.example.com:5000"),
    ],
)
def test_normalise_registry_host(host: str, normal: str) -> None:
    assert normalise_registry_host(host) == normal


@pytest.mark.parametrize(
    ("text", "allowed", "expected"),
    [
        ("busybox", [], True),
        ("10.203.0.1:5000/team/app", [], True),
        ("busybox", ["docker.io"], True),
        ("busybox", ["index.docker.io"], True),
        ("docker.io/library/busybox", ["registry-1.docker.io"], True),
        ("busybox", ["10.203.0.1:5000"], False),
        ("10.203.0.1:5000/team/app", ["10.203.0.1:5000"], True),
        ("10.203.0.1:5000/team/app", ["docker.io", "10.203.0.1:5000"], True),
        ("10.203.0.1:5001/team/app", ["10.203.0.1:5000"], False),
        ("10.203.0.1/team/app", ["10.203.0.1:5000"], False),
        ("Reg.Example.com/app", ["reg.example.COM"], True),
        ("evil.io/docker.io/app", ["docker.io"], False),
        ("localhost:5000/app", ["localhost"], False),
    ],
)
def test_registry_allowed(text: str, allowed: list[str], expected: bool) -> None:
    assert registry_allowed(parse_reference(text), allowed) is expected


# --- Dockerfiles ------------------------------------------------------------------------------


def bases(dockerfile: str, **build_args: str) -> list[str]:
    return [str(ref) for ref in dockerfile_base_images(dockerfile, build_args)]


def test_single_from() -> None:
    assert bases("FROM busybox:1.36\nRUN true\n") == ["busybox:1.36"]
    refs = dockerfile_base_images("FROM busybox\n", {})
    assert refs == [ImageReference("docker.io", "library/busybox")]


def test_multi_stage_with_names_scratch_and_platform() -> None:
    dockerfile = """\
# syntax=docker/dockerfile:1
from --platform=$BUILDPLATFORM golang:1.22 AS Build
RUN go build -o /app .

FROM build as test
RUN go test ./...

FROM scratch
COPY --from=build /app /app

FROM 10.203.0.1:5000/team/runtime:1.0 AS final
FROM Build
"""
    assert bases(dockerfile) == ["golang:1.22", "10.203.0.1:5000/team/runtime:1.0"]


def test_stage_name_only_counts_after_its_definition() -> None:
    dockerfile = "FROM base\nFROM alpine:3.19 AS base\nFROM base\n"
    assert bases(dockerfile) == ["base", "alpine:3.19"]


def test_same_image_listed_once() -> None:
    assert bases("FROM alpine AS a\nFROM alpine AS b\nFROM docker.io/library/alpine\n") == [
        "alpine"
    ]


def test_continuations_comments_and_case() -> None:
    dockerfile = """\
FrOm \\
    # a comment inside the continuation
    \\

    alpine:3.19 \\
    AS   base
RUN echo one \\
  && echo two
# FROM commented:out
   # FROM indented:comment
\tFROM\tbusybox\t
"""
    assert bases(dockerfile) == ["alpine:3.19", "busybox"]


def test_crlf_and_bom() -> None:
    assert bases("\ufeffFROM alpine \\\r\n  AS a\r\nFROM busybox\r\n") == ["alpine", "busybox"]


def test_escape_directive() -> None:
    dockerfile = (
        "# escape=`\n# syntax=docker/dockerfile:1\nFROM `\n  mcr.microsoft.com/windows:ltsc\n"
    )
    assert bases(dockerfile) == ["mcr.microsoft.com/windows:ltsc"]
    # Only at the top: after another line it is a plain comment.
    with pytest.raises(InvalidReference, match="line 3"):
        bases("FROM a\n# escape=`\nFROM `\n  b\n")


def test_args_before_first_from() -> None:
    dockerfile = """\
ARG REGISTRY=10.203.0.1:5000
ARG BASE=team/runtime VERSION="1.0"
ARG DISTRO
FROM ${REGISTRY}/${BASE}:$VERSION
FROM ${DISTRO:-debian}:bookworm
ARG VERSION=9.9
FROM alpine:${VERSION}
"""
    assert bases(dockerfile) == [
        "10.203.0.1:5000/team/runtime:1.0",
        "debian:bookworm",
        "alpine:1.0",  # An ARG inside a stage does not reach later FROM lines.
    ]


def test_build_args_override_defaults() -> None:
    dockerfile = "ARG TAG=3.19\nARG DISTRO\nFROM alpine:$TAG\nFROM ${DISTRO}\n"
    assert bases(dockerfile, TAG="3.20", DISTRO="ubuntu:24.04") == ["alpine:3.20", "ubuntu:24.04"]


def test_build_args_need_a_declaration() -> None:
    with pytest.raises(InvalidReference, match=r"line 1: variable 'IMAGE' is not set"):
        bases("FROM $IMAGE\n", IMAGE="alpine")


def test_arg_defaults_see_earlier_args() -> None:
    assert bases("ARG A=alpine\nARG B=${A}:3\nFROM $B\n") == ["alpine:3"]
    assert bases("ARG A=alpine B=$A:3\nFROM $B\n") == ["alpine:3"]
    assert bases("ARG A=alpine\nARG B=${A}:3\nFROM $B\n", A="debian") == ["debian:3"]


def test_substitution_forms() -> None:
    dockerfile = """\
ARG EMPTY=
ARG SET=x
ARG NONE
FROM a${EMPTY:-b}
FROM c${EMPTY-d}
FROM e${SET:+f}
FROM g${EMPTY:+h}
FROM i${NONE+j}
FROM k${NONE-l}
FROM m${NONE:-${SET}}
FROM "quoted":'1'
FROM \\$notvar
"""
    # `\\$` in the Python string is `\\$` in the Dockerfile: an escaped, literal `$`.
    with pytest.raises(InvalidReference, match=r"line 12: invalid image reference '\$notvar'"):
        bases(dockerfile)
    assert bases(dockerfile.rsplit("FROM \\", 1)[0]) == [
        "ab",
        "c",
        "ef",
        "g",
        "i",
        "kl",
        "mx",
        "quoted:1",
    ]


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM ${NOPE}\n", "Dockerfile line 1: variable 'NOPE' is not set"),
        ("ARG TAG\n\nFROM alpine:$TAG\n", "Dockerfile line 3: variable 'TAG' is not set"),
        ("FROM alpine:${TAG\n", "Dockerfile line 1: bad substitution '${TAG'"),
        ("FROM alpine:${TAG!}\n", "Dockerfile line 1: bad substitution '${TAG!}'"),
        ("ARG A=${B}\nFROM a\n", "Dockerfile line 1: variable 'B' is not set"),
        ("ARG 1A=x\nFROM a\n", "Dockerfile line 1: ARG name '1A' is not a valid variable name"),
        ("ARG\nFROM a\n", "Dockerfile line 1: ARG needs a name"),
        ("RUN true\n", "the Dockerfile has no FROM instruction"),
        ("", "the Dockerfile has no FROM instruction"),
        ("FROM\n", "Dockerfile line 1: expected FROM [--platform=<platform>] <image> [AS <name>]"),
        ("\n# c\nFROM a AS\n", "Dockerfile line 3: expected FROM"),
        ("FROM a b\n", "Dockerfile line 1: expected FROM"),
        ("FROM a AS b c\n", "Dockerfile line 1: expected FROM"),
        ("FROM a AS 1st\n", "Dockerfile line 1: stage name '1st' must start with a letter"),
        ("FROM --pull=always a\n", "Dockerfile line 1: FROM does not take the flag '--pull"),
        ("FROM Alpine\n", "Dockerfile line 1: invalid image reference 'Alpine'"),
        ("FROM a\nFROM \\\n  alpine:-x\n", "Dockerfile line 2: invalid image reference"),
        ("ARG E=\nFROM $E\n", "Dockerfile line 2: the image '$E' of FROM expands to an empty name"),
        ("FROM 'alpine\n", "Dockerfile line 1: unterminated ' quote"),
    ],
)
def test_dockerfile_rejects(dockerfile: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(message)):
        dockerfile_base_images(dockerfile, {})


def test_heredoc_lines_are_still_checked() -> None:
    # A builder without heredoc support runs these lines as instructions; so we check them.
    dockerfile = "FROM alpine\nRUN <<EOF\nFROM evil.example.com/x\nEOF\n"
    assert bases(dockerfile) == ["alpine", "evil.example.com/x"]

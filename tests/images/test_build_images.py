"""Every image a build or a tag uses, for the registry allow-list: not only FROM, but the
frontend, COPY/ADD --from, RUN --mount from=, in ONBUILD too, with ARG and ENV expanded; and
where the source of a tag came from. Pure logic, no engine needed."""

from __future__ import annotations

import re

import pytest

from app.images.reference import InvalidReference, dockerfile_images, tag_source_names


def used(dockerfile: str, **build_args: str) -> list[str]:
    return [str(ref) for ref in dockerfile_images(dockerfile, build_args)]


@pytest.mark.parametrize(
    ("dockerfile", "build_args", "expected"),
    [
        ("FROM alpine\nCOPY --from=evil.io/x:1 /a /b\n", {}, ["alpine", "evil.io/x:1"]),
        ("FROM alpine\nADD --from=evil.io/x /a /b\n", {}, ["alpine", "evil.io/x"]),
        ("FROM alpine\ncopy --chown=1 --FROM='evil.io/x' /a /b\n", {}, ["alpine", "evil.io/x"]),
        (
            "FROM alpine\nRUN --mount=type=bind,from=evil.io/x,target=/x true\n",
            {},
            ["alpine", "evil.io/x"],
        ),
        (
            'FROM alpine\nRUN --network=none --mount="type=cache,from=evil.io/x" true\n',
            {},
            ["alpine", "evil.io/x"],
        ),
        ("# syntax=evil.io/frontend:1\nFROM alpine\n", {}, ["evil.io/frontend:1", "alpine"]),
        ("#syntax = evil.io/frontend\nFROM alpine\n", {}, ["evil.io/frontend", "alpine"]),
        ("FROM alpine\n", {"BUILDKIT_SYNTAX": "evil.io/f"}, ["evil.io/f", "alpine"]),
        ("FROM alpine\nONBUILD COPY --from=evil.io/x / /\n", {}, ["alpine", "evil.io/x"]),
        # Substituted: a stage ARG, a global one redeclared, a build argument, an ENV.
        ("FROM alpine\nARG S=evil.io/x\nCOPY --from=$S / /\n", {}, ["alpine", "evil.io/x"]),
        (
            "ARG S=evil.io/x\nFROM alpine\nARG S\nCOPY --from=${S} / /\n",
            {},
            ["alpine", "evil.io/x"],
        ),
        (
            "FROM alpine\nARG S=ok\nCOPY --from=$S / /\n",
            {"S": "evil.io/x"},
            ["alpine", "evil.io/x"],
        ),
        ("FROM alpine\nENV S=evil.io/x\nCOPY --from=$S / /\n", {}, ["alpine", "evil.io/x"]),
        ("FROM alpine\nENV S evil.io/x\nCOPY --from=$S / /\n", {}, ["alpine", "evil.io/x"]),
        # Stages are not images: by name once defined, or by index.
        (
            "FROM alpine AS Build\nFROM busybox\nCOPY --from=build / /\nCOPY --from=0 / /\n"
            "RUN --mount=from=build,target=/b true\n",
            {},
            ["alpine", "busybox"],
        ),
        # Another mount option's variable, set or not, hides no image.
        (
            "FROM alpine\nARG ID\nRUN --mount=type=cache,id=$ID,target=/c true\n",
            {},
            ["alpine"],
        ),
        (
            "FROM alpine\nARG S=evil.io/x\nRUN --mount='type=bind,from=$S' true\n",
            {},
            ["alpine", "evil.io/x"],
        ),
        # The rest of a RUN line is shell, never read as Dockerfile words.
        ("FROM alpine\nRUN echo it's --from=evil.io/x\n", {}, ["alpine"]),
    ],
)
def test_images_a_build_uses(
    dockerfile: str, build_args: dict[str, str], expected: list[str]
) -> None:
    assert used(dockerfile, **build_args) == expected


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        (
            "FROM alpine\nCOPY --from=$NOPE / /\n",
            "line 2: variable 'NOPE' is not set; declare it with ARG in the stage",
        ),
        # A global ARG is not seen in a stage unless the stage declares it again.
        ("ARG S=x\nFROM alpine\nCOPY --from=$S / /\n", "line 3: variable 'S' is not set"),
        ("FROM alpine\nCOPY --from=Evil / /\n", "line 2: invalid image reference 'Evil'"),
        ("# syntax=Evil\nFROM alpine\n", "syntax (frontend image): invalid image reference"),
    ],
)
def test_an_image_the_check_cannot_name_is_refused(dockerfile: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(message)):
        dockerfile_images(dockerfile, {})


ID = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("source", "names", "expected"),
    [
        # A name speaks for itself, as the engine lists it (`:latest` added).
        ("evil.io/x", None, ["evil.io/x"]),
        ("busybox", ["busybox:latest", "10.0.0.5:5000/b:1"], ["busybox"]),
        # An id (or a name the image does not have) stands for every name of the image.
        (ID, ["evil.io/x:1", "10.0.0.5:5000/b:1"], ["evil.io/x:1", "10.0.0.5:5000/b:1"]),
        ("bbbbbbbbbbbb", ["evil.io/x:1", "<none>:<none>"], ["evil.io/x:1"]),
        (ID, None, []),
    ],
)
def test_where_a_tag_source_came_from(
    source: str, names: list[str] | None, expected: list[str]
) -> None:
    assert [str(ref) for ref in tag_source_names(source, names)] == expected

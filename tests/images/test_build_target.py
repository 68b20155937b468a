"""`target` of an image build on a real engine: the build stops at that stage of a multi-stage
Dockerfile (the stage after it fails, so a build that ignored `target` would fail)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import BUSYBOX, DOCKERFILE, Api, Images, context_tar
from tests.testbed import Testbed

STAGES = (
    DOCKERFILE.replace("FROM scratch", "FROM scratch AS base", 1)
    + "FROM base AS serve\nLABEL stage=serve\n"
    + "FROM serve AS broken\nRUN exit 1\n"
)


@pytest.fixture
def images(api: Api, bed: Testbed) -> Iterator[Images]:
    helper = Images(api, bed)
    yield helper
    helper.cleanup()


def test_a_build_stops_at_its_target(images: Images, bed: Testbed) -> None:
    context = context_tar({"Dockerfile": STAGES.encode(), "busybox": BUSYBOX.read_bytes()})
    reference = images.reference(bed.registry)

    done = images.build([reference], context=context, target="serve")

    assert done["status"] == "succeeded", done
    inspected = images.engines["h1"].api.inspect_image(reference)  # type: ignore[no-untyped-call]
    assert inspected["Config"]["Labels"]["stage"] == "serve"


def test_without_a_target_the_last_stage_is_built(images: Images, bed: Testbed) -> None:
    context = context_tar({"Dockerfile": STAGES.encode(), "busybox": BUSYBOX.read_bytes()})

    done = images.build([images.reference(bed.registry)], context=context)

    assert done["status"] == "failed", done

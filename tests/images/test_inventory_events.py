"""The image inventory follows the engine's events: a change made behind Berth's back shows in
`GET /images` within seconds although the inventory loop's full re-read is an hour away (the
container followers see the image and container events and re-read that host)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import Api, Images, inventory, wait_for
from tests.testbed import Testbed


@pytest.fixture
def images(
    settings_factory: Callable[..., Settings], db: Database, bed: Testbed
) -> Iterator[Images]:
    settings = settings_factory(image_sync_interval_seconds=3600)
    with TestClient(create_app(settings)) as client:
        helper = Images(Api(client, db), bed)
        yield helper
        helper.cleanup()


def _uses(images: Images, reference: str, host_id: str) -> int | None:
    found = inventory(images.api, reference, host_id)
    return int(found[0]["containers"]) if found else None


def test_image_and_container_events_refresh_the_inventory(images: Images, bed: Testbed) -> None:
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"  # the build refreshes h1
    assert _uses(images, reference, h1) == 0
    engine = images.engines["h1"]

    container = engine.containers.create(reference, command=["true"])
    try:
        wait_for(lambda: _uses(images, reference, h1) == 1, timeout=20, what="a container's use")
        alias = images.reference(bed.registry, tag="alias")
        engine.images.get(reference).tag(alias)
        wait_for(lambda: inventory(images.api, alias, h1), timeout=20, what="the new tag")
    finally:
        container.remove(force=True)
    wait_for(lambda: _uses(images, reference, h1) == 0, timeout=20, what="the use to end")
    engine.images.remove(alias)
    wait_for(lambda: not inventory(images.api, alias, h1), timeout=20, what="the tag to go")

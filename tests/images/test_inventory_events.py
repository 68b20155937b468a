"""The image inventory follows the engine's events: a change made behind Berth's back shows in
`GET /images` within seconds although the inventory loop's full re-read is an hour away (the
container followers see the image and container events and re-read that host)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.images.models import Image
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


def _read_at(db: Database, host_id: str, reference: str) -> datetime:
    with db.session(write=False) as session:
        return session.execute(
            select(Image.observed_at).where(
                Image.host_id == host_id, Image.references.contains(f"\n{reference}\n")
            )
        ).scalar_one()


def test_container_events_recount_without_re_reading_the_inventory(
    images: Images, db: Database, bed: Testbed
) -> None:
    """A container made or removed changes only how many containers use an image: the
    followers recount those (one container list) and leave the inventory's full reading alone,
    which a service placing many replicas on a host would otherwise repeat per burst."""
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    engine = images.engines["h1"]
    made = [engine.containers.create(reference, command=["true"])]
    try:
        wait_for(lambda: _uses(images, reference, h1) == 1, timeout=20, what="a container's use")
        # The follower's first re-read is long done: only the counts may move from here on.
        read_at = _read_at(db, h1, reference)
        made.append(engine.containers.create(reference, command=["true"]))
        wait_for(lambda: _uses(images, reference, h1) == 2, timeout=20, what="the second use")
        made.pop().remove(force=True)
        wait_for(lambda: _uses(images, reference, h1) == 1, timeout=20, what="a use to end")
        assert _read_at(db, h1, reference) == read_at
    finally:
        for container in made:
            container.remove(force=True)

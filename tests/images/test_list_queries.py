"""`GET /images` reads a page in a fixed number of queries, however many images it holds."""

from __future__ import annotations

from functools import partial

from app.core.config import Settings
from app.core.db import Database
from app.images.models import Image
from tests.statements import QuietApi, add_host


def add_images(db: Database, names: list[str]) -> None:
    with db.session() as session:
        host = add_host(session, f"host-{names[0]}")
        session.add_all(
            Image(host_id=host.id, docker_id=f"sha256:{name}", repo_tags=[f"{name}:latest"])
            for name in names
        )


def test_listing_images_does_not_query_per_image(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    one, ten = api.statements_for_1_and_10("/images", partial(add_images, db), "img")
    assert len(api.get("/images").json()["items"]) == 10
    assert ten == one

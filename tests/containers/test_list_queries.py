"""`GET /containers` reads a page in a fixed number of queries, however many it holds."""

from __future__ import annotations

from functools import partial

from app.containers.models import Container
from app.core.config import Settings
from app.core.db import Database
from tests.statements import QuietApi, add_host


def add_containers(db: Database, names: list[str]) -> None:
    with db.session() as session:
        host = add_host(session, f"host-{names[0]}")
        session.add_all(
            Container(name=name, host_id=host.id, spec={}, image="busybox") for name in names
        )


def test_listing_containers_does_not_query_per_container(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    path = "/containers"
    one, ten = api.statements_for_1_and_10(path, partial(add_containers, db), "ctr")
    assert len(api.get(path).json()["items"]) == 10
    assert ten == one

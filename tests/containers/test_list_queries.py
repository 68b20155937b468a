"""`GET /containers` reads a page in a fixed number of queries, however many it holds."""

from __future__ import annotations

from functools import partial

from app.containers.models import Container
from app.core.config import Settings
from app.core.db import Database
from app.hosts.models import Host
from tests.statements import QuietApi


def add_containers(db: Database, names: list[str]) -> None:
    with db.session() as session:
        host = Host(name=f"host-{names[0]}", url="tcp://127.0.0.1:1")
        session.add(host)
        session.flush()
        session.add_all(
            Container(name=name, host_id=host.id, spec={}, image="busybox") for name in names
        )


def test_listing_containers_does_not_query_per_container(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    path = "/containers"
    one, ten = api.statements_for_1_and_10(path, partial(add_containers, db), "ctr")
    assert len(api.get(path).json()["items"]) == 10
    assert ten == one

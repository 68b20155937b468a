"""`GET /hosts` reads a page in a fixed number of queries, however many hosts it holds."""

from __future__ import annotations

from functools import partial

from app.core.config import Settings
from app.core.db import Database
from tests.statements import QuietApi, add_host


def add_hosts(db: Database, names: list[str]) -> None:
    with db.session() as session:
        for name in names:
            add_host(session, name)


def test_listing_hosts_does_not_query_per_host(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    one, ten = api.statements_for_1_and_10("/hosts", partial(add_hosts, db), "host")
    assert len(api.get("/hosts").json()["items"]) == 10
    assert ten == one

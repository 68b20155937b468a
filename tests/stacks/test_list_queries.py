"""`GET /stacks` reads a page in a fixed number of queries, however many stacks it holds."""

from __future__ import annotations

from functools import partial

from app.core.config import Settings
from app.core.db import Database
from app.services.models import Service
from app.stacks.models import Stack
from tests.statements import QuietApi


def add_stacks(db: Database, names: list[str]) -> None:
    """Stacks of two services each."""
    with db.session() as session:
        for name in names:
            stack = Stack(
                name=name,
                compose="services: {}",
                host_id="no-host",
                plan={
                    "services": [{"name": f"{name}-{c}", "compose_name": c} for c in ("web", "db")]
                },
            )
            session.add(stack)
            session.flush()
            session.add_all(
                Service(name=f"{name}-{c}", stack_id=stack.id, spec={"image": "busybox"})
                for c in ("web", "db")
            )


def test_listing_stacks_does_not_query_per_stack(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    one, ten = api.statements_for_1_and_10("/stacks", partial(add_stacks, db), "stack")

    page = api.get("/stacks").json()["items"]
    assert len(page) == 10
    # The services are read for the page, not per stack.
    assert all([d["compose_name"] for d in s["service_details"]] == ["db", "web"] for s in page)
    assert ten == one

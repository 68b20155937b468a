"""`GET /services` reads a page in a fixed number of queries, however many services it holds."""

from __future__ import annotations

from functools import partial

from app.containers.models import Container
from app.core.config import Settings
from app.core.db import Database
from app.services.models import Service
from tests.statements import QuietApi, add_host


def add_services(db: Database, names: list[str]) -> None:
    """Services of two tasks each: one on a ready host, one on a host that does not answer."""
    with db.session() as session:
        hosts = [
            add_host(session, f"host-{status}-{names[0]}", status)
            for status in ("ready", "unreachable")
        ]
        for name in names:
            service = Service(name=name, spec={"image": "busybox", "replicas": 2}, replicas=2)
            session.add(service)
            session.flush()
            for slot, host in enumerate(hosts):
                session.add(
                    Container(
                        name=f"{name}.{slot}",
                        host_id=host.id,
                        service_id=service.id,
                        slot=slot,
                        revision=1,
                        spec={},
                        image="busybox",
                        state="running",
                    )
                )


def test_listing_services_does_not_query_per_service(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    one, ten = api.statements_for_1_and_10("/services", partial(add_services, db), "svc")

    page = api.get("/services").json()["items"]
    assert len(page) == 10
    # The tasks and their hosts' state are read for the page, not per service.
    assert all(s["replicas"] == {"desired": 2, "running": 1, "healthy": 1} for s in page)
    assert ten == one

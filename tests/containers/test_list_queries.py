"""`GET /containers` reads a page in a fixed number of queries, however many it holds."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event

from app.api.pagination import encode_cursor
from app.containers import service
from app.containers.models import Container
from app.core.config import Settings
from app.core.db import Database
from app.security.roles import DEFAULT_PROJECT_ID
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


def test_filters_and_cursors_page_the_same_rows(settings: Settings, db: Database) -> None:
    """The list's statements are built once per shape (app/api/pagination.py PageQuery): each
    filter, alone, combined, with a label and across pages, still selects what it names."""
    with db.session() as session:
        hosts = [add_host(session, "list-a"), add_host(session, "list-b")]
        session.add_all(
            Container(
                name=f"ctr-{n}",
                host_id=hosts[n % 2].id,
                service_id="svc-one" if n < 4 else None,
                state="running" if n % 3 else "exited",
                labels={"tier": "web"} if n % 4 == 0 else {"tier": "db"} if n == 1 else {},
                spec={"image": "busybox", "env": {"N": str(n)}},
                image="busybox",
            )
            for n in range(9)
        )
    api = QuietApi(settings, db)
    everything = api.get("/containers", params={"limit": 500}).json()
    assert everything["next_cursor"] is None
    rows = everything["items"]
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    assert len(rows) == 9

    def listed(**params: object) -> list[str]:
        """Every name the list gives for `params`, read two to a page."""
        names: list[str] = []
        cursor: dict[str, object] = {}
        while True:
            page = api.get("/containers", params={**params, "limit": 2, **cursor})
            assert page.status_code == 200, page.text
            names += [item["name"] for item in page.json()["items"]]
            if page.json()["next_cursor"] is None:
                return names
            cursor = {"cursor": page.json()["next_cursor"]}

    def expected(keep: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [row["name"] for row in rows if keep(row)]

    host_a = hosts[0].id
    assert listed() == expected(lambda r: True)
    assert listed(host_id=host_a) == expected(lambda r: r["host_id"] == host_a)
    assert listed(service_id="svc-one") == expected(lambda r: r["service_id"] == "svc-one")
    assert listed(state="exited") == expected(lambda r: r["state"] == "exited")
    assert listed(host_id=host_a, state="running", service_id="svc-one") == expected(
        lambda r: r["host_id"] == host_a and r["state"] == "running" and r["service_id"]
    )
    assert listed(label="tier") == expected(lambda r: "tier" in r["labels"])
    assert listed(label="tier=web", host_id=host_a) == expected(
        lambda r: r["labels"].get("tier") == "web" and r["host_id"] == host_a
    )
    assert listed(host_id="nope") == []
    assert api.get("/containers", params={"cursor": "!!"}).status_code == 400
    # The list's rows are shown exactly as a single read shows them.
    for row in rows:
        assert api.get(f"/containers/{row['id']}").json() == row


@pytest.mark.sqlite_only
def test_a_filtered_page_is_read_in_key_order_not_sorted(
    db: Database, database_backend: str
) -> None:
    """A page of a filter is read from an index that holds the filter's column and the page key
    (migrations 0017 and 0018): 51 rows in order, not every row the filter matches sorted for
    each page (a page of `state=running` over 50,000 running containers took 38 ms that way,
    and grew with the table; a viewer's page, narrowed to its project, cost 3-4 times an
    admin's). Checked on SQLite's plan; PostgreSQL's depends on its statistics."""
    with db.session() as session:
        host = add_host(session, "plan")
        session.add(Container(name="c", host_id=host.id, spec={}, image="busybox"))
    project = frozenset({DEFAULT_PROJECT_ID})
    filters: list[dict[str, Any]] = [
        {"host_id": host.id},
        {"service_id": "svc"},
        {"state": "running"},
        {"host_id": host.id, "state": "running"},
        {"service_id": "svc", "state": "running"},
        {"projects": project},
    ]
    plans: list[str] = []

    def explain(connection: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("SELECT containers.id"):
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            plans.append(" / ".join(str(row[-1]) for row in rows))

    event.listen(db.read_engine, "before_cursor_execute", explain)
    try:
        for equal in filters:
            for cursor in (None, encode_cursor("0" * 26)):
                plans.clear()
                with db.session(write=False) as session:
                    service.get_all(
                        session,
                        limit=50,
                        cursor=cursor,
                        host_id=equal.get("host_id"),
                        service_id=equal.get("service_id"),
                        state=equal.get("state"),
                        projects=equal.get("projects"),
                    )
                assert len(plans) == 1, (equal, plans)
                assert "TEMP B-TREE" not in plans[0], (equal, cursor, plans[0])
    finally:
        event.remove(db.read_engine, "before_cursor_execute", explain)

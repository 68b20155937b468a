"""`GET /containers` answers the same bytes however its page is read: each item is what the
container's stored row says through SQLAlchemy's own types (JSON, `UTCDateTime`, booleans),
merged with the spec's defaults as a listing always showed it, and serialised by orjson."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from app.api.middleware.conditional import weak_etag
from app.api.pagination import encode_cursor
from app.containers.models import Container
from app.containers.service import _SPEC_DEFAULTS
from app.core.config import Settings
from app.core.db import Database
from app.projects.models import Project
from app.security.roles import Role
from app.tokens import service as tokens
from tests.statements import QuietApi, add_host


def _expected_item(container: Container, project: str) -> dict[str, Any]:
    """A listed container, built as the list built it before its page was read undecoded: the
    defaults, the stored spec's known options over them, `resources` completed."""
    spec = dict(_SPEC_DEFAULTS)
    spec.update({k: v for k, v in container.spec.items() if k in _SPEC_DEFAULTS})
    spec["resources"] = {"cpus": None, "memory_bytes": None, **(spec["resources"] or {})}
    return {
        "id": container.id,
        "name": container.name,
        "project": project,
        "host_id": container.host_id,
        "service_id": container.service_id,
        "image": container.image,
        **spec,
        "labels": container.labels,
        "managed": container.managed,
        "desired_state": container.desired_state,
        "state": container.state,
        "health": container.health,
        "exit_code": container.exit_code,
        "docker_id": container.docker_id,
        "error": container.error,
        "created_at": container.created_at,
        "observed_at": container.observed_at,
        "version": container.version,
    }


def _rows(db: Database) -> None:
    """Containers that exercise every decoded column: JSON with nested values and non-ASCII
    text, a spec stored in another key order and with keys a listing does not show, partial
    resources, foreign containers with no spec, datetimes with and without microseconds,
    nulls, and a second project."""
    with db.session() as session:
        host = add_host(session, "bytes-host")
        other = Project(name="bytes-other")
        session.add(other)
        session.flush()
        when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
        session.add_all(
            [
                Container(
                    name="managed",
                    host_id=host.id,
                    image="busybox:1.36",
                    spec={
                        "env": {"GREETING": "grüß dich", "EMPTY": ""},
                        "image": "busybox:1.36",
                        "command": ["sleep", "infinity"],
                        "resources": {"memory_bytes": 67108864},
                        "ports": [{"container_port": 80, "host_port": 8080, "protocol": "tcp"}],
                        "labels": {"in": "spec"},
                        "registry_id": None,
                        "privileged": False,
                        "stop_grace_period_s": 2.5,
                    },
                    labels={"tier": "web", "emoji": "🚢", "quote": 'a "b"'},
                    state="running",
                    health="healthy",
                    docker_id="d" * 64,
                    created_at=when,
                    observed_at=when.replace(microsecond=123456),
                ),
                Container(
                    name="foreign",
                    host_id=host.id,
                    image="nginx",
                    spec={},
                    managed=False,
                    state="exited",
                    exit_code=137,
                    error="killed\nby the OOM killer",
                    created_at=when.replace(microsecond=1),
                ),
                Container(
                    name="task",
                    host_id=host.id,
                    image="redis:7",
                    spec={"resources": None, "restart_policy": "always", "cap_add": ["NET_ADMIN"]},
                    service_id="svc-bytes",
                    desired_state="stopped",
                    version=7,
                ),
                Container(
                    name="elsewhere",
                    host_id=host.id,
                    image="alpine",
                    spec={"image": "alpine", "user": "1000:1000"},
                    project_id=other.id,
                ),
            ]
        )


def _expected_body(db: Database, *, limit: int, projects: set[str] | None) -> bytes:
    with db.session(write=False) as session:
        names = {row.id: row.name for row in session.execute(select(Project.id, Project.name))}
        containers = session.execute(select(Container).order_by(Container.id)).scalars().all()
        shown = [c for c in containers if projects is None or names[c.project_id] in projects]
        items = [_expected_item(c, names[c.project_id]) for c in shown[:limit]]
    next_cursor = encode_cursor(shown[limit - 1].id) if len(shown) > limit else None
    body = {"items": items, "next_cursor": next_cursor}
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def test_the_page_is_the_same_bytes_as_its_rows_read_through_their_types(
    settings: Settings, db: Database
) -> None:
    _rows(db)
    api = QuietApi(settings, db)
    with db.session() as session:  # QuietApi runs no start-up chores: no bootstrap token
        _, admin = tokens.create(session, name="test-bytes-admin", role=Role.admin)
    as_admin = {"headers": {"Authorization": f"Bearer {admin}"}, "role": None}
    for caller, projects in (
        (as_admin, None),
        ({"role": Role.viewer}, {"default"}),
    ):
        for limit in (500, 2):
            page = api.get("/containers", params={"limit": limit}, **caller)
            assert page.status_code == 200, page.text
            expected = _expected_body(db, limit=limit, projects=projects)
            assert page.content == expected
            assert page.headers["content-type"] == "application/json"
            assert page.headers["etag"] == weak_etag(expected)

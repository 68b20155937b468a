"""Four-eyes approvals and change windows, end to end: a protected project's writes become
change requests that another approver approves, applied as their author on the real engines;
rejected, expired, broken glass, and held for a window with the clock moved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.changes import clock
from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.security.roles import DEFAULT_PROJECT_ID, ProjectRole, Role
from app.tokens import service as tokens
from app.tokens.models import TokenProjectRole
from tests.support import Api, Services, context_tar, send_project, wait_for
from tests.testbed import Testbed


class Clock:
    """The change clock, set by the test (app.changes.clock)."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


@pytest.fixture
def moved_clock() -> Iterator[Clock]:
    fake = Clock()
    previous = clock.use(fake)
    yield fake
    clock.use(previous)


@pytest.fixture
def api(settings_factory: Callable[..., Settings], db: Database) -> Iterator[Api]:
    """The app with a change loop that runs every fifth of a second."""
    with TestClient(create_app(settings_factory(change_interval_seconds=0.2))) as client:
        yield Api(client, db)


def _protect(api: Api, **fields: Any) -> None:
    response = api.patch("/projects/default", json=fields)
    assert response.status_code == 200, response.text


@pytest.fixture
def protected(api: Api) -> Iterator[None]:
    """The default project protected (and put back: the tables are emptied around it)."""
    _protect(api, protected=True)
    yield
    _protect(api, protected=False, windows=[], outside_window="wait")


class Person:
    """A token with a role in the default project, speaking through `api`."""

    def __init__(self, api: Api, name: str, role: ProjectRole) -> None:
        self.api = api
        with api.db.session() as session:
            row, self.secret = tokens.create(session, name=name, role=Role.viewer)
            session.add(TokenProjectRole(token_id=row.id, project_id=DEFAULT_PROJECT_ID, role=role))
            self.actor = f"{name} ({row.id})"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secret}", **kwargs.pop("headers", {})}
        return self.api.request(method, path, role=None, headers=headers, **kwargs)


@pytest.fixture
def alice(api: Api) -> Person:
    return Person(api, "alice", ProjectRole.approver)


@pytest.fixture
def bob(api: Api) -> Person:
    return Person(api, "bob", ProjectRole.approver)


def _held(response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    change: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/changes/{change['id']}"
    assert change["state"] == "pending"
    return change


def _service_body(bed: Testbed, **spec: Any) -> dict[str, Any]:
    spec = {"image": bed.image, "command": ["sleep", "300"], "replicas": 1, **spec}
    return {"name": "held-web", "spec": spec}


@pytest.mark.usefixtures("protected")
def test_a_held_service_runs_as_its_author_once_another_approver_approves(
    api: Api, services: Services, bed: Testbed, alice: Person, bob: Person
) -> None:
    body = _service_body(bed, placement={"constraints": ["name==h1"]})
    change = _held(alice.call("POST", "/services", json=body))
    assert (change["kind"], change["project"]) == ("service.create", "default")
    assert change["author"] == alice.actor
    assert change["payload"]["name"] == "held-web"
    # The plan is the planner's: one replica to start, on h1.
    assert [(s["slot"], s["host_name"]) for s in change["plan"]["start"]] == [(1, "h1")]
    assert api.get("/services", params={"name": "held-web"}).json()["items"] == []

    refused = alice.call("POST", f"/changes/{change['id']}/approve")
    assert refused.status_code == 403, refused.text
    assert "four eyes" in refused.json()["detail"]
    # A global operator is no approver in the project.
    assert api.post(f"/changes/{change['id']}/approve", role=Role.operator).status_code == 403

    approved = bob.call("POST", f"/changes/{change['id']}/approve")
    assert approved.status_code == 200, approved.text
    done = approved.json()
    assert done["state"] == "applied" and done["approver"] == bob.actor
    operation = api.wait_operation(done["operations"][0], timeout=90)
    assert operation["status"] == "succeeded", operation
    assert operation["created_by"] == alice.actor  # run as the author

    service_id = api.get("/services", params={"name": "held-web"}).json()["items"][0]["id"]
    services.settled(service_id, 1)
    assert services.running_on_engines(service_id) == {"h1": 1, "h2": 0}
    revisions = api.get(f"/services/{service_id}/revisions").json()["items"]
    assert revisions[0]["created_by"] == alice.actor

    entries = api.get("/audit", params={"action": "approve_change"}).json()["items"]
    # The refused attempts are audited too, as failures.
    assert [(e["actor"], e["outcome"]) for e in entries[:2]] == [
        (alice.actor, 403),
        ("test-operator (" + entries[1]["token_id"] + ")", 403),
    ]
    assert [(e["actor"], e["author"], e["resource"]) for e in entries[2:]] == [
        (bob.actor, alice.actor, f"services/{service_id}")
    ]
    assert api.get("/audit/verify").json()["ok"]
    # Answered once: approving again is a conflict.
    assert bob.call("POST", f"/changes/{change['id']}/approve").status_code == 409


@pytest.mark.usefixtures("protected")
def test_a_rejected_change_is_never_applied(
    api: Api, bed: Testbed, alice: Person, bob: Person
) -> None:
    change = _held(alice.call("POST", "/services", json=_service_body(bed)))
    assert (
        alice.call("POST", f"/changes/{change['id']}/reject", json={"reason": "no"}).status_code
        == 403
    )
    rejected = bob.call("POST", f"/changes/{change['id']}/reject", json={"reason": "freeze"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected" and rejected.json()["reason"] == "freeze"
    assert bob.call("POST", f"/changes/{change['id']}/approve").status_code == 409
    assert api.get("/services", params={"name": "held-web"}).json()["items"] == []
    listed = api.get("/changes", params={"state": "rejected", "project": "default"}).json()
    assert [c["id"] for c in listed["items"]] == [change["id"]]
    assert api.get("/changes", params={"project": "another"}).json()["items"] == []


@pytest.mark.usefixtures("protected")
def test_an_unanswered_change_expires(
    api: Api, bed: Testbed, alice: Person, bob: Person, moved_clock: Clock
) -> None:
    change = _held(alice.call("POST", "/services", json=_service_body(bed)))
    moved_clock.at = datetime.now(UTC) + timedelta(days=1, minutes=1)  # past the 24 h TTL
    expired = wait_for(
        lambda: (c := api.get(f"/changes/{change['id']}").json())["state"] == "expired" and c,
        timeout=10,
        what="the loop to expire the change",
    )
    assert expired["decided_at"] is None
    assert bob.call("POST", f"/changes/{change['id']}/approve").status_code == 409
    assert api.get("/services", params={"name": "held-web"}).json()["items"] == []


@pytest.mark.usefixtures("protected")
def test_a_global_admin_breaks_glass_with_a_reason(
    api: Api, services: Services, bed: Testbed
) -> None:
    body = _service_body(bed, replicas=0)
    empty = api.post("/services", json=body, headers={"X-Berth-Break-Glass": " "})
    assert empty.status_code == 422, empty.text
    operator = api.post(
        "/services", json=body, role=Role.operator, headers={"X-Berth-Break-Glass": "why not"}
    )
    assert operator.status_code == 403, operator.text

    direct = api.post("/services", json=body, headers={"X-Berth-Break-Glass": "incident 42"})
    assert direct.status_code == 202, direct.text
    service_id = direct.json()["service"]["id"]  # applied at once, no change request
    assert api.get("/changes").json()["items"] == []
    entries = api.get("/audit", params={"resource": f"services/{service_id}"}).json()["items"]
    assert [(e["action"], e["break_glass"]) for e in entries] == [("create_service", "incident 42")]
    assert api.get("/audit/verify").json()["ok"]


def test_an_unprotected_project_is_not_held(api: Api, bed: Testbed) -> None:
    response = api.post("/services", json=_service_body(bed, replicas=0), role=Role.operator)
    assert response.status_code == 202, response.text
    assert "service" in response.json()
    assert api.get("/changes").json()["items"] == []


# Monday 30 November 2026, 06:00 UTC: 07:00 in Zurich, before its 09:00 window.
MONDAY_EARLY = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
OFFICE = [{"days": ["mon", "tue"], "start": "09:00", "end": "17:00", "tz": "Europe/Zurich"}]


@pytest.mark.usefixtures("protected")
def test_an_approval_outside_the_window_waits_for_it(
    api: Api, bob: Person, moved_clock: Clock
) -> None:
    _protect(api, windows=OFFICE)
    assert api.get("/projects/default").json()["windows"] == OFFICE
    moved_clock.at = MONDAY_EARLY
    change = _held(api.post("/secrets", json={"name": "db_password", "value": "s3cret"}))
    assert "s3cret" not in str(change)
    waiting = bob.call("POST", f"/changes/{change['id']}/approve")
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["state"] == "waiting_window"
    # 09:00 in Zurich (CET) is 08:00 UTC.
    assert waiting.json()["not_before"] == "2026-11-30T08:00:00Z"
    listed = api.get("/changes", params={"state": "waiting_window"}).json()["items"]
    assert [c["id"] for c in listed] == [change["id"]]
    assert api.get("/secrets").json()["items"] == []
    # Another one, approved too, is called off while it waits.
    other = _held(api.post("/secrets", json={"name": "other", "value": "x"}))
    assert bob.call("POST", f"/changes/{other['id']}/approve").json()["state"] == "waiting_window"
    off = bob.call("POST", f"/changes/{other['id']}/reject", json={"reason": "not needed"})
    assert off.json()["state"] == "rejected", off.text

    moved_clock.at = datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC)
    applied = wait_for(
        lambda: (c := api.get(f"/changes/{change['id']}").json())["state"] == "applied" and c,
        timeout=10,
        what="the loop to apply the change when its window opens",
    )
    assert applied["applied_at"] == "2026-11-30T08:00:01Z"
    [secret] = api.get("/secrets").json()["items"]
    assert secret["name"] == "db_password"
    entries = api.get("/audit", params={"action": "apply_change_in_window"}).json()["items"]
    assert [(e["actor"], e["resource"]) for e in entries] == [
        (bob.actor, f"secrets/{secret['id']}")
    ]


@pytest.mark.usefixtures("protected")
def test_a_project_may_refuse_approvals_outside_its_windows_unless_glass_is_broken(
    api: Api, bed: Testbed, alice: Person, bob: Person, moved_clock: Clock
) -> None:
    _protect(api, windows=OFFICE, outside_window="refuse")
    moved_clock.at = MONDAY_EARLY
    change = _held(alice.call("POST", "/services", json=_service_body(bed, replicas=0)))
    refused = bob.call("POST", f"/changes/{change['id']}/approve")
    assert refused.status_code == 409, refused.text
    assert "mon,tue 09:00-17:00 Europe/Zurich" in refused.json()["detail"]
    assert "2026-11-30T08:00Z" in refused.json()["detail"]
    assert api.get(f"/changes/{change['id']}").json()["state"] == "pending"

    # A global admin's approval with a reason applies it at once, outside the window.
    forced = api.post(
        f"/changes/{change['id']}/approve", headers={"X-Berth-Break-Glass": "incident 7"}
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["state"] == "applied" and forced.json()["break_glass"] == "incident 7"
    entries = api.get("/audit", params={"action": "approve_change"}).json()["items"]
    assert [(e["outcome"], e["author"], e["break_glass"]) for e in entries] == [
        (409, None, None),
        (200, alice.actor, "incident 7"),
    ]


@pytest.mark.usefixtures("protected")
def test_a_held_stack_deploys_as_its_author_once_approved(
    api: Api, services: Services, bed: Testbed, alice: Person, bob: Person
) -> None:
    compose = f"services:\n  app:\n    image: {bed.image}\n    command: [sleep, '300']\n"
    fields = {
        "name": "held-shop",
        "host_id": services.hosts["h1"],
        "compose": compose,
        "variables": {"DB_PASSWORD": "hunter2", "GREETING": "hi"},
    }
    # A change request keeps its Compose file as JSON, not an uploaded project.
    archive = context_tar({"compose.yaml": compose.encode()})
    uploaded = send_project(api, "POST", "/stacks", archive, name="held-shop")
    assert uploaded.status_code == 422, uploaded.text
    assert "protected" in uploaded.json()["detail"]

    change = _held(alice.call("POST", "/stacks", json=fields))
    assert change["kind"] == "stack.create"
    assert change["payload"]["variables"] == {"DB_PASSWORD": "***", "GREETING": "hi"}
    assert [s["name"] for s in change["plan"]["services"]] == ["held-shop-app"]
    assert api.get("/stacks", params={"name": "held-shop"}).json()["items"] == []

    done = bob.call("POST", f"/changes/{change['id']}/approve").json()
    assert done["state"] == "applied", done
    deploy = api.wait_operation(done["operations"][0], timeout=120)
    assert deploy["status"] == "succeeded", deploy["error"]
    assert deploy["created_by"] == alice.actor
    [stack] = api.get("/stacks", params={"name": "held-shop"}).json()["items"]
    assert stack["status"] == "running"

    # Removing it is a change request too; the author keeps the stack until it is approved.
    removal = _held(alice.call("DELETE", f"/stacks/{stack['id']}"))
    assert removal["plan"]["services"] == ["held-shop-app"]
    assert bob.call("POST", f"/changes/{removal['id']}/approve").json()["state"] == "applied"


@pytest.mark.usefixtures("protected")
def test_an_approved_change_fails_when_its_target_moved_past_the_if_match(
    api: Api, services: Services, bed: Testbed, alice: Person, bob: Person
) -> None:
    created = api.post(
        "/services",
        json=_service_body(bed, replicas=0),
        headers={"X-Berth-Break-Glass": "bootstrap the project"},
    )
    assert created.status_code == 202, created.text
    service = created.json()["service"]
    scale = alice.call(
        "POST",
        f"/services/{service['id']}/scale",
        json={"replicas": 3},
        headers={"If-Match": f'"{service["version"]}"'},
    )
    change = _held(scale)
    assert change["kind"] == "service.scale"
    assert [planned["slot"] for planned in change["plan"]["start"]] == [1, 2, 3]
    # Meanwhile the service changes (an admin breaks glass): the approved plan is stale.
    moved = api.post(
        f"/services/{service['id']}/scale",
        json={"replicas": 1},
        headers={"X-Berth-Break-Glass": "load spike"},
    )
    assert moved.status_code == 202, moved.text
    failed = bob.call("POST", f"/changes/{change['id']}/approve").json()
    assert failed["state"] == "failed", failed
    assert "If-Match" in failed["error"]
    assert api.get(f"/services/{service['id']}").json()["replicas"]["desired"] == 1

"""Every route of the OpenAPI document, called with no token, a bad token and a token of each
role, gets exactly what the role table below allows: 401 without a valid token, 403 below the
route's role, and neither at or above it (a 404 or 422 there proves authentication passed).

The table is written here, not read from the code: a new route without an entry fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.security.roles import Role
from tests.support import Api

PUBLIC = None

ROLES: dict[tuple[str, str], Role | None] = {
    ("POST", "/api/v1/hosts"): Role.admin,
    ("GET", "/api/v1/hosts"): Role.viewer,
    ("GET", "/api/v1/hosts/{host_id}"): Role.viewer,
    ("PATCH", "/api/v1/hosts/{host_id}"): Role.admin,
    ("POST", "/api/v1/hosts/{host_id}/drain"): Role.admin,
    ("DELETE", "/api/v1/hosts/{host_id}"): Role.admin,
    ("GET", "/api/v1/operations"): Role.viewer,
    ("GET", "/api/v1/operations/{operation_id}"): Role.viewer,
    ("GET", "/api/v1/operations/{operation_id}/logs"): Role.viewer,
    ("POST", "/api/v1/operations/{operation_id}/cancel"): Role.operator,
    ("POST", "/api/v1/registries"): Role.admin,
    ("GET", "/api/v1/registries"): Role.viewer,
    ("GET", "/api/v1/registries/{registry_id}"): Role.viewer,
    ("PATCH", "/api/v1/registries/{registry_id}"): Role.admin,
    ("DELETE", "/api/v1/registries/{registry_id}"): Role.admin,
    ("POST", "/api/v1/registries/{registry_id}/check"): Role.admin,
    ("GET", "/api/v1/images"): Role.viewer,
    ("GET", "/api/v1/images/{image_id}"): Role.viewer,
    ("DELETE", "/api/v1/images/{image_id}"): Role.operator,
    ("POST", "/api/v1/images/pull"): Role.operator,
    ("POST", "/api/v1/images/push"): Role.operator,
    ("POST", "/api/v1/images/tag"): Role.operator,
    ("POST", "/api/v1/images/build"): Role.operator,
    ("POST", "/api/v1/containers"): Role.operator,
    ("GET", "/api/v1/containers"): Role.viewer,
    ("GET", "/api/v1/containers/{container_id}"): Role.viewer,
    ("POST", "/api/v1/containers/{container_id}/start"): Role.operator,
    ("POST", "/api/v1/containers/{container_id}/stop"): Role.operator,
    ("POST", "/api/v1/containers/{container_id}/restart"): Role.operator,
    ("POST", "/api/v1/containers/{container_id}/kill"): Role.operator,
    ("DELETE", "/api/v1/containers/{container_id}"): Role.operator,
    ("GET", "/api/v1/containers/{container_id}/logs"): Role.viewer,
    ("GET", "/api/v1/containers/{container_id}/stats"): Role.viewer,
    ("POST", "/api/v1/services"): Role.operator,
    ("GET", "/api/v1/services"): Role.viewer,
    ("GET", "/api/v1/services/{service_id}"): Role.viewer,
    ("PUT", "/api/v1/services/{service_id}"): Role.operator,
    ("PATCH", "/api/v1/services/{service_id}"): Role.operator,
    ("POST", "/api/v1/services/{service_id}/rollback"): Role.operator,
    ("POST", "/api/v1/services/{service_id}/scale"): Role.operator,
    ("GET", "/api/v1/services/{service_id}/revisions"): Role.viewer,
    ("GET", "/api/v1/services/{service_id}/revisions/{before}/diff/{after}"): Role.viewer,
    ("POST", "/api/v1/services/{service_id}/plan"): Role.operator,
    ("POST", "/api/v1/services/{service_id}/check-image"): Role.operator,
    ("DELETE", "/api/v1/services/{service_id}"): Role.operator,
    ("POST", "/api/v1/secrets"): Role.admin,
    ("GET", "/api/v1/secrets"): Role.viewer,
    ("GET", "/api/v1/secrets/{secret_id}"): Role.viewer,
    ("PUT", "/api/v1/secrets/{secret_id}"): Role.admin,
    ("DELETE", "/api/v1/secrets/{secret_id}"): Role.admin,
    ("POST", "/api/v1/stacks"): Role.operator,
    # The approver role in the change's project (of the global roles, only admin has it).
    ("GET", "/api/v1/changes"): Role.viewer,
    ("GET", "/api/v1/changes/{change_id}"): Role.viewer,
    ("POST", "/api/v1/changes/{change_id}/approve"): Role.admin,
    ("POST", "/api/v1/changes/{change_id}/reject"): Role.admin,
    ("GET", "/api/v1/stacks"): Role.viewer,
    ("GET", "/api/v1/stacks/{stack_id}"): Role.viewer,
    ("PUT", "/api/v1/stacks/{stack_id}"): Role.operator,
    ("DELETE", "/api/v1/stacks/{stack_id}"): Role.operator,
    ("GET", "/api/v1/stacks/{stack_id}/releases"): Role.viewer,
    ("GET", "/api/v1/stacks/{stack_id}/releases/{release}"): Role.viewer,
    ("GET", "/api/v1/stacks/{stack_id}/releases/{before}/diff/{after}"): Role.viewer,
    ("POST", "/api/v1/stacks/{stack_id}/rollback"): Role.operator,
    ("GET", "/api/v1/events"): Role.viewer,
    ("POST", "/api/v1/tokens"): Role.admin,
    ("GET", "/api/v1/tokens"): Role.admin,
    ("DELETE", "/api/v1/tokens/{token_id}"): Role.admin,
    ("GET", "/api/v1/me"): Role.viewer,
    ("GET", "/api/v1/audit"): Role.admin,
    ("GET", "/api/v1/audit/verify"): Role.admin,
    ("GET", "/api/v1/audit/checkpoint"): Role.admin,
    ("GET", "/api/v1/audit/public-key"): Role.admin,
    ("GET", "/api/v1/audit/export"): Role.admin,
    ("POST", "/api/v1/projects"): Role.admin,
    ("GET", "/api/v1/projects"): Role.viewer,
    ("GET", "/api/v1/projects/{name}"): Role.viewer,
    ("PATCH", "/api/v1/projects/{name}"): Role.admin,
    ("DELETE", "/api/v1/projects/{name}"): Role.admin,
    ("GET", "/api/v1/projects/{name}/members"): Role.admin,
    ("PUT", "/api/v1/projects/{name}/members/{token_id}"): Role.admin,
    ("DELETE", "/api/v1/projects/{name}/members/{token_id}"): Role.admin,
    ("PUT", "/api/v1/projects/{name}/hosts/{host_id}"): Role.admin,
    ("DELETE", "/api/v1/projects/{name}/hosts/{host_id}"): Role.admin,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/api/v1/debug/operations"): Role.operator,
}

# A request that changes nothing whoever sends it: an id that names nothing, an empty body.
# The event stream would stay open for a caller it admits; a malformed cursor answers at once.
QUERIES = {("GET", "/api/v1/events"): {"since": "not-a-cursor"}}
CALLERS: tuple[Role | str | None, ...] = (None, "bad", Role.viewer, Role.operator, Role.admin)


@pytest.fixture
def app_api(settings: Settings, db: Database) -> Iterator[tuple[Any, Api]]:
    # No workers: nothing a request queues is carried out, so no engine is ever called.
    app = create_app(settings, run_workers=False)
    with TestClient(app) as client:
        yield app, Api(client, db)


def _document(api: Api) -> dict[str, Any]:
    spec: dict[str, Any] = api.client.get("/openapi.json").json()
    return spec


def test_every_route_has_an_entry_in_the_role_table(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    routes = {(m.upper(), p) for p, ops in _document(api)["paths"].items() for m in ops}
    assert sorted(routes - ROLES.keys()) == [], "new routes: add each to ROLES with its role"
    assert sorted(ROLES.keys() - routes) == [], "stale entries in ROLES"


def _expected(role: Role | None, caller: Role | str | None) -> str:
    if role is None:
        return "admitted"
    if not isinstance(caller, Role):
        return "401"
    return "admitted" if caller.allows(role) else "403"


def test_each_route_answers_each_caller_as_the_role_table_says(
    app_api: tuple[Any, Api],
) -> None:
    app, api = app_api
    spec = _document(api)
    wrong = []
    for index, ((method, template), role) in enumerate(sorted(ROLES.items(), key=str)):
        path = re.sub(r"\{[^}]+\}", "x0", template)
        # One client address per route: failed authentications are limited per client, and
        # this test makes a hundred of them on purpose.
        client = TestClient(app, client=(f"10.99.{index // 200}.{index % 200 + 1}", 40000))
        for caller in CALLERS:
            headers: dict[str, str] = {}
            if caller == "bad":
                headers["Authorization"] = "Bearer berth_not_a_token_0000000000000000"
            elif isinstance(caller, Role):
                headers["Authorization"] = f"Bearer {api.tokens[caller]}"
            body: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            response = client.request(
                method, path, headers=headers, params=QUERIES.get((method, template)), **body
            )
            status = response.status_code
            got = str(status) if status in (401, 403) else "admitted"
            if got != _expected(role, caller):
                wrong.append((method, template, caller, status, response.text[:200]))
        # The document says the same: 403 where a role above viewer is needed.
        documented = spec["paths"][template][method.lower()]["responses"]
        assert ("403" in documented) == (role not in (None, Role.viewer)), (method, template)
    assert wrong == []

"""Two projects, alpha and beta, each with an operator token that holds no other role (a global
viewer, so a viewer in the default project only). What one project holds is missing to the
other: lists, gets, writes, secrets, events and the audit. No engine is involved here: every
answer comes before placement (tests/projects/test_placement.py has the engines)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.audit import chain
from app.audit.verify_export import verify_file
from app.core.config import Settings
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, Api, served

IMAGE = "busybox:latest"


def _token(api: Api, name: str, grants: dict[str, str]) -> dict[str, str]:
    """A global viewer token with these project roles; its Authorization header."""
    made = api.post("/tokens", json={"name": name, "role": "viewer"}).json()
    for project, role in grants.items():
        response = api.request(
            "PUT", f"/projects/{project}/members/{made['id']}", json={"role": role}
        )
        assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {made['token']}"}


@pytest.fixture
def teams(api: Api) -> dict[str, dict[str, str]]:
    for name in ("alpha", "beta"):
        assert api.post("/projects", json={"name": name}).status_code == 201
    return {
        "alpha": _token(api, "alpha-op", {"alpha": "operator"}),
        "beta": _token(api, "beta-op", {"beta": "operator"}),
        "alpha-admin": _token(api, "alpha-admin", {"alpha": "project-admin"}),
    }


def _as(api: Api, who: dict[str, str], method: str, path: str, **kwargs: Any) -> httpx.Response:
    return api.request(method, path, role=None, headers=who, **kwargs)


def _service(api: Api, who: dict[str, str], name: str, project: str, **spec: Any) -> httpx.Response:
    body = {"name": name, "project": project, "spec": {"image": IMAGE, **spec}}
    return _as(api, who, "POST", "/services", json=body)


def test_lists_and_gets_show_only_readable_projects(
    api: Api, teams: dict[str, dict[str, str]]
) -> None:
    alpha = _service(api, teams["alpha"], "web-alpha", "alpha")
    beta = _service(api, teams["beta"], "web-beta", "beta")
    assert alpha.status_code == beta.status_code == 202, (alpha.text, beta.text)
    alpha_id, beta_id = alpha.json()["service"]["id"], beta.json()["service"]["id"]
    assert alpha.json()["service"]["project"] == "alpha"

    listed = _as(api, teams["alpha"], "GET", "/services").json()["items"]
    assert [s["name"] for s in listed] == ["web-alpha"]
    everything = api.get("/services").json()["items"]
    assert {s["name"] for s in everything} == {"web-alpha", "web-beta"}
    # Another project's service is missing, word for word as one that never existed.
    hidden = _as(api, teams["alpha"], "GET", f"/services/{beta_id}")
    missing = _as(api, teams["alpha"], "GET", "/services/01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == f"no service {beta_id!r}"
    # So is writing to it, and naming its project in a filter.
    scaled = _as(api, teams["alpha"], "POST", f"/services/{beta_id}/scale", json={"replicas": 3})
    assert scaled.status_code == 404
    assert (
        _as(api, teams["alpha"], "GET", "/services", params={"project": "beta"}).status_code == 404
    )
    # Operations follow their target's project.
    operations = _as(api, teams["beta"], "GET", "/operations").json()["items"]
    assert {op["target_id"] for op in operations} == {beta_id}
    # A project it cannot read is unknown to a create too; one it only reads is a 403.
    elsewhere = _service(api, teams["alpha"], "web-x", "beta")
    assert elsewhere.status_code == 422, elsewhere.text
    assert _service(api, teams["alpha"], "web-y", "default").status_code == 403
    assert _as(api, teams["alpha"], "GET", f"/services/{alpha_id}").status_code == 200


def test_a_secret_is_usable_only_inside_its_project(
    api: Api, teams: dict[str, dict[str, str]]
) -> None:
    made = api.post("/secrets", json={"name": "db-alpha", "value": "s3cret", "project": "alpha"})
    assert made.status_code == 201, made.text
    assert made.json()["project"] == "alpha"
    # Beta's service naming alpha's secret: 422 as for a secret that does not exist.
    refused = _service(api, teams["beta"], "uses-alpha", "beta", secrets=[{"name": "db-alpha"}])
    assert refused.status_code == 422, refused.text
    assert "no secret named 'db-alpha'" in refused.text
    assert (
        _service(
            api, teams["alpha"], "uses-own", "alpha", secrets=[{"name": "db-alpha"}]
        ).status_code
        == 202
    )
    assert _as(api, teams["beta"], "GET", "/secrets").json()["items"] == []
    secret_id = made.json()["id"]
    assert _as(api, teams["beta"], "GET", f"/secrets/{secret_id}").status_code == 404
    # An operator may use the project's secrets but not manage them: that is project-admin.
    rotated = _as(api, teams["alpha"], "PUT", f"/secrets/{secret_id}", json={"value": "x"})
    assert rotated.status_code == 403
    rotated = _as(api, teams["alpha-admin"], "PUT", f"/secrets/{secret_id}", json={"value": "x"})
    assert rotated.status_code == 200, rotated.text


def test_quotas_refuse_with_the_quota_its_limit_and_its_use(
    api: Api, teams: dict[str, dict[str, str]]
) -> None:
    quotas = {"replicas": 3, "cpus": 1}
    assert api.patch("/projects/beta", json={"quotas": quotas}).status_code == 200
    first = _service(api, teams["beta"], "two", "beta", replicas=2, resources={"cpus": 0.25})
    assert first.status_code == 202, first.text
    over = _service(api, teams["beta"], "two-more", "beta", replicas=2)
    assert over.status_code == 422
    problem = over.json()
    assert problem["type"].endswith("quota-exceeded")
    assert "quota replicas of project 'beta' exceeded: limit 3, in use 2" in problem["detail"]
    assert problem["errors"][0]["loc"] == "body.quotas.replicas"
    # Scaling counts the service's own replicas once.
    service_id = first.json()["service"]["id"]
    scale = _as(api, teams["beta"], "POST", f"/services/{service_id}/scale", json={"replicas": 3})
    assert scale.status_code == 202, scale.text
    cpus = _as(
        api,
        teams["beta"],
        "PATCH",
        f"/services/{service_id}",
        json={"spec": {"resources": {"cpus": 0.5}}},
    )
    assert cpus.status_code == 422
    assert "quota cpus of project 'beta' exceeded: limit 1, in use 0" in cpus.json()["detail"]
    usage = api.get("/projects/beta").json()["usage"]
    assert usage["replicas"] == 3 and usage["cpus"] == 0.75
    # The other project is not limited by beta's quotas.
    assert _service(api, teams["alpha"], "four", "alpha", replicas=4).status_code == 202


def test_project_admins_manage_their_own_members_only(
    api: Api, teams: dict[str, dict[str, str]]
) -> None:
    newcomer = api.post("/tokens", json={"name": "newcomer", "role": "viewer"}).json()
    path = f"/projects/alpha/members/{newcomer['id']}"
    granted = _as(api, teams["alpha-admin"], "PUT", path, json={"role": "viewer"})
    assert granted.status_code == 200, granted.text
    members = _as(api, teams["alpha-admin"], "GET", "/projects/alpha/members").json()
    assert {m["token_name"]: m["role"] for m in members}["newcomer"] == "viewer"
    other = f"/projects/beta/members/{newcomer['id']}"
    assert _as(api, teams["alpha-admin"], "PUT", other, json={"role": "viewer"}).status_code == 404
    assert _as(api, teams["alpha"], "PUT", path, json={"role": "operator"}).status_code == 403
    # The newcomer sees alpha now; revoked, no longer (this process forgets its cache at once).
    as_newcomer = {"Authorization": f"Bearer {newcomer['token']}"}
    names = {p["name"] for p in _as(api, as_newcomer, "GET", "/projects").json()["items"]}
    assert names == {"default", "alpha"}
    assert _as(api, teams["alpha-admin"], "DELETE", path).status_code == 204
    assert _as(api, as_newcomer, "GET", "/projects/alpha").status_code == 404
    # Only an empty project can be deleted; never the default one.
    assert _service(api, teams["alpha"], "keeps", "alpha").status_code == 202
    assert api.delete("/projects/alpha").status_code == 409
    assert api.delete("/projects/default").status_code == 409


class _Stream:
    """Reads the event stream as one caller until an event of `until` arrives."""

    def __init__(self, base: str, headers: dict[str, str], until: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self._args = (base, headers, until)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        base, headers, until = self._args
        try:
            with httpx.stream(
                "GET", f"{base}/api/v1/events", params={"since": "0"}, headers=headers, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line.removeprefix("data: ")))
                        if self.events[-1]["resource_id"] == until:
                            return
        finally:
            self.done.set()


def test_events_and_the_audit_are_filtered_to_readable_projects(
    settings: Settings, api: Api, teams: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    beta = _service(api, teams["beta"], "hidden", "beta").json()["service"]["id"]
    alpha = _service(api, teams["alpha"], "shown", "alpha").json()["service"]["id"]
    with served(create_app(settings)) as base:
        seen = _Stream(base, teams["alpha"], until=alpha)
        everything = _Stream(base, {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}, until=alpha)
        assert seen.done.wait(30) and everything.done.wait(30)
    ids = {e["resource_id"] for e in seen.events}
    assert alpha in ids and beta not in ids
    assert beta in {e["resource_id"] for e in everything.events}

    # The audit: a project-admin of alpha sees alpha's entries, not beta's.
    audit = _as(api, teams["alpha-admin"], "GET", "/audit", params={"limit": 500}).json()
    resources = {e["resource"] for e in audit["items"]}
    assert f"services/{alpha}" in resources and f"services/{beta}" not in resources
    assert _as(api, teams["alpha"], "GET", "/audit").status_code == 403
    # Its export keeps beta's entries as redacted places in the chain: it still verifies.
    export = _as(api, teams["alpha-admin"], "GET", "/audit/export")
    lines = [json.loads(line) for line in export.text.splitlines()]
    redacted = [line for line in lines if line["type"] == "redacted"]
    assert redacted and all("resource" not in line for line in redacted)
    assert f"services/{beta}" not in export.text
    path = tmp_path / "export.jsonl"
    path.write_text(export.text)
    key = _as(api, teams["alpha-admin"], "GET", "/audit/public-key").json()["public_key"]
    assert verify_file(path, public_key=chain.load_public_key(key)).ok


def test_a_stack_lives_in_its_project_on_hosts_it_may_use_within_its_quotas(
    api: Api, teams: dict[str, dict[str, str]]
) -> None:
    host = api.post("/hosts", json={"name": "h", "url": "unix:///nonexistent.sock"}).json()["id"]
    assert api.request("PUT", f"/projects/beta/hosts/{host}").status_code == 204
    compose = "services:\n  web:\n    image: busybox\n    deploy: {replicas: 2}\n"
    body = {"name": "shop", "compose": compose, "host_id": host}
    pinned = _as(api, teams["alpha"], "POST", "/stacks", json={**body, "in_project": "alpha"})
    assert pinned.status_code == 422
    assert "dedicated to other projects" in pinned.json()["detail"]
    # The stack's services count together against the quota, before anything is stored.
    assert api.patch("/projects/beta", json={"quotas": {"replicas": 3}}).status_code == 200
    two = compose + "  api:\n    image: busybox\n    deploy: {replicas: 2}\n"
    over = _as(
        api, teams["beta"], "POST", "/stacks", json={**body, "compose": two, "in_project": "beta"}
    )
    assert over.status_code == 422
    assert "limit 3, in use 0, this change asks 4" in over.json()["detail"]
    made = _as(api, teams["beta"], "POST", "/stacks", json={**body, "in_project": "beta"})
    assert made.status_code == 202, made.text
    stack = made.json()["stack"]
    assert stack["project"] == "beta"
    assert _as(api, teams["alpha"], "GET", "/stacks").json()["items"] == []
    assert _as(api, teams["alpha"], "GET", f"/stacks/{stack['id']}").status_code == 404
    assert _as(api, teams["beta"], "GET", f"/stacks/{stack['id']}").status_code == 200

"""Hosts against the testbed's two real engines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.hosts.models import Host
from app.main import create_app
from app.security.roles import Role
from tests.support import Api, wait_for
from tests.testbed import Testbed

FAKE_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
FAKE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIBfakekey\n-----END PRIVATE KEY-----\n"


def register(api: Api, name: str, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/hosts", json={"name": name, "url": url, **fields})
    assert response.status_code == 201, response.text
    host: dict[str, Any] = response.json()
    return host


def host_status(api: Api, host_id: str) -> str:
    status: str = api.get(f"/hosts/{host_id}").json()["status"]
    return status


def is_ready(api: Api, host_id: str) -> bool:
    return host_status(api, host_id) == "ready"


def test_both_engines_become_ready_with_real_figures(api: Api, bed: Testbed) -> None:
    h1 = register(api, "h1", bed.h1_url, labels={"zone": "a"})
    h2 = register(api, "h2", bed.h2_url, insecure=True, labels={"zone": "b"})
    assert h1["status"] == "pending"
    for host in (h1, h2):
        wait_for(partial(is_ready, api, host["id"]), timeout=30, what=host["name"])
        ready = api.get(f"/hosts/{host['id']}").json()
        assert ready["engine_version"].startswith("20.10")
        assert ready["api_version"]
        assert ready["cpus"] >= 1
        assert ready["memory_bytes"] > 100 * 2**20
        assert ready["containers_running"] >= 0
        assert ready["os"] and ready["arch"]
        assert ready["last_seen_at"] is not None
        assert ready["error"] is None


@pytest.fixture
def h2_restored(bed: Testbed) -> Iterator[None]:
    yield
    # Whatever the test did to the second engine, leave it running for the next test.
    bed.start_engine("h2")


def test_dead_engine_goes_unreachable_and_recovers(
    api: Api, bed: Testbed, settings: Settings, h2_restored: None
) -> None:
    h2 = register(api, "h2", bed.h2_url, insecure=True)
    wait_for(lambda: host_status(api, h2["id"]) == "ready", timeout=30, what="h2 ready")

    bed.stop_engine("h2")
    # Window: `host_unreachable_after` failed probes, each up to the probe timeout, plus intervals.
    window = settings.host_unreachable_after * (
        settings.host_probe_interval_seconds + settings.host_probe_timeout_seconds
    )
    # A starved prober may take longer than the window; the test's point is that it gets there.
    wait_for(lambda: host_status(api, h2["id"]) == "unreachable", timeout=window + 30, what="down")
    down = api.get(f"/hosts/{h2['id']}").json()
    assert down["error"]

    bed.start_engine("h2")
    wait_for(lambda: host_status(api, h2["id"]) == "ready", timeout=60, what="h2 back")
    assert api.get(f"/hosts/{h2['id']}").json()["error"] is None


def test_local_engine_registered_on_empty_database(
    settings_factory: Callable[..., Settings],
    db: Database,
    bed: Testbed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", bed.h1_url)
    with TestClient(create_app(settings_factory(register_local_host=True))) as client:
        api = Api(client, db)
        hosts = api.get("/hosts").json()["items"]
        assert [(h["name"], h["url"]) for h in hosts] == [("local", bed.h1_url)]
        wait_for(lambda: host_status(api, hosts[0]["id"]) == "ready", timeout=30, what="local")
    # Not on a database that already has hosts: a restart registers nothing new.
    with TestClient(create_app(settings_factory(register_local_host=True))) as client:
        assert len(Api(client, db).get("/hosts").json()["items"]) == 1


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://10.0.0.1:2375", "unix:// or tcp://"),
        ("tcp://10.0.0.1", "need a port"),
        ("tcp://user:pw@10.0.0.1:2375", "credentials"),
        ("tcp://10.0.0.1:99999", "port"),
        ("unix://relative.sock", "absolute"),
        ("tcp://10.0.0.1:2375/path", "nothing after the port"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(api: Api, url: str, fragment: str) -> None:
    response = api.post("/hosts", json={"name": "x", "url": url})
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["errors"][0]["loc"] == "body.url"
    assert fragment in problem["errors"][0]["msg"]
    assert api.get("/hosts").json()["items"] == []


def test_host_input_rules(api: Api, bed: Testbed) -> None:
    assert api.post("/hosts", json={"name": "bad name!", "url": bed.h1_url}).status_code == 422
    assert api.post("/hosts", json={"name": "h", "url": bed.h1_url, "bogus": 1}).status_code == 422
    assert (
        api.post("/hosts", json={"name": "h", "url": bed.h1_url, "labels": {"": "x"}}).status_code
        == 422
    )
    tls = {"client_cert": FAKE_PEM, "client_key": FAKE_KEY}
    unix_tls = api.post("/hosts", json={"name": "h", "url": bed.h1_url, "tls": tls})
    assert unix_tls.status_code == 422
    assert "tcp://" in unix_tls.json()["detail"]
    register(api, "h", bed.h1_url)
    clash = api.post("/hosts", json={"name": "h", "url": bed.h2_url, "insecure": True})
    assert clash.status_code == 409
    assert "already exists" in clash.json()["detail"]


def test_tls_material_is_write_only_and_encrypted(api: Api, db: Database) -> None:
    tls = {"ca_cert": FAKE_PEM, "client_cert": FAKE_PEM, "client_key": FAKE_KEY}
    host = register(api, "secure", "tcp://127.0.0.1:2376", tls=tls)
    assert host["tls_configured"] is True
    assert "MIIBfakekey" not in api.get(f"/hosts/{host['id']}").text
    assert "MIIBfakekey" not in api.get("/hosts").text
    with db.session(write=False) as session:
        stored = session.execute(select(Host.tls_encrypted)).scalar_one()
    assert stored is not None and "MIIBfakekey" not in stored and "BEGIN" not in stored


def test_patch_honours_if_match_and_bumps_version(api: Api, bed: Testbed) -> None:
    host = register(api, "h1", bed.h1_url)
    get = api.get(f"/hosts/{host['id']}")
    assert get.headers["etag"] == '"1"'
    stale = api.patch(
        f"/hosts/{host['id']}", json={"labels": {"a": "b"}}, headers={"If-Match": '"7"'}
    )
    assert stale.status_code == 412
    assert api.get(f"/hosts/{host['id']}").json()["labels"] == {}
    fresh = api.patch(
        f"/hosts/{host['id']}", json={"labels": {"a": "b"}}, headers={"If-Match": '"1"'}
    )
    assert fresh.status_code == 200
    assert fresh.json()["labels"] == {"a": "b"} and fresh.json()["version"] == 2
    assert fresh.headers["etag"] == '"2"'
    assert api.delete(f"/hosts/{host['id']}", headers={"If-Match": '"1"'}).status_code == 412
    assert api.delete(f"/hosts/{host['id']}", headers={"If-Match": '"2"'}).status_code == 204
    assert api.get(f"/hosts/{host['id']}").status_code == 404


def test_drain_is_an_operation_that_makes_the_host_unschedulable(api: Api, bed: Testbed) -> None:
    host = register(api, "h1", bed.h1_url)
    response = api.post(f"/hosts/{host['id']}/drain")
    assert response.status_code == 202
    body = response.json()
    assert body["host"]["draining"] is True
    assert response.headers["location"] == f"/api/v1/operations/{body['operation']['id']}"
    done = api.wait_operation(body["operation"]["id"])
    assert done["status"] == "succeeded"
    drained = api.get(f"/hosts/{host['id']}").json()
    assert drained["schedulable"] is False and drained["draining"] is False
    assert api.post(f"/hosts/{host['id']}/drain", role=Role.operator).status_code == 403


def test_delete_refuses_while_work_is_pending_unless_forced(api: Api, bed: Testbed) -> None:
    host = register(api, "h1", bed.h1_url)
    api.debug_operation("debug.sleep", params={"seconds": 30}, host_id=host["id"])
    refused = api.delete(f"/hosts/{host['id']}")
    assert refused.status_code == 409
    assert "force" in refused.json()["detail"]
    assert api.delete(f"/hosts/{host['id']}", params={"force": "true"}).status_code == 204


def test_list_paginates_and_filters(api: Api) -> None:
    created = [
        register(
            api,
            f"host-{i}",
            f"tcp://127.0.0.1:{1 + i}",
            insecure=True,
            labels={"even": str(i % 2 == 0)},
        )
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/hosts", params=params).json()
        pages += 1
        seen += [h["id"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [h["id"] for h in created]
    evens = api.get("/hosts", params={"label": "even=True"}).json()["items"]
    assert len(evens) == 4
    assert api.get("/hosts", params={"limit": 501}).status_code == 422
    assert api.get("/hosts", params={"cursor": "%%%"}).status_code == 400
    assert api.get("/hosts", params={"name": "host-3"}).json()["items"][0]["name"] == "host-3"


def test_label_filter_is_applied_before_paging(api: Api) -> None:
    for i in range(6):
        register(
            api,
            f"n{i}",
            f"tcp://127.0.0.1:{20 + i}",
            insecure=True,
            labels={"tier": "db" if i >= 4 else "web"},
        )
    page = api.get("/hosts", params={"label": "tier=db", "limit": 2}).json()
    assert [h["name"] for h in page["items"]] == ["n4", "n5"]
    assert page["next_cursor"] is None
    assert len(api.get("/hosts", params={"label": "tier"}).json()["items"]) == 6
    assert api.get("/hosts", params={"label": "tier=nope"}).json()["items"] == []
    assert api.get("/hosts", params={"label": "bad key!"}).status_code == 400

"""Compose files Berth refuses: 422s that point into the file, and nothing stored.
(A stack's life on a real engine is in test_stack_lifecycle.py.)"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import Api, context_tar

BAD: list[tuple[str, dict[str, str], str, str]] = [
    (
        "services:\n  web:\n    image: busybox\n    runtime: runsc\n",
        {},
        "compose.services.web.runtime",
        "not supported",
    ),
    (
        "services:\n  web:\n    image: busybox\n    ports: 80: 90\n",
        {},
        "compose",
        "line 4",
    ),
    (
        "services:\n  web:\n    image: busybox:${TAG}\n",
        {},
        "compose.services.web.image",
        "'TAG' is not set",
    ),
    (
        "services:\n  web:\n    image: busybox\n    volumes: ['/etc:/host-etc']\n",
        {},
        "compose.services.web.volumes[0]",
        "bind",
    ),
    # The host's network namespace, or another container's, by any Compose path.
    *(
        (
            f"services:\n  web:\n    image: busybox\n    networks: [n]\nnetworks:\n  n:\n{how}",
            {},
            "compose.services.web.networks[0]",
            "BERTH_ALLOW_HOST_NAMESPACES",
        )
        for how in ("    external: true\n    name: host\n", "    name: host\n")
    ),
    *(
        (
            f"services:\n  web:\n    image: busybox\n    {key}: '{value}'\n",
            {},
            f"compose.services.web.{key}",
            "not supported",
        )
        for key, value in (
            ("network_mode", "service:db"),
            ("network_mode", "container:db"),
            ("pid", "container:db"),
            ("ipc", "container:db"),
        )
    ),
    (
        "services:\n  web:\n    build: ./web\n",
        {},
        "compose.services.web.build",
        "context.web",
    ),
]


@pytest.mark.parametrize(("compose", "variables", "loc", "words"), BAD)
def test_bad_compose_files_are_refused_with_their_path(
    api: Api, compose: str, variables: dict[str, str], loc: str, words: str
) -> None:
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    response = api.post(
        "/stacks",
        json={"name": "bad", "compose": compose, "variables": variables, "host_id": host["id"]},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert any(e["loc"].startswith(loc) for e in problem["errors"]), problem
    assert words in problem["detail"], problem
    # Nothing was stored.
    assert api.get("/stacks").json()["items"] == []
    assert api.get("/services").json()["items"] == []
    assert [o["kind"] for o in api.get("/operations").json()["items"]] in ([], ["host.probe"])


def test_an_update_cannot_reach_the_host_network(api: Api) -> None:
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    first = "services:\n  web:\n    image: busybox\n    deploy: {replicas: 0}\n"
    created = api.post("/stacks", json={"name": "st", "compose": first, "host_id": host["id"]})
    assert created.status_code == 202, created.text
    stack = created.json()["stack"]
    hosted = first + "    networks: [n]\nnetworks:\n  n: {external: true, name: host}\n"
    response = api.request("PUT", f"/stacks/{stack['id']}", json={"compose": hosted})
    assert response.status_code == 422, response.text
    assert "BERTH_ALLOW_HOST_NAMESPACES" in response.json()["detail"]
    assert api.get(f"/stacks/{stack['id']}").json()["compose"] == first


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM 10.0.0.5:5000/base:1\nCOPY --from=evil.example.com/x:1 /x /x\n",
        "# syntax=evil.example.com/frontend:1\nFROM 10.0.0.5:5000/base:1\n",
    ],
)
def test_a_stack_build_uses_no_image_from_a_refused_registry(
    settings_factory: Callable[..., Settings], db: Database, dockerfile: str
) -> None:
    context = context_tar({"Dockerfile": dockerfile.encode()}, gzip=True)
    with TestClient(create_app(settings_factory(allowed_registries="10.0.0.5:5000"))) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
        response = api.request(
            "POST",
            "/stacks",
            data={
                "name": "st",
                "compose": "services:\n  web:\n    build: .\n",
                "host_id": host["id"],
            },
            files={"context.web": ("web.tar.gz", context)},
        )
        assert response.status_code == 422, response.text
        assert "evil.example.com" in response.json()["detail"]
        assert response.json()["errors"][0]["loc"] == "compose.services.web.build"
        assert api.get("/stacks").json()["items"] == []


def test_a_build_context_whose_links_chain_out_is_refused(api: Api) -> None:
    # d1 is the context root, so d1/d2 is d2, and ../.. from there is outside the context.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        dockerfile = tarfile.TarInfo("Dockerfile")
        dockerfile.size = len(b"FROM busybox\n")
        archive.addfile(dockerfile, io.BytesIO(b"FROM busybox\n"))
        for name, target in (("d1", "."), ("d1/d2/l", "../..")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            archive.addfile(link)
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    response = api.post(
        "/stacks",
        data={
            "name": "links",
            "compose": "services:\n  web:\n    build: .\n",
            "host_id": host["id"],
        },
        files={"context.web": ("web.tar.gz", buffer.getvalue(), "application/gzip")},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "loc": "compose.services.web.build",
            "msg": "member 'd1/d2/l' link target '../..' points outside the context",
        }
    ]
    assert api.get("/stacks").json()["items"] == []

"""Stacks from Compose files on a real engine: the classic web + cache example built from an
uploaded context, an update that rolls only what changed, a removal that leaves nothing behind,
and 422s that point into the file."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.security.roles import Role
from tests.support import Api, Services, free_port, wait_for
from tests.testbed import Testbed

COMPOSE = """
services:
  web:
    build: ./web
    ports:
      - "127.0.0.1:${WEB_PORT}:5000"
    depends_on:
      cache:
        condition: service_healthy
    secrets:
      - api_token
    deploy:
      update_config:
        monitor: 1s
  cache:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: >-
      sh -c "printf '#!/bin/sh\\necho PONG\\n' > /pong && chmod +x /pong
      && exec nc -ll -p 6379 -e /pong"
    healthcheck:
      test: ["CMD-SHELL", "echo PING | timeout 2 nc 127.0.0.1 6379 | grep -q PONG"]
      interval: 500ms
      retries: 3
    volumes:
      - cache-data:/data
volumes:
  cache-data: {}
secrets:
  api_token:
    external: true
"""

TOKEN = "stack-secret-token-value"
HIT = """#!/bin/sh
echo "Content-Type: text/plain"
echo ""
echo "web {version}; cache says: $(echo PING | timeout 2 nc cache 6379)"
echo "token bytes: $(wc -c < /run/secrets/api_token)"
"""


def web_context(registry: str, version: str) -> bytes:
    """The web service's build context: a Dockerfile and a CGI script that asks the cache."""
    files = {
        "Dockerfile": (
            f"FROM {registry}/berth-test/busybox:latest\n"
            "COPY www /www\n"
            'CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]\n'
        ),
        "www/cgi-bin/hit": HIT.format(version=version),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o755
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def services(api: Api, bed: Testbed) -> Iterator[Services]:
    helper = Services(api, bed)
    yield helper
    helper.cleanup()
    for engine in helper.engines.values():
        for network in engine.networks.list(filters={"label": "berth.managed=true"}):
            network.remove()


def _deploy(
    api: Api, method: str, path: str, fields: dict[str, Any], context: bytes
) -> dict[str, Any]:
    data = {
        key: json.dumps(value) if isinstance(value, dict) else value
        for key, value in fields.items()
    }
    response = api.request(method, path, data=data, files={"context.web": ("web.tar.gz", context)})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _hit(port: int) -> str | None:
    """The web's first line, after checking it read its secret file (its length only)."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/hit", timeout=3)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    first, _, rest = response.text.strip().partition("\n")
    assert rest.strip() == f"token bytes: {len(TOKEN)}", response.text
    return first


def test_web_and_cache_from_one_compose_file(services: Services, api: Api, bed: Testbed) -> None:
    h1 = services.engines["h1"]
    port = free_port()
    name = f"shop-{uuid.uuid4().hex[:4]}"
    variables = {"WEB_PORT": str(port), "REGISTRY": bed.registry}
    assert api.post("/secrets", json={"name": "api_token", "value": TOKEN}).status_code == 201
    fields = {
        "name": name,
        "host_id": services.hosts["h1"],
        "compose": COMPOSE,
        "variables": variables,
    }
    body = _deploy(api, "POST", "/stacks", fields, web_context(bed.registry, "v1"))
    stack_id = body["stack"]["id"]
    assert body["stack"]["status"] == "deploying"
    done = api.wait_operation(body["operation"]["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]

    wait_for(
        lambda: _hit(port) == "web v1; cache says: PONG", timeout=30, what="the cache's answer"
    )
    stack = api.get(f"/stacks/{stack_id}").json()
    assert stack["status"] == "running"
    assert stack["networks"] == [f"{name}_default"]
    assert stack["volumes"] == [f"{name}_cache-data"]
    assert [v for v in h1.volumes.list() if v.name == f"{name}_cache-data"]
    by_name = {s["compose_name"]: s for s in stack["service_details"]}
    assert set(by_name) == {"web", "cache"}
    # depends_on: the web service was made only once the cache was healthy.
    logs = [line["message"] for line in api.get(f"/operations/{done['id']}/logs").json()["items"]]
    created = [line for line in logs if line.startswith("created service")]
    assert created == [f"created service {name}-cache", f"created service {name}-web"]
    cache_before = api.get(f"/services/{by_name['cache']['service_id']}").json()

    # A new build of the web only: the web rolls to revision 2, the cache is not touched.
    update = _deploy(
        api,
        "PUT",
        f"/stacks/{stack_id}",
        {"compose": COMPOSE, "variables": variables},
        web_context(bed.registry, "v2"),
    )
    assert update["stack"]["generation"] == 2
    assert api.wait_operation(update["operation"]["id"], timeout=180)["status"] == "succeeded"
    assert wait_for(
        lambda: _hit(port) == "web v2; cache says: PONG", timeout=30, what="web v2 answers"
    )
    web = api.get(f"/services/{by_name['web']['service_id']}").json()
    cache = api.get(f"/services/{by_name['cache']['service_id']}").json()
    assert web["revision"] == 2
    assert cache["revision"] == 1
    assert [t["container_id"] for t in cache["tasks"]] == [
        t["container_id"] for t in cache_before["tasks"]
    ]

    # A change to the cache only, without uploading the web's context again: the web keeps
    # its image and revision, the cache rolls.
    relabelled = COMPOSE.replace("\n  cache:\n", "\n  cache:\n    labels: {tier: cache}\n")
    again = api.request(
        "PUT", f"/stacks/{stack_id}", json={"compose": relabelled, "variables": variables}
    )
    assert again.status_code == 202, again.text
    assert api.wait_operation(again.json()["operation"]["id"], timeout=120)["status"] == (
        "succeeded"
    )
    assert api.get(f"/services/{by_name['web']['service_id']}").json()["revision"] == 2
    assert api.get(f"/services/{by_name['cache']['service_id']}").json()["revision"] == 2
    assert wait_for(
        lambda: _hit(port) == "web v2; cache says: PONG", timeout=30, what="web still answers"
    )

    # A viewer may look but not change.
    assert api.request("DELETE", f"/stacks/{stack_id}", role=Role.viewer).status_code == 403
    removal = api.delete(f"/stacks/{stack_id}", params={"volumes": "true"})
    assert removal.status_code == 202, removal.text
    assert api.wait_operation(removal.json()["operation"]["id"], timeout=120)["status"] == (
        "succeeded"
    )
    assert api.get(f"/stacks/{stack_id}").status_code == 404
    assert api.get("/services", params={"stack_id": stack_id}).json()["items"] == []
    # Nothing left on the host: containers, the network, the images built for it.
    assert h1.containers.list(all=True, filters={"name": name}) == []
    assert h1.networks.list(names=[f"{name}_default"]) == []
    assert not [v for v in h1.volumes.list() if v.name == f"{name}_cache-data"]
    assert not [tag for image in h1.images.list() for tag in image.tags if f"/{name}/" in tag]


BAD: list[tuple[str, dict[str, str], str, str]] = [
    (
        "services:\n  web:\n    image: busybox\n    stop_grace_period: 10s\n",
        {},
        "compose.services.web.stop_grace_period",
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

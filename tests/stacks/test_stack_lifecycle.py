"""A stack's life from one Compose file on a real engine, run once for the module: the classic
web + cache example built from an uploaded context, an update that rolls only what changed, a
removal that leaves nothing behind. Each test checks one behaviour against what that run saw."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.security.roles import Role
from tests.support import Api, Services, context_tar, free_port, wait_for
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
    return context_tar({name: content.encode() for name, content in files.items()}, gzip=True)


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


@dataclass(frozen=True)
class Life:
    name: str
    deploy_status: str  # the stack as the deploy request answered
    deployed: dict[str, Any]  # the stack once its operation succeeded
    volume_on_engine: bool
    created_in_order: list[str]  # "created service ..." lines of the deploy's log
    web_build_generation: int
    after_web_build: dict[str, dict[str, Any]]  # compose name -> service
    cache_tasks_before: list[str]
    after_cache_change: dict[str, dict[str, Any]]
    viewer_removal: int
    after_removal: int
    services_after_removal: list[dict[str, Any]]
    containers_left: list[Any]
    networks_left: list[Any]
    volume_left: bool
    images_left: list[str]


@pytest.fixture(scope="module")
def life(module_api: Api, bed: Testbed) -> Iterator[Life]:
    api = module_api
    services = Services(api, bed)
    h1 = services.engines["h1"]
    try:
        port = free_port()
        name = f"shop-{uuid.uuid4().hex[:4]}"
        volume = f"{name}_cache-data"
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
        done = api.wait_operation(body["operation"]["id"], timeout=180)
        assert done["status"] == "succeeded", done["error"]
        wait_for(
            lambda: _hit(port) == "web v1; cache says: PONG",
            timeout=30,
            what="the cache's answer",
        )
        deployed = api.get(f"/stacks/{stack_id}").json()
        volume_on_engine = any(v.name == volume for v in h1.volumes.list())
        by_name = {s["compose_name"]: s["service_id"] for s in deployed["service_details"]}
        logs = api.get(f"/operations/{done['id']}/logs").json()["items"]
        cache_before = api.get(f"/services/{by_name['cache']}").json()

        # A new build of the web only.
        update = _deploy(
            api,
            "PUT",
            f"/stacks/{stack_id}",
            {"compose": COMPOSE, "variables": variables},
            web_context(bed.registry, "v2"),
        )
        assert api.wait_operation(update["operation"]["id"], timeout=180)["status"] == "succeeded"
        assert wait_for(
            lambda: _hit(port) == "web v2; cache says: PONG", timeout=30, what="web v2 answers"
        )
        after_web_build = {c: api.get(f"/services/{s}").json() for c, s in by_name.items()}

        # A change to the cache only, without uploading the web's context again.
        relabelled = COMPOSE.replace("\n  cache:\n", "\n  cache:\n    labels: {tier: cache}\n")
        again = api.request(
            "PUT", f"/stacks/{stack_id}", json={"compose": relabelled, "variables": variables}
        )
        assert again.status_code == 202, again.text
        assert api.wait_operation(again.json()["operation"]["id"], timeout=120)["status"] == (
            "succeeded"
        )
        after_cache_change = {c: api.get(f"/services/{s}").json() for c, s in by_name.items()}
        assert wait_for(
            lambda: _hit(port) == "web v2; cache says: PONG", timeout=30, what="web still answers"
        )

        viewer_removal = api.request("DELETE", f"/stacks/{stack_id}", role=Role.viewer)
        removal = api.delete(f"/stacks/{stack_id}", params={"volumes": "true"})
        assert removal.status_code == 202, removal.text
        assert api.wait_operation(removal.json()["operation"]["id"], timeout=120)["status"] == (
            "succeeded"
        )
        yield Life(
            name=name,
            deploy_status=body["stack"]["status"],
            deployed=deployed,
            volume_on_engine=volume_on_engine,
            created_in_order=[
                line["message"] for line in logs if line["message"].startswith("created service")
            ],
            web_build_generation=update["stack"]["generation"],
            after_web_build=after_web_build,
            cache_tasks_before=[t["container_id"] for t in cache_before["tasks"]],
            after_cache_change=after_cache_change,
            viewer_removal=viewer_removal.status_code,
            after_removal=api.get(f"/stacks/{stack_id}").status_code,
            services_after_removal=api.get("/services", params={"stack_id": stack_id}).json()[
                "items"
            ],
            containers_left=h1.containers.list(all=True, filters={"name": name}),
            networks_left=h1.networks.list(names=[f"{name}_default"]),
            volume_left=any(v.name == volume for v in h1.volumes.list()),
            images_left=[
                tag for image in h1.images.list() for tag in image.tags if f"/{name}/" in tag
            ],
        )
    finally:
        services.cleanup()
        for engine in services.engines.values():
            for network in engine.networks.list(filters={"label": "berth.managed=true"}):
                network.remove()


def test_a_deploy_is_accepted_as_deploying(life: Life) -> None:
    assert life.deploy_status == "deploying"


def test_the_deployed_stack_runs_with_its_network_and_volume(life: Life) -> None:
    assert life.deployed["status"] == "running"
    assert life.deployed["networks"] == [f"{life.name}_default"]
    assert life.deployed["volumes"] == [f"{life.name}_cache-data"]
    assert life.volume_on_engine
    assert {s["compose_name"] for s in life.deployed["service_details"]} == {"web", "cache"}


def test_depends_on_creates_the_web_once_the_cache_is_healthy(life: Life) -> None:
    assert life.created_in_order == [
        f"created service {life.name}-cache",
        f"created service {life.name}-web",
    ]


def test_a_new_web_build_rolls_the_web_and_leaves_the_cache_alone(life: Life) -> None:
    assert life.web_build_generation == 2
    assert life.after_web_build["web"]["revision"] == 2
    assert life.after_web_build["cache"]["revision"] == 1
    assert [t["container_id"] for t in life.after_web_build["cache"]["tasks"]] == (
        life.cache_tasks_before
    )


def test_a_cache_change_without_the_web_context_rolls_only_the_cache(life: Life) -> None:
    # The web keeps its image and revision.
    assert life.after_cache_change["web"]["revision"] == 2
    assert life.after_cache_change["cache"]["revision"] == 2


def test_a_viewer_may_look_but_not_remove(life: Life) -> None:
    assert life.viewer_removal == 403


def test_removal_forgets_the_stack_and_its_services(life: Life) -> None:
    assert life.after_removal == 404
    assert life.services_after_removal == []


def test_removal_leaves_nothing_on_the_host(life: Life) -> None:
    # Containers, the network, the volume, the images built for it.
    assert life.containers_left == []
    assert life.networks_left == []
    assert not life.volume_left
    assert not life.images_left

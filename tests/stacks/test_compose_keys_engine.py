"""Compose keys on a real engine, in one stack: a multi-stage build stopped at its `target`, a
`container_name`, a one-shot init service the web waits for, and a profile left out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support import Api, Services, context_tar, free_port, wait_for
from tests.testbed import Testbed

COMPOSE = """
services:
  web:
    build:
      context: ./web
      target: serve
      args: {GREETING: hello}
      labels: {org.example.stage: serve}
    container_name: ${NAME}-web
    ports: ["127.0.0.1:${PORT}:5000"]
    hostname: shop
    stop_signal: SIGINT
    init: true
    depends_on:
      migrate: {condition: service_completed_successfully}
    volumes: [shared:/shared]
  migrate:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: ["sh", "-c", "sleep 1 && echo migrated > /shared/flag"]
    volumes: [shared:/shared]
  debug:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: ["sleep", "300"]
    profiles: [debug]
volumes:
  shared: {}
"""

# Three stages: without `target` the build goes on to `broken`, which fails.
DOCKERFILE = """FROM {registry}/berth-test/busybox:latest AS base
ARG GREETING
RUN mkdir /www && echo "$GREETING from base" > /www/stage
FROM base AS serve
ARG GREETING
RUN echo "$GREETING from serve" > /www/stage
CMD ["sh", "-c", "cat /shared/flag > /www/at-start 2>/dev/null; exec httpd -f -p 5000 -h /www"]
FROM serve AS broken
RUN exit 1
"""


@dataclass(frozen=True)
class Deployed:
    name: str
    operation: dict[str, Any]
    stack: dict[str, Any]
    services: dict[str, dict[str, Any]]  # by Compose name
    stage: str | None
    at_start: str | None
    web_container: dict[str, Any]
    image_labels: dict[str, str]
    migrate_containers: list[Any]


def _get(port: int, path: str) -> str | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/{path}", timeout=3)
    except httpx.HTTPError:
        return None
    return response.text.strip() if response.status_code == 200 else None


@pytest.fixture(scope="module")
def deployed(module_api: Api, bed: Testbed) -> Iterator[Deployed]:
    api = module_api
    services = Services(api, bed)
    h1 = services.engines["h1"]
    name = f"keys-{uuid.uuid4().hex[:4]}"
    port = free_port()
    context = context_tar(
        {"Dockerfile": DOCKERFILE.format(registry=bed.registry).encode()}, gzip=True
    )
    try:
        response = api.request(
            "POST",
            "/stacks",
            data={
                "name": name,
                "host_id": services.hosts["h1"],
                "compose": COMPOSE,
                "variables": json.dumps(
                    {"NAME": name, "PORT": str(port), "REGISTRY": bed.registry}
                ),
            },
            files={"context.web": ("web.tar.gz", context)},
        )
        assert response.status_code == 202, response.text
        body = response.json()
        operation = api.wait_operation(body["operation"]["id"], timeout=180)
        stage = wait_for(lambda: _get(port, "stage"), timeout=30, what="the web's answer")
        stack = api.get(f"/stacks/{body['stack']['id']}").json()
        by_name = {s["compose_name"]: s["service_id"] for s in stack["service_details"]}
        found = {c: api.get(f"/services/{s}").json() for c, s in by_name.items()}
        web = h1.containers.get(f"{name}-web")
        yield Deployed(
            name=name,
            operation=operation,
            stack=stack,
            services=found,
            stage=stage,
            at_start=_get(port, "at-start"),
            web_container=web.attrs,
            image_labels=h1.images.get(web.attrs["Config"]["Image"]).labels,
            migrate_containers=h1.containers.list(
                all=True, filters={"label": f"berth.service={by_name['migrate']}"}
            ),
        )
        removal = api.delete(f"/stacks/{body['stack']['id']}", params={"volumes": "true"})
        assert removal.status_code == 202, removal.text
        api.wait_operation(removal.json()["operation"]["id"], timeout=120)
    finally:
        # Only what this stack made: other tests share the engines.
        for engine in services.engines.values():
            for container in engine.containers.list(all=True, filters={"name": name}):
                container.remove(force=True)
            for network in engine.networks.list(names=[f"{name}_default"]):
                network.remove()
            for volume in engine.volumes.list(filters={"name": name}):
                volume.remove(force=True)
            engine.close()


def test_the_stack_deploys(deployed: Deployed) -> None:
    assert deployed.operation["status"] == "succeeded", deployed.operation["error"]
    assert deployed.stack["status"] == "running"


def test_the_build_stops_at_its_target(deployed: Deployed) -> None:
    assert deployed.stage == "hello from serve"
    assert deployed.image_labels["org.example.stage"] == "serve"


def test_the_web_has_its_container_name(deployed: Deployed) -> None:
    assert deployed.web_container["Name"] == f"/{deployed.name}-web"
    config, host = deployed.web_container["Config"], deployed.web_container["HostConfig"]
    assert (config["Hostname"], config["StopSignal"], host["Init"]) == ("shop", "SIGINT", True)


def test_the_web_starts_once_the_init_service_completed(deployed: Deployed) -> None:
    assert deployed.at_start == "migrated"
    migrate = deployed.services["migrate"]
    # Done, not failing: the init service settles as running with no replica left.
    assert migrate["status"] == "running", migrate
    assert migrate["spec"]["one_shot"] is True
    assert [t for t in migrate["tasks"] if t["desired_state"] == "running"] == []
    assert deployed.migrate_containers == []


def test_a_service_of_a_profile_not_chosen_is_left_out(deployed: Deployed) -> None:
    assert set(deployed.services) == {"web", "migrate"}

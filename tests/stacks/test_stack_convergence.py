"""Stacks on a real engine where the services start at the same moment: the simplest Compose
file (a web built from its context and a cache, no `depends_on`) deploys every time, and a
deploy that cannot finish fails after the deadline, saying why on the stack and its service."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.support import IMPATIENT_DEADLINE_S, Api, Services, context_tar, free_port
from tests.testbed import Testbed

TWO_SERVICES = """
services:
  web:
    build: .
    ports:
      - "127.0.0.1:${WEB_PORT}:5000"
  cache:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: ["sleep", "3600"]
    deploy:
      replicas: 3
"""

CANNOT_START = """
services:
  web:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: ["/no/such/program"]
"""


def web_context(registry: str) -> bytes:
    dockerfile = f'FROM {registry}/berth-test/busybox:latest\nCMD ["httpd", "-f", "-p", "5000"]\n'
    return context_tar({"Dockerfile": dockerfile.encode()}, gzip=True)


class Stacks(Services):
    """Stacks deployed on h1, and what they leave there removed afterwards."""

    def __init__(self, api: Api, bed: Testbed) -> None:
        super().__init__(api, bed)
        self.names: list[str] = []

    def deploy(
        self, compose: str, files: dict[str, tuple[str, bytes]] | None = None
    ) -> dict[str, Any]:
        variables = {"WEB_PORT": str(free_port()), "REGISTRY": self.bed.registry}
        name = f"race-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        fields = {"name": name, "host_id": self.hosts["h1"], "compose": compose}
        if files is None:
            response = self.api.post("/stacks", json={**fields, "variables": variables})
        else:
            form = {**fields, "variables": json.dumps(variables)}
            response = self.api.post("/stacks", data=form, files=files)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def cleanup(self) -> None:
        # Only this test's networks: the engine is shared with other runs.
        for name in self.names:
            for network in self.engines["h1"].networks.list(names=[f"{name}_default"]):
                with contextlib.suppress(docker.errors.DockerException):
                    network.remove()
        super().cleanup()


@pytest.fixture
def stacks(impatient_api: Api, bed: Testbed) -> Iterator[Stacks]:
    helper = Stacks(impatient_api, bed)
    yield helper
    helper.cleanup()


def remove(stacks: Stacks, stack_id: str) -> None:
    response = stacks.api.delete(f"/stacks/{stack_id}")
    assert response.status_code == 202, response.text
    done = stacks.api.wait_operation(response.json()["operation"]["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]


@pytest.mark.parametrize("attempt", range(4))
def test_two_services_without_depends_on_deploy(stacks: Stacks, attempt: int) -> None:
    # Both services' replicas create the stack's network at the same moment, once the web's
    # build is done; the race is a matter of timing, so it runs a few times.
    context = web_context(stacks.bed.registry)
    body = stacks.deploy(TWO_SERVICES, {"context.web": ("web.tar.gz", context)})
    stack = body["stack"]
    done = stacks.api.wait_operation(body["operation"]["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    read = stacks.api.get(f"/stacks/{stack['id']}").json()
    assert read["status"] == "running" and read["status_detail"] is None
    assert {s["status"] for s in read["service_details"]} == {"running"}
    networks = stacks.engines["h1"].networks.list(names=[f"{stack['name']}_default"])
    assert [n.name for n in networks] == [f"{stack['name']}_default"]
    remove(stacks, stack["id"])


def test_a_deploy_that_cannot_finish_fails_after_the_deadline_saying_why(
    stacks: Stacks,
) -> None:
    body = stacks.deploy(CANNOT_START)
    stack_id = body["stack"]["id"]
    done = stacks.api.wait_operation(body["operation"]["id"], timeout=90)
    assert done["status"] == "failed", done
    assert f"no further replica became ready in {IMPATIENT_DEADLINE_S} s" in done["error"]
    assert "/no/such/program" in done["error"], done["error"]

    stack = stacks.api.get(f"/stacks/{stack_id}").json()
    assert stack["status"] == "failed"
    assert stack["status_detail"] == done["error"]
    (web,) = stack["service_details"]
    service = stacks.get(web["service_id"])
    assert service["status"] == "converging"
    assert "replica 1: " in service["status_detail"]
    assert "/no/such/program" in service["status_detail"], service["status_detail"]
    remove(stacks, stack_id)

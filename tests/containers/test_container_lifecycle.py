"""A web server container's life on each engine, run once per engine for the module: run,
served, stopped, started, restarted, killed, deleted. Each test checks one behaviour against
what that run saw."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import HTTPD, Api, Fleet, fetch, free_port
from tests.testbed import Testbed


@dataclass(frozen=True)
class Life:
    ran: dict[str, Any]  # the container once its create operation succeeded
    page: str  # what it served on its published port
    stopped: dict[str, Any]
    killed: dict[str, Any]
    after_delete: int  # GET /containers/{id}
    left_on_engine: list[Any]


@pytest.fixture(scope="module")
def fleet(module_api: Api, bed: Testbed) -> Iterator[Fleet]:
    helper = Fleet(module_api, bed)
    yield helper
    helper.cleanup()


@pytest.fixture(scope="module", params=["h1", "h2"])
def life(request: pytest.FixtureRequest, fleet: Fleet) -> Life:
    host: str = request.param
    port = free_port()
    address = "127.0.0.1" if host == "h1" else "10.203.0.2"
    ran = fleet.run(
        host_id=fleet.hosts[host],
        command=HTTPD,
        ports=[{"container_port": 8080, "host_port": port, "host_ip": address}],
    )
    page = fetch(f"http://{address}:{port}/")
    cid = ran["id"]
    fleet.act(cid, "stop", timeout_s=5)
    stopped = fleet.wait_state(cid, "exited")
    fleet.act(cid, "start")
    fleet.wait_state(cid, "running")
    fetch(f"http://{address}:{port}/")
    fleet.act(cid, "restart", timeout_s=5)
    fleet.wait_state(cid, "running")
    fleet.act(cid, "kill", signal="SIGKILL")
    killed = fleet.wait_state(cid, "exited")
    response = fleet.api.delete(f"/containers/{cid}")
    assert response.status_code == 202
    fleet.api.wait_operation(response.json()["operation"]["id"])
    return Life(
        ran=ran,
        page=page,
        stopped=stopped,
        killed=killed,
        after_delete=fleet.api.get(f"/containers/{cid}").status_code,
        left_on_engine=fleet.engines[host].containers.list(
            all=True, filters={"label": f"berth.container={cid}"}
        ),
    )


def test_a_run_container_is_managed_and_running(life: Life) -> None:
    assert life.ran["state"] == "running" and life.ran["managed"] is True
    assert life.ran["docker_id"]


def test_it_serves_on_its_published_port(life: Life) -> None:
    assert life.page.startswith("hello-from-")


def test_stop_ends_it_cleanly_and_keeps_it_stopped(life: Life) -> None:
    assert life.stopped["desired_state"] == "stopped" and life.stopped["exit_code"] == 0


def test_sigkill_ends_it_with_137(life: Life) -> None:
    assert life.killed["exit_code"] == 137


def test_delete_removes_it_from_berth_and_the_engine(life: Life) -> None:
    assert life.after_delete == 404
    assert not life.left_on_engine

"""A container's runtime options on the testbed's real engines: each one as the engine's own
inspection shows it, and reservations in placement over two hosts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Api, Fleet
from tests.testbed import Testbed, remove_containers


@pytest.fixture
def fleet(api: Api, bed: Testbed) -> Iterator[Fleet]:
    helper = Fleet(api, bed)
    yield helper
    # Only this test's containers (and their anonymous volumes): other tests share the engines.
    for container in api.get("/containers", params={"limit": 500}).json()["items"]:
        for engine in helper.engines.values():
            remove_containers(engine, f"berth.container={container['id']}")
    for engine in helper.engines.values():
        engine.close()


def _inspect(fleet: Fleet, host: str, container: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = fleet.engines[host].containers.get(container["docker_id"]).attrs
    return attrs


def test_runtime_options_reach_the_engine(fleet: Fleet) -> None:
    container = fleet.run(
        host_id=fleet.hosts["h1"],
        command=["sleep", "300"],
        hostname="web",
        domainname="example.org",
        stop_signal="SIGINT",
        stop_grace_period_s=3,
        stdin_open=True,
        tty=True,
        working_dir="/tmp",
        init=True,
        extra_hosts=["db.local:10.0.0.5"],
        dns_search=["example.org"],
        ulimits={"nofile": {"soft": 1024, "hard": 2048}},
        tmpfs=["/run/app:size=1m"],
        shm_size_bytes=32 * 2**20,
        read_only=True,
        logging={"driver": "json-file", "options": {"max-size": "1m", "max-file": "2"}},
        cap_drop=["NET_RAW", "MKNOD"],
        security_opt=["no-new-privileges:true"],
        sysctls={"net.core.somaxconn": "512"},
        expose=["3000"],
        anonymous_volumes=["/data"],
        resources={"memory_bytes": 256 * 2**20, "reservations": {"memory_bytes": 64 * 2**20}},
    )
    attrs = _inspect(fleet, "h1", container)
    config, host = attrs["Config"], attrs["HostConfig"]

    assert (config["Hostname"], config["Domainname"]) == ("web", "example.org")
    assert (config["StopSignal"], config["StopTimeout"]) == ("SIGINT", 3)
    assert (config["OpenStdin"], config["Tty"], config["WorkingDir"]) == (True, True, "/tmp")
    assert "3000/tcp" in config["ExposedPorts"]
    assert host["Init"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["ExtraHosts"] == ["db.local:10.0.0.5"]
    assert host["DnsSearch"] == ["example.org"]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["Tmpfs"] == {"/run/app": "size=1m"}
    assert host["ShmSize"] == 32 * 2**20
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert set(host["CapDrop"]) == {"NET_RAW", "MKNOD"}
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Sysctls"] == {"net.core.somaxconn": "512"}
    assert host["MemoryReservation"] == 64 * 2**20
    [anonymous] = [m for m in attrs["Mounts"] if m["Destination"] == "/data"]
    assert anonymous["Type"] == "volume"
    volume = fleet.engines["h1"].volumes.get(anonymous["Name"])
    assert volume.attrs["Labels"] == {"berth.managed": "true"}

    # And what they do inside: the root filesystem refuses a write, the tmpfs takes one.
    engine_container = fleet.engines["h1"].containers.get(container["docker_id"])
    refused = engine_container.exec_run(["sh", "-c", "touch /x"])
    assert refused.exit_code != 0
    assert engine_container.exec_run(["sh", "-c", "touch /run/app/x"]).exit_code == 0
    hostname = engine_container.exec_run(["hostname"]).output
    assert isinstance(hostname, bytes) and hostname.decode().strip() == "web"

    # The API shows what was asked.
    shown = fleet.state(container["id"])
    assert (shown["hostname"], shown["read_only"], shown["tmpfs"]) == (
        "web",
        True,
        ["/run/app:size=1m"],
    )
    assert shown["resources"]["reservations"] == {"cpus": None, "memory_bytes": 64 * 2**20}


def test_an_unset_option_is_the_engines_default(fleet: Fleet) -> None:
    container = fleet.run(host_id=fleet.hosts["h2"], command=["sleep", "300"])
    host = _inspect(fleet, "h2", container)["HostConfig"]

    assert host["ReadonlyRootfs"] is False
    assert not host.get("Tmpfs")
    assert fleet.state(container["id"])["hostname"] is None


def test_the_policy_refuses_host_options_by_name(fleet: Fleet) -> None:
    body = fleet.create(
        expect=422,
        host_id=fleet.hosts["h1"],
        cap_add=["SYS_ADMIN"],
        security_opt=["seccomp=unconfined"],
        sysctls={"kernel.core_pattern": "|/bin/sh"},
    )

    assert [error["loc"] for error in body["errors"]] == [
        "body.cap_add",
        "body.security_opt[0]",
        "body.sysctls.kernel.core_pattern",
    ]


def test_a_host_without_the_reserved_cpu_is_not_chosen(fleet: Fleet) -> None:
    """h1's CPUs are all reserved by one container; h2 runs two plain ones. By the count of
    containers h1 would win; by reservations only h2 has room."""
    h1 = fleet.api.get(f"/hosts/{fleet.hosts['h1']}").json()
    assert h1["cpus"], h1
    fleet.run(
        host_id=fleet.hosts["h1"],
        command=["sleep", "300"],
        resources={"reservations": {"cpus": h1["cpus"]}},
    )
    for _ in range(2):
        fleet.run(host_id=fleet.hosts["h2"], command=["sleep", "300"])

    placed = fleet.run(command=["sleep", "300"], resources={"reservations": {"cpus": 0.5}})

    assert placed["host_id"] == fleet.hosts["h2"]


def test_no_host_has_the_reserved_memory(fleet: Fleet) -> None:
    h1 = fleet.api.get(f"/hosts/{fleet.hosts['h1']}").json()
    h2 = fleet.api.get(f"/hosts/{fleet.hosts['h2']}").json()
    wanted = max(h1["memory_bytes"], h2["memory_bytes"]) + 2**30

    response = fleet.api.post(
        "/containers",
        json={
            "image": fleet.bed.image,
            "command": ["sleep", "300"],
            "resources": {"reservations": {"memory_bytes": wanted}},
        },
    )

    assert response.status_code == 409, response.text
    assert "not enough memory" in response.text


def _create_error(fleet: Fleet, **spec: Any) -> str:
    body = fleet.create(host_id=fleet.hosts["h1"], command=["sleep", "300"], **spec)
    done = fleet.api.wait_operation(body["operation"]["id"], timeout=60)
    assert done["status"] == "failed", done
    error: str = done["error"]
    return error


def test_pull_policy_never_does_not_pull(fleet: Fleet) -> None:
    missing = f"{fleet.bed.registry}/berth-test/not-here-{uuid.uuid4().hex[:8]}:1"

    error = _create_error(fleet, image=missing, pull_policy="never")

    assert "pull_policy is never" in error


def test_the_platform_chooses_the_image(fleet: Fleet) -> None:
    """The testbed's image is for this machine's platform only, and in no registry: for another
    platform the engine does not use it and the pull that follows fails; for its own it runs."""
    arch = fleet.engines["h1"].info()["Architecture"]
    other = "linux/arm64" if arch in ("x86_64", "amd64") else "linux/amd64"

    error = _create_error(fleet, platform=other)

    assert "pull" in error
    own = "linux/amd64" if arch in ("x86_64", "amd64") else "linux/arm64"
    assert fleet.run(host_id=fleet.hosts["h1"], command=["sleep", "300"], platform=own)["docker_id"]

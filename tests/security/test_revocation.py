"""A token revoked through one `berth serve` is refused by every other within a second, and the
long streams it opened there end too."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.support import start_serve, wait_for
from tests.testbed import Testbed, remove_containers

BOOTSTRAP = "berth_revocation_test_token_abcdefghijk"
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}


def _serve(tmp_path: Path, name: str, database: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        "BERTH_DATABASE_URL": f"sqlite:///{database}",
        "BERTH_KEY_FILE": str(tmp_path / "berth.key"),
        "BERTH_BOOTSTRAP_TOKEN": BOOTSTRAP,
        "BERTH_REGISTER_LOCAL_HOST": "false",
        "BERTH_LOG_LEVEL": "WARNING",
    }
    server, port = start_serve(tmp_path, env, name=name, ready_path="/readyz", timeout=60)
    return server, f"http://127.0.0.1:{port}/api/v1"


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    database = tmp_path / "berth.db"
    servers: list[subprocess.Popen[bytes]] = []
    try:
        # One after the other: the first migrates the database.
        first, a = _serve(tmp_path, "a", database)
        servers.append(first)
        second, b = _serve(tmp_path, "b", database)
        servers.append(second)
        yield a, b
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(30)


def test_revocation_reaches_another_process_and_ends_its_log_follow(
    two_servers: tuple[str, str], bed: Testbed
) -> None:
    a, b = two_servers
    admin = httpx.Client(base_url=a, headers=ADMIN, timeout=30)
    host = admin.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()
    accepted = admin.post(
        "/containers",
        json={"image": bed.image, "host_id": host["id"], "command": ["sleep", "300"]},
    ).json()
    container_id = accepted["container"]["id"]
    engine = docker.DockerClient(base_url=bed.h1_url)
    try:
        operation = admin.get(
            f"/operations/{accepted['operation']['id']}", params={"wait": 30}
        ).json()
        assert operation["status"] == "succeeded", operation
        token = admin.post("/tokens", json={"name": "reader", "role": "viewer"}).json()
        reader = {"Authorization": f"Bearer {token['token']}"}
        assert httpx.get(f"{b}/me", headers=reader).status_code == 200  # now cached in b

        # A followed log of a container that prints nothing: only the token check can end it.
        ended = threading.Event()

        def follow() -> None:
            with httpx.stream(
                "GET",
                f"{b}/containers/{container_id}/logs",
                params={"follow": "true"},
                headers=reader,
                timeout=60,
            ) as response:
                assert response.status_code == 200
                for _ in response.iter_bytes():
                    pass
            ended.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert not ended.wait(1.5), "the stream ended before the revocation"

        assert admin.delete(f"/tokens/{token['id']}").status_code == 204
        revoked = time.monotonic()
        wait_for(
            lambda: httpx.get(f"{b}/me", headers=reader).status_code == 401,
            timeout=5,
            what="the other process to refuse the revoked token",
        )
        assert time.monotonic() - revoked < 1.2  # 1 s, and a poll's slack
        assert ended.wait(5), "the followed log outlived its token"
        assert time.monotonic() - revoked < 2.0
    finally:
        remove_containers(engine, f"berth.container={container_id}")
        engine.close()
        admin.close()

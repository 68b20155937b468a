"""The people's `berth` as a person runs it: the installed entry point, as a subprocess, against a
live server (uvicorn, as `berth serve` runs it) managing the testbed's engine h1.

One server serves the module; each test makes and removes its own objects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, BUSYBOX, DOCKERFILE, free_port, served, wait_for
from tests.testbed import Testbed, remove_containers

# The entry point pip installed beside the interpreter running the tests: what a user runs.
BERTH = Path(sys.executable).with_name("berth")


@dataclass(frozen=True)
class Server:
    url: str
    host_id: str
    engine: docker.DockerClient


@pytest.fixture(scope="module")
def server(module_settings: Settings, module_db: Database, bed: Testbed) -> Iterator[Server]:
    with (
        served(create_app(module_settings)) as url,
        httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        ) as api,
    ):
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        wait_for(
            lambda: api.get(f"/hosts/{host}").json()["status"] == "ready",
            timeout=30,
            what="h1 to be ready",
        )
        engine = docker.DockerClient(base_url=bed.h1_url, timeout=120)
        try:
            yield Server(url=url, host_id=host, engine=engine)
        finally:
            engine.close()


def berth(
    *args: str,
    env: dict[str, str],
    stdin: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BERTH), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no BERTH_* of the test run, a config directory of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env.update(extra)
    return env


@pytest.fixture
def env(server: Server, tmp_path: Path) -> dict[str, str]:
    return user_env(tmp_path, BERTH_URL=server.url, BERTH_TOKEN=BOOTSTRAP_TOKEN)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def test_login_stores_the_token_readable_by_the_user_only(server: Server, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    result = berth("login", server.url, env=env, stdin=f"{BOOTSTRAP_TOKEN}\n")
    ok(result)
    path = tmp_path / "config" / "berth" / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {"url": server.url, "token": BOOTSTRAP_TOKEN}
    assert BOOTSTRAP_TOKEN not in result.stdout + result.stderr

    hosts = as_json(berth("hosts", "--json", env=env))
    assert [h["name"] for h in hosts] == ["h1"]

    ok(berth("logout", env=env))
    assert not path.exists()
    assert berth("hosts", env=env).returncode == 2, "no server configured is a usage error"


def test_a_wrong_token_is_refused_at_login_and_not_stored(server: Server, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    result = berth("login", server.url, env=env, stdin="berth_wrong_token_0123456789abcdef\n")
    assert result.returncode == 4, result
    assert not (tmp_path / "config" / "berth" / "config.json").exists()
    assert "0123456789abcdef" not in result.stdout + result.stderr


def test_run_ps_logs_stop_rm_a_container(server: Server, bed: Testbed, env: dict[str, str]) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    started: dict[str, Any] = {}
    try:
        started = as_json(
            berth(
                "run",
                "--json",
                "-d",
                "--name",
                name,
                "--host",
                "h1",
                "-e",
                "GREETING=hello",
                bed.image,
                "--",
                "sh",
                "-c",
                "trap 'exit 0' TERM; echo $GREETING-cli; sleep 300 & wait",
                env=env,
            )
        )
        assert started["name"] == name and started["state"] == "running"
        [running] = server.engine.containers.list(
            filters={"label": f"berth.container={started['id']}"}
        )

        listed = as_json(berth("ps", "--json", "--host", "h1", env=env))
        assert [c["id"] for c in listed if c["name"] == name] == [started["id"]]
        assert name in ok(berth("ps", env=env)), "the table names it"

        wait_for(lambda: b"hello-cli" in running.logs(), timeout=15, what="its output")
        assert "hello-cli" in ok(berth("logs", name, env=env))

        ok(berth("stop", name, env=env))
        running.reload()
        assert running.status == "exited"
        assert name not in ok(berth("ps", env=env)), "ps shows running containers only"
        [stopped] = [c for c in as_json(berth("ps", "-a", "--json", env=env)) if c["name"] == name]
        assert stopped["state"] == "exited"

        ok(berth("rm", name, env=env))
        assert not server.engine.containers.list(
            all=True, filters={"label": f"berth.container={started['id']}"}
        )
        assert name not in [c["name"] for c in as_json(berth("ps", "-a", "--json", env=env))]
    finally:
        if started:
            remove_containers(server.engine, f"berth.container={started['id']}")


COMPOSE = """
services:
  web:
    build: ./web
    command:
      ["sh", "-c", "trap 'exit 0' TERM; echo $$GREETING; cat /etc/site.conf; sleep 300 & wait"]
    env_file: web.env
    volumes:
      - ./site.conf:/etc/site.conf:ro
"""


def test_deploy_a_compose_file_with_a_build_context_then_scale_it(
    server: Server, tmp_path: Path, env: dict[str, str]
) -> None:
    stack = f"shop-{uuid.uuid4().hex[:6]}"
    project = tmp_path / stack
    (project / "web").mkdir(parents=True)
    (project / "compose.yaml").write_text(COMPOSE)
    (project / "web.env").write_text("GREETING=from-env-file\n")
    (project / "site.conf").write_text("from-the-project-directory\n")
    (project / "web" / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(BUSYBOX, project / "web" / "busybox")
    service_id = ""
    try:
        # A dry run stores nothing and answers the plan.
        plan = as_json(
            berth("deploy", "--json", "--dry-run", "-f", str(project / "compose.yaml"), env=env)
        )
        assert [(x["compose_name"], x["action"]) for x in plan["services"]] == [("web", "create")]
        assert as_json(berth("stacks", "ls", "--json", env=env)) == []

        deployed = as_json(berth("deploy", "--json", "-f", str(project / "compose.yaml"), env=env))
        assert deployed["name"] == stack and deployed["status"] == "running", deployed
        [web] = deployed["service_details"]
        service_id = web["service_id"]
        containers = server.engine.containers.list(
            filters={"label": f"berth.service={web['service_id']}"}
        )
        assert len(containers) == 1
        # The env_file and the relative bind mount both came from the project directory.
        wait_for(
            lambda: b"from-env-file\nfrom-the-project-directory" in containers[0].logs(),
            timeout=15,
            what="its output",
        )

        assert [s["name"] for s in as_json(berth("stacks", "ls", "--json", env=env))] == [stack]
        operations = as_json(berth("ops", "ls", "--json", env=env))
        [deploy] = [o for o in operations if o["kind"] == "stack.deploy"]
        assert (
            as_json(berth("ops", "wait", "--json", deploy["id"], env=env))["status"] == "succeeded"
        )

        scaled = as_json(berth("services", "scale", "--json", f"{web['name']}=2", env=env))
        assert scaled["replicas"]["running"] == 2
        assert (
            len(
                server.engine.containers.list(
                    filters={"label": f"berth.service={web['service_id']}"}
                )
            )
            == 2
        )

        ok(berth("stacks", "rm", stack, env=env))
        assert not server.engine.containers.list(
            all=True, filters={"label": f"berth.service={web['service_id']}"}
        )
    finally:
        if service_id:
            remove_containers(server.engine, f"berth.service={service_id}")


def test_a_service_is_created_updated_and_rolled_back(
    server: Server, bed: Testbed, env: dict[str, str]
) -> None:
    name = f"cli-svc-{uuid.uuid4().hex[:6]}"
    sleeper = ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]
    service_id = ""
    try:
        created = as_json(
            berth(
                "services",
                "create",
                "--json",
                "--replicas",
                "2",
                "-e",
                "V=1",
                name,
                bed.image,
                *sleeper,
                env=env,
            )
        )
        service_id = created["id"]
        assert created["replicas"]["running"] == 2 and created["revision"] == 1
        ok(berth("services", "update", name, "-e", "V=2", env=env))
        updated = as_json(berth("services", "inspect", "--json", name, env=env))
        assert updated["revision"] == 2 and updated["spec"]["env"] == {"V": "2"}
        assert {t["revision"] for t in updated["tasks"]} == {2}

        plan = as_json(berth("services", "plan", "--json", name, "--replicas", "3", env=env))
        assert len(plan["start"]) == 1 and plan["replace"] == [] and not plan["revision_change"]

        back = as_json(berth("services", "rollback", "--json", name, env=env))
        assert back["revision"] == 3 and back["spec"]["env"] == {"V": "1"}
        ok(berth("services", "rm", name, env=env))
        assert name not in ok(berth("services", "ls", env=env))
    finally:
        if service_id:
            remove_containers(server.engine, f"berth.service={service_id}")


def test_a_secret_is_created_from_stdin_and_never_printed(env: dict[str, str]) -> None:
    value = f"value-{uuid.uuid4().hex}"
    created = berth("secrets", "create", "cli_db_password", env=env, stdin=f"{value}\n")
    ok(created)
    assert value not in created.stdout + created.stderr
    [listed] = [
        s
        for s in as_json(berth("secrets", "ls", "--json", env=env))
        if s["name"] == "cli_db_password"
    ]
    assert value not in json.dumps(listed)
    # The events kept, then the command ends by itself (no -f): one JSON object a line.
    events = [json.loads(line) for line in ok(berth("events", "--json", env=env)).splitlines()]
    assert ("secret.created", listed["id"]) in {(e["type"], e["resource_id"]) for e in events}
    ok(berth("secrets", "rm", "cli_db_password", env=env))
    assert "cli_db_password" not in ok(berth("secrets", "ls", env=env))


def test_exit_codes_and_one_line_for_what_went_wrong(server: Server, tmp_path: Path) -> None:
    down = berth(
        "ps",
        env=user_env(
            tmp_path, BERTH_URL=f"http://127.0.0.1:{free_port()}", BERTH_TOKEN=BOOTSTRAP_TOKEN
        ),
    )
    wrong = berth(
        "ps",
        env=user_env(tmp_path, BERTH_URL=server.url, BERTH_TOKEN="berth_not_a_token_at_all_000000"),
    )
    env = user_env(tmp_path, BERTH_URL=server.url, BERTH_TOKEN=BOOTSTRAP_TOKEN)
    unknown = berth("logs", "no-such-container", env=env)
    usage = berth("ps", "--no-such-option", env=env)
    for result, code in ((down, 1), (wrong, 4), (unknown, 3), (usage, 2)):
        assert result.returncode == code, (code, result)
        assert "Traceback" not in result.stderr
    for result in (down, wrong, unknown):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stdout == ""
    assert "no-such-container" in unknown.stderr
    assert "not_a_token" not in wrong.stderr and BOOTSTRAP_TOKEN not in down.stderr


def test_completion_scripts_name_the_commands(tmp_path: Path) -> None:
    script = ok(berth("completion", "bash", env=user_env(tmp_path)))
    assert "deploy" in script and "services" in script

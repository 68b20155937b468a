"""The `berth` command as a user runs it: a real server process and the token command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, wait_for
from tests.testbed import ROOT, Testbed


def berth(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def test_serve_migrates_registers_the_local_engine_and_answers(
    tmp_path: Path, bed: Testbed
) -> None:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "BERTH_DATABASE_URL": f"sqlite:///{tmp_path / 'berth.db'}",
            "BERTH_BOOTSTRAP_TOKEN": "berth_cli_test_token_abcdefghijklmnop",
            "DOCKER_HOST": bed.h1_url,
            "BERTH_LOG_LEVEL": "INFO",
        }
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            berth("serve", "--port", str(port), env=env),
            cwd=tmp_path,
            env=env,
            stderr=log,
            stdout=log,
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer berth_cli_test_token_abcdefghijklmnop"}
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, what="berth serve to be ready")
        hosts = httpx.get(f"{base}/api/v1/hosts", headers=headers).json()["items"]
        assert [h["name"] for h in hosts] == ["local"]
        assert (tmp_path / "berth.key").exists(), "the key file is created beside the database"
    finally:
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then re-raises the signal so its parent sees why it ended.
        assert server.wait(30) in (0, -signal.SIGTERM)
    lines = log_path.read_text().splitlines()
    assert any("Application shutdown complete" in line for line in lines)
    assert any('"msg": "request"' in line and '"request_id"' in line for line in lines)
    assert "berth_cli_test_token" not in log_path.read_text(), "a token leaked into the log"

    created = subprocess.run(
        berth("token", "create", "--role", "viewer", "--name", "ops", env=env),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = created.stdout.strip()
    assert secret.startswith("berth_") and "\n" not in secret
    bad = subprocess.run(
        berth("token", "create", "--role", "root", env=env),
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    assert bad.returncode != 0


def test_weak_bootstrap_token_is_refused(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        BERTH_DATABASE_URL=f"sqlite:///{tmp_path / 'b.db'}",
        BERTH_BOOTSTRAP_TOKEN="changeme",
    )
    result = subprocess.run(
        berth("migrate", env=env), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "24 random characters" in result.stderr

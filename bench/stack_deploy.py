"""Deploying the web + cache example from one Compose file: Berth's `POST /stacks` against
docker-compose (v1, Debian's) on the same engine, in alternating rounds.

Both start from nothing on the testbed's h1 and stop the clock when the web answers on its
published port with the cache's reply (so both include the build, the cache's health check that
`depends_on: condition: service_healthy` waits for, and the web's start). Each round removes
everything afterwards (Berth: `DELETE /stacks/{id}`; Compose: `down --rmi local`), outside the
timed region. The web's build cache is warm after the first round for both.

    .venv/bin/python -m bench.stack_deploy [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import API, DEFAULT_DOCKER_HOST, BerthServer, free_port, say

REGISTRY = "10.203.0.1:5000"
COMPOSE = """
services:
  web:
    build: ./web
    ports:
      - "127.0.0.1:${WEB_PORT}:5000"
    depends_on:
      cache:
        condition: service_healthy
  cache:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: >-
      sh -c "printf '#!/bin/sh\\necho PONG\\n' > /pong && chmod +x /pong
      && exec nc -ll -p 6379 -e /pong"
    healthcheck:
      test: ["CMD-SHELL", "echo PING | timeout 2 nc 127.0.0.1 6379 | grep -q PONG"]
      interval: 500ms
      retries: 3
"""
FILES = {
    "Dockerfile": f"FROM {REGISTRY}/berth-test/busybox:latest\nCOPY www /www\n"
    'CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]\n',
    "www/cgi-bin/hit": "#!/bin/sh\necho 'Content-Type: text/plain'\necho ''\n"
    'echo "cache says: $(echo PING | timeout 2 nc cache 6379)"\n',
}


def write_project(directory: Path) -> bytes:
    """The Compose project on disk (for docker-compose) and the web context as a tar.gz."""
    (directory / "compose.yaml").write_text(COMPOSE)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in FILES.items():
            path = directory / "web" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(0o755)
            archive.add(path, arcname=name)
    return buffer.getvalue()


def answers(port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/hit", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "PONG" in response.text


def wait_answer(port: int, started: float, timeout: float = 120) -> float:
    while time.perf_counter() - started < timeout:
        if answers(port):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise TimeoutError(f"the web did not answer on {port} within {timeout}s")


def berth_round(client: httpx.Client, context: bytes, round_: int) -> float:
    port = free_port()
    started = time.perf_counter()
    response = client.post(
        f"{API}/stacks",
        data={
            "name": f"bench-{round_}",
            "compose": COMPOSE,
            "variables": json.dumps({"WEB_PORT": str(port), "REGISTRY": REGISTRY}),
        },
        files={"context.web": ("web.tar.gz", context)},
    )
    response.raise_for_status()
    elapsed = wait_answer(port, started)
    stack_id = response.json()["stack"]["id"]
    removal = client.delete(f"{API}/stacks/{stack_id}", params={"volumes": "true"}).json()
    client.get(f"{API}/operations/{removal['operation']['id']}", params={"wait": 60})
    return elapsed


def compose_round(directory: Path, docker_host: str, round_: int) -> float:
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": docker_host, "WEB_PORT": str(port), "REGISTRY": REGISTRY}
    command = ["docker-compose", "-p", f"benchcompose{round_}", "-f", "compose.yaml"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "up", "-d", "--build"], cwd=directory, env=env, check=True, capture_output=True
    )
    elapsed = wait_answer(port, started)
    subprocess.run(
        [*command, "down", "--rmi", "local", "-v"],
        cwd=directory,
        env=env,
        check=True,
        capture_output=True,
    )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docker-host", default=DEFAULT_DOCKER_HOST)
    args = parser.parse_args()
    berth: list[float] = []
    compose: list[float] = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-stack-") as tmp:
        directory = Path(tmp)
        context = write_project(directory)
        server = BerthServer(directory / "server", args.docker_host)
        server.start()
        try:
            with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as c:
                server.wait_ready(c)
                for round_ in range(args.rounds):
                    berth.append(berth_round(c, context, round_))
                    compose.append(compose_round(directory, args.docker_host, round_))
                    say(f"round {round_ + 1}: Berth {berth[-1]:.2f} s, Compose {compose[-1]:.2f} s")
        finally:
            server.stop()
    say("web + cache from one Compose file, until the web answers with the cache's reply")
    say(
        f"  Berth  POST /stacks       mean {statistics.mean(berth):.2f} s  (rounds: "
        + ", ".join(f"{v:.2f}" for v in berth)
        + ")"
    )
    say(
        f"  docker-compose up --build mean {statistics.mean(compose):.2f} s  (rounds: "
        + ", ".join(f"{v:.2f}" for v in compose)
        + ")"
    )
    say(f"  Berth / Compose: {statistics.mean(berth) / statistics.mean(compose):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

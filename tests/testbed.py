"""The real parts the tests run against, as `scripts/testbed.sh up` set them up.

Nothing here is mocked: the engines, registries and PostgreSQL are real processes. If the
testbed is not up, the tests fail and say how to start it; they never skip.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "testbed.sh"


@dataclass(frozen=True)
class Testbed:
    __test__ = False

    h1_url: str
    h2_url: str
    # h3 answers TLS only, to a client certificate from the testbed CA (h3_ca, h3_client_*);
    # h3_other_ca is a CA that signed nothing.
    h3_url: str
    h3_ca: Path
    h3_client_cert: Path
    h3_client_key: Path
    h3_other_ca: Path
    registry: str
    auth_registry: str
    registry_user: str
    registry_password: str
    pg_url: str
    image: str

    def h3_tls(self, *, ca: Path | None = None, client: bool = True) -> dict[str, str]:
        """The `tls` of a host registration for h3: the testbed CA (or `ca`), and the client
        certificate unless `client` is false."""
        tls = {"ca_cert": (ca or self.h3_ca).read_text()}
        if client:
            tls |= {
                "client_cert": self.h3_client_cert.read_text(),
                "client_key": self.h3_client_key.read_text(),
            }
        return tls

    def host(self, name: str) -> dict[str, Any]:
        """How to register engine `name` (h1, h2 or h3): its URL, and for h2, reached over plain
        TCP, `insecure: true`; for h3 its TLS material."""
        if name == "h1":
            return {"url": self.h1_url}
        if name == "h2":
            return {"url": self.h2_url, "insecure": True}
        return {"url": self.h3_url, "tls": self.h3_tls()}

    def run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run([str(SCRIPT), *args], check=True, timeout=timeout, capture_output=True)

    def stop_engine(self, name: str) -> None:
        self.run("stop-engine", name)

    def start_engine(self, name: str) -> None:
        self.run("start-engine", name)


@lru_cache
def testbed() -> Testbed:
    env = dict(os.environ)
    if "BERTH_TEST_H3_URL" not in env:
        # Run by hand (plain `pytest`), or with an environment exported before h3 existed: read
        # what the script would export.
        printed = subprocess.run(
            [str(SCRIPT), "env"], check=True, capture_output=True, text=True
        ).stdout
        for line in printed.splitlines():
            assignment = line.removeprefix("export ").strip()
            if "=" in assignment:
                name, _, value = assignment.partition("=")
                env[name] = shlex.split(value)[0] if value else ""
    return Testbed(
        h1_url=env["BERTH_TEST_H1_URL"],
        h2_url=env["BERTH_TEST_H2_URL"],
        h3_url=env["BERTH_TEST_H3_URL"],
        h3_ca=Path(env["BERTH_TEST_H3_CA"]),
        h3_client_cert=Path(env["BERTH_TEST_H3_CLIENT_CERT"]),
        h3_client_key=Path(env["BERTH_TEST_H3_CLIENT_KEY"]),
        h3_other_ca=Path(env["BERTH_TEST_H3_OTHER_CA"]),
        registry=env["BERTH_TEST_REGISTRY"],
        auth_registry=env["BERTH_TEST_AUTH_REGISTRY"],
        registry_user=env["BERTH_TEST_REGISTRY_USER"],
        registry_password=env["BERTH_TEST_REGISTRY_PASSWORD"],
        pg_url=env["BERTH_TEST_PG_URL"],
        image=env.get("BERTH_TEST_IMAGE", "berth-test/busybox:latest"),
    )


def remove_containers(engine: Any, label: str) -> None:
    """Remove every container with `label` (key=value), ignoring ones Berth removes meanwhile."""
    import docker

    for container in engine.containers.list(
        all=True, filters={"label": label}, ignore_removed=True
    ):
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True, v=True)

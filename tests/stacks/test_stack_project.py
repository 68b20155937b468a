"""A stack from a project directory on a real engine: a dry run that leaves nothing behind, a
deploy whose build context, `.env`, `env_file`, file secret and config come from the project,
PUTs in which one file changed that roll only the service that uses it, and the warnings in
the answers."""

from __future__ import annotations

import contextlib
import uuid

import docker.errors

from app.core.db import Database
from app.operations.models import Operation
from app.services.models import Service
from app.stacks.models import Stack
from tests.support import Api, BothHosts, context_tar, wait_for
from tests.support import deployed as _deployed
from tests.support import send_project as _send
from tests.testbed import Testbed

COMPOSE = """
version: "3.8"
services:
  web:
    build: ./web
    env_file: web.env
    environment:
      GREETING: ${GREETING}
      MISSING: ${NOT_SET_ANYWHERE}
    command: ["sleep", "3600"]
    secrets: [api_key]
    # One network creator at a time: the race of two (issue 13) is tested apart.
    depends_on: [cache]
  cache:
    image: ${REGISTRY}/berth-test/busybox:latest
    command: ["sleep", "3600"]
    configs:
      - source: app
        target: /etc/app.conf
secrets:
  api_key:
    file: ./secrets/api_key.txt
configs:
  app:
    file: app.conf
"""
API_KEY = "project-file-secret-value"


def _project(registry: str, page: str, conf: str = "listen 80;\n") -> bytes:
    return context_tar(
        {
            "compose.yaml": COMPOSE.encode(),
            "secrets/api_key.txt": API_KEY.encode(),
            "app.conf": conf.encode(),
            ".env": f"GREETING=from-dotenv\nREGISTRY={registry}\n".encode(),
            "web.env": b"FROM_ENV_FILE=yes\n",
            "web/Dockerfile": (
                f"FROM {registry}/berth-test/busybox:latest\nCOPY index.html /www/\n"
            ).encode(),
            "web/index.html": page.encode(),
        },
        gzip=True,
    )


def _rows(db: Database) -> tuple[int, ...]:
    with db.session(write=False) as session:
        return tuple(session.query(model).count() for model in (Stack, Service, Operation))


def _engine_objects(services: BothHosts, name: str) -> tuple[int, ...]:
    h1 = services.engines["h1"]
    return (
        len(h1.containers.list(all=True, filters={"name": name})),
        len(h1.networks.list(names=[f"{name}_default"])),
        len([tag for image in h1.images.list() for tag in image.tags if f"/{name}/" in tag]),
    )


def _read(api: Api, services: BothHosts, service_id: str, path: str) -> str:
    """A file of the service's running replica, as its process sees it (a replica replaced
    meanwhile is looked for again)."""

    def content() -> str | None:
        tasks = api.get(f"/services/{service_id}").json()["tasks"]
        for task in (t["container_id"] for t in tasks if t["state"] == "running"):
            for container in services.engines["h1"].containers.list(
                filters={"label": f"berth.container={task}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    code, output = container.exec_run(["cat", path])
                    assert code == 0 and isinstance(output, bytes), output
                    return output.decode()
        return None

    text: str = wait_for(content, timeout=30, what=f"{path} in a running replica")
    return text


def test_a_project_directory_deploys_and_rolls_only_what_changed(api: Api, bed: Testbed) -> None:
    services = BothHosts(api, bed)
    name = f"proj-{uuid.uuid4().hex[:4]}"
    host = services.hosts["h1"]
    stack_id = None
    try:
        before = (_rows(api.db), _engine_objects(services, name))
        dry = _send(
            api,
            "POST",
            "/stacks?dry_run=true",
            _project(bed.registry, "v1"),
            name=name,
            host_id=host,
        )
        assert dry.status_code == 200, dry.text
        plan = dry.json()
        assert {s["compose_name"]: s["action"] for s in plan["services"]} == {
            "web": "create",
            "cache": "create",
        }
        assert plan["builds"] == ["web"]
        assert (
            "compose.version: the top-level `version` is obsolete and ignored" in (plan["warnings"])
        )
        assert (_rows(api.db), _engine_objects(services, name)) == before

        created = _send(
            api, "POST", "/stacks", _project(bed.registry, "v1"), name=name, host_id=host
        )
        stack_id = _deployed(api, created)["stack"]["id"]
        assert any("'NOT_SET_ANYWHERE' is not set" in w for w in created.json()["warnings"])
        by_name = {
            s["compose_name"]: s["service_id"]
            for s in api.get(f"/stacks/{stack_id}").json()["service_details"]
        }
        web = api.get(f"/services/{by_name['web']}").json()
        assert web["spec"]["env"] == {
            "FROM_ENV_FILE": "yes",
            "GREETING": "from-dotenv",
            "MISSING": "",
        }
        cache_before = api.get(f"/services/{by_name['cache']}").json()
        assert _read(api, services, by_name["web"], "/run/secrets/api_key") == API_KEY
        assert _read(api, services, by_name["cache"], "/etc/app.conf") == "listen 80;\n"
        # The value is stored encrypted and never answered.
        for path in (f"/stacks/{stack_id}", "/secrets", f"/services/{by_name['web']}"):
            assert API_KEY not in api.get(path).text

        # Only web/index.html changed: the web's build context, so only the web rolls.
        changed = _project(bed.registry, "v2")
        dry_update = _send(api, "PUT", f"/stacks/{stack_id}?dry_run=true", changed)
        assert dry_update.status_code == 200, dry_update.text
        assert {s["compose_name"]: s["action"] for s in dry_update.json()["services"]} == {
            "web": "update",
            "cache": "unchanged",
        }
        _deployed(api, _send(api, "PUT", f"/stacks/{stack_id}", changed))
        # Revisions, not container ids: a replica replaced after a failed start (the network
        # race of issue 13, fixed apart) keeps its revision, and a rollback after it adds one.
        web_after = api.get(f"/services/{by_name['web']}").json()
        assert web_after["revision"] > web["revision"]
        cache_after = api.get(f"/services/{by_name['cache']}").json()
        assert cache_after["revision"] == cache_before["revision"]

        # Only app.conf changed: the cache's config, so only the cache rolls.
        reconfigured = _project(bed.registry, "v2", conf="listen 8080;\n")
        web_before = api.get(f"/services/{by_name['web']}").json()
        _deployed(api, _send(api, "PUT", f"/stacks/{stack_id}", reconfigured))
        cache_now = api.get(f"/services/{by_name['cache']}").json()
        assert cache_now["revision"] > cache_after["revision"]
        assert api.get(f"/services/{by_name['web']}").json()["revision"] == web_before["revision"]
        assert _read(api, services, by_name["cache"], "/etc/app.conf") == "listen 8080;\n"

        strict = _send(api, "PUT", f"/stacks/{stack_id}", changed, strict="true")
        assert strict.status_code == 422, strict.text
        assert "'NOT_SET_ANYWHERE' is not set" in strict.json()["detail"]

        # The stack's own secrets go with it.
        assert any(s["name"].startswith(f"{name}.") for s in api.get("/secrets").json()["items"])
        removal = api.delete(f"/stacks/{stack_id}", params={"volumes": "true"})
        stack_id = None
        assert api.wait_operation(removal.json()["operation"]["id"], timeout=120)["status"] == (
            "succeeded"
        )
        assert not [s for s in api.get("/secrets").json()["items"] if name in s["name"]]
    finally:
        if stack_id is not None:
            removal = api.delete(f"/stacks/{stack_id}", params={"volumes": "true"})
            api.wait_operation(removal.json()["operation"]["id"], timeout=120)
        for engine in services.engines.values():
            engine.close()

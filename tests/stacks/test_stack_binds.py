"""Relative bind mounts of a project on a real engine: a config file mounted read-only and a
folder, shipped in volumes named by their content; a PUT that changes only the file rolls only
the service that mounts it; the volumes go with the stack; a source outside the project is a
422 at its key."""

from __future__ import annotations

import uuid
from datetime import timedelta

import docker.types
from sqlalchemy import delete, select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, new_id, utcnow
from app.images.models import Blob
from app.runtime import Housekeeping
from tests.support import Api, BothHosts, context_tar, wait_for
from tests.support import deployed as _deployed
from tests.support import send_project as _send
from tests.testbed import Testbed

COMPOSE = """
services:
  web:
    image: {image}
    command: ["sleep", "3600"]
    volumes:
      - ./conf/site.conf:/etc/site.conf:ro
      - ./html:/www
  static:
    image: {image}
    command: ["sleep", "3600"]
    volumes:
      - type: bind
        source: ./html
        target: /srv/www
        read_only: true
    depends_on: [web]
"""


def _project(image: str, *, conf: str, compose: str = COMPOSE) -> bytes:
    return context_tar(
        {
            "compose.yaml": compose.format(image=image).encode(),
            "conf/site.conf": conf.encode(),
            "html/index.html": b"<h1>hello</h1>\n",
            "html/css/site.css": b"body {}\n",
        },
        gzip=True,
    )


def _exec(api: Api, services: BothHosts, service_id: str, command: list[str]) -> tuple[int, str]:
    """A command's exit code and output in the service's running replica of its revision."""
    engine = services.engines["h1"]

    def run() -> tuple[int, str] | None:
        service = api.get(f"/services/{service_id}").json()
        for task in service["tasks"]:
            if task["state"] != "running" or task["revision"] != service["revision"]:
                continue
            found = engine.containers.list(
                filters={"label": f"berth.container={task['container_id']}"}
            )
            if found:
                code, output = found[0].exec_run(command)
                assert code is not None and isinstance(output, bytes)
                return code, output.decode()
        return None

    result: tuple[int, str] = wait_for(run, timeout=60, what=f"a running replica of {service_id}")
    return result


def test_a_projects_file_and_folder_are_mounted_and_a_changed_file_rolls_its_service(
    api: Api, bed: Testbed
) -> None:
    services = BothHosts(api, bed)
    engine = services.engines["h1"]
    name = f"binds-{uuid.uuid4().hex[:4]}"
    image = f"{bed.registry}/berth-test/busybox:latest"
    host = services.hosts["h1"]
    stack_id = None
    try:
        first = _project(image, conf="listen 80;\n")
        dry = _send(api, "POST", "/stacks?dry_run=true", first, name=name, host_id=host)
        assert dry.status_code == 200, dry.text
        planned = [v for v in dry.json()["volumes"] if v.startswith(f"{name}_")]
        assert sorted(v.split("_")[1] for v in planned) == ["file", "folder"]
        assert not engine.volumes.list(filters={"name": name})

        created = _send(api, "POST", "/stacks", first, name=name, host_id=host)
        stack_id = _deployed(api, created)["stack"]["id"]
        ids = {
            s["compose_name"]: s["service_id"]
            for s in api.get(f"/stacks/{stack_id}").json()["service_details"]
        }
        web, static = ids["web"], ids["static"]
        assert _exec(api, services, web, ["cat", "/etc/site.conf"]) == (0, "listen 80;\n")
        assert _exec(api, services, web, ["cat", "/www/css/site.css"]) == (0, "body {}\n")
        assert _exec(api, services, static, ["cat", "/srv/www/index.html"]) == (
            0,
            "<h1>hello</h1>\n",
        )
        # `:ro` holds for the file, as for the folder; the folder without it is writable.
        code, _ = _exec(api, services, web, ["sh", "-c", "echo x > /etc/site.conf"])
        assert code != 0
        code, _ = _exec(api, services, static, ["touch", "/srv/www/new"])
        assert code != 0
        assert _exec(api, services, web, ["touch", "/www/new"])[0] == 0
        volumes = engine.volumes.list(filters={"name": name})
        assert sorted(v.name for v in volumes) == sorted(planned)
        assert all(v.attrs["Labels"]["berth.managed"] == "true" for v in volumes)
        assert not engine.containers.list(all=True, filters={"label": "berth.fill"})

        web_before = api.get(f"/services/{web}").json()
        static_before = api.get(f"/services/{static}").json()
        changed = _project(image, conf="listen 8080;\n")
        dry_update = _send(api, "PUT", f"/stacks/{stack_id}?dry_run=true", changed)
        assert {s["compose_name"]: s["action"] for s in dry_update.json()["services"]} == {
            "web": "update",
            "static": "unchanged",
        }
        _deployed(api, _send(api, "PUT", f"/stacks/{stack_id}", changed))
        assert api.get(f"/services/{web}").json()["revision"] > web_before["revision"]
        assert api.get(f"/services/{static}").json()["revision"] == static_before["revision"]
        assert _exec(api, services, web, ["cat", "/etc/site.conf"]) == (0, "listen 8080;\n")
        # Both generations' file volumes stay (a rollback mounts the old one) until the delete.
        assert len(engine.volumes.list(filters={"name": f"{name}_file_"})) == 2

        removal = api.delete(f"/stacks/{stack_id}")
        stack_id = None
        assert api.wait_operation(removal.json()["operation"]["id"], timeout=120)["status"] == (
            "succeeded"
        )
        assert not engine.volumes.list(filters={"name": name})
    finally:
        if stack_id is not None:
            response = api.delete(f"/stacks/{stack_id}")
            if response.status_code == 202:
                api.wait_operation(response.json()["operation"]["id"], timeout=120)


def test_a_bind_source_outside_the_project_is_refused_at_its_key(api: Api, bed: Testbed) -> None:
    outside = COMPOSE.replace("./html:/www", "../outside:/www")
    image = f"{bed.registry}/berth-test/busybox:latest"

    response = _send(
        api, "POST", "/stacks", _project(image, conf="x\n", compose=outside), name="binds-out"
    )

    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors == [
        {
            "loc": "compose.services.web.volumes[1]",
            "msg": "'../outside' is outside the project",
        }
    ]


def test_a_filler_left_by_a_crash_means_the_volume_is_filled_again(api: Api, bed: Testbed) -> None:
    services = BothHosts(api, bed)
    engine = services.engines["h1"]
    name = f"binds-{uuid.uuid4().hex[:4]}"
    image = f"{bed.registry}/berth-test/busybox:latest"
    project = _project(image, conf="refilled\n", compose=COMPOSE.split("  static:")[0])
    host = services.hosts["h1"]
    stack_id = None
    try:
        dry = _send(api, "POST", "/stacks?dry_run=true", project, name=name, host_id=host)
        volume = next(v for v in dry.json()["volumes"] if v.startswith(f"{name}_file_"))
        # A worker that died after creating the filler (which made the volume, empty).
        engine.containers.create(
            image,
            name=f"{volume}.fill",
            labels={"berth.managed": "true", "berth.fill": volume},
            mounts=[docker.types.Mount("/berth-fill", volume, labels={"berth.managed": "true"})],
        )

        created = _send(api, "POST", "/stacks", project, name=name, host_id=host)
        stack_id = _deployed(api, created)["stack"]["id"]
        web = api.get(f"/stacks/{stack_id}").json()["service_details"][0]["service_id"]
        assert _exec(api, services, web, ["cat", "/etc/site.conf"]) == (0, "refilled\n")
        assert not engine.containers.list(all=True, filters={"label": f"berth.fill={volume}"})
    finally:
        for leftover in engine.containers.list(all=True, filters={"name": name}):
            leftover.remove(force=True)
        if stack_id is not None:
            response = api.delete(f"/stacks/{stack_id}")
            if response.status_code == 202:
                api.wait_operation(response.json()["operation"]["id"], timeout=120)
        for left in engine.volumes.list(filters={"name": name}):
            left.remove(force=True)


def test_no_container_mounts_a_project_volume_by_its_name(api: Api, bed: Testbed) -> None:
    """The file bind of a project volume skips BERTH_ALLOWED_BIND_PATHS because no one else
    can write that volume: a container that mounted it whole could put a link there."""
    response = api.post(
        "/containers",
        json={
            "name": f"binds-{uuid.uuid4().hex[:4]}",
            "image": f"{bed.registry}/berth-test/busybox:latest",
            "volumes": [{"source": "shop_file_abababababababab", "target": "/x"}],
        },
    )

    assert response.status_code == 422, response.text
    assert "a volume Berth makes for a stack's project files" in response.text


def test_a_stacks_project_files_outlive_the_uploads_that_expire(
    settings: Settings, db: Database
) -> None:
    """A replica made a month later (its volume gone from the host) fills it again."""
    old = utcnow() - timedelta(days=30)
    kept, expired = new_id(), new_id()
    with db.session() as session:
        for blob_id, stack_id in ((kept, new_id()), (expired, None)):
            session.add(
                Blob(
                    id=blob_id,
                    sha256="0" * 64,
                    size_bytes=1,
                    data=b"x",
                    stack_id=stack_id,
                    created_at=old,
                )
            )
    try:
        Housekeeping(AppContext(settings, db)).run_once()
        with db.session(write=False) as session:
            left = set(
                session.execute(select(Blob.id).where(Blob.id.in_([kept, expired]))).scalars()
            )
        assert left == {kept}
    finally:
        with db.session() as session:
            session.execute(delete(Blob).where(Blob.id.in_([kept, expired])))

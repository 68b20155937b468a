"""Images and registries against the testbed's real engines and registries."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from app.core.config import Settings
from app.core.db import Database
from app.engine.docker_engine import DockerEngine
from app.images.inventory import sync_host
from app.images.models import Blob, Image
from app.main import create_app
from app.operations.models import Operation, OperationLog
from app.registries.models import Registry
from app.security.roles import Role
from tests.support import (
    BUSYBOX,
    DOCKERFILE,
    Api,
    Images,
    PausedAfterListing,
    busybox_context,
    context_tar,
    inventory,
    wait_for,
)
from tests.testbed import Testbed


@pytest.fixture
def images(api: Api, bed: Testbed) -> Iterator[Images]:
    helper = Images(api, bed)
    yield helper
    helper.cleanup()


def test_wrong_password_fails_clearly_and_is_never_shown(
    images: Images,
    api: Api,
    bed: Testbed,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{uuid.uuid4().hex}"
    h1 = images.host()
    reference = images.reference(bed.auth_registry)
    assert images.build([reference])["status"] == "succeeded"
    registry_id = images.registry(wrong)

    responses = [api.get(f"/registries/{registry_id}"), api.get("/registries")]
    check = api.post(f"/registries/{registry_id}/check")
    responses.append(check)
    assert check.status_code == 200
    assert check.json()["ok"] is False
    assert "authentication failed" in check.json()["detail"]

    pushed = api.post("/images/push", json={"host_id": h1, "reference": reference})
    responses.append(pushed)
    done = api.wait_operation(pushed.json()["operation"]["id"], timeout=60)
    assert done["status"] == "failed"
    assert "authentication failed for registry" in done["error"]
    assert done["attempts"] == 1, "a wrong password is not worth retrying"
    responses.append(api.get(f"/operations/{done['id']}"))
    responses.append(api.get(f"/operations/{done['id']}/logs"))

    for response in responses:
        assert wrong not in response.text
    assert wrong not in caplog.text
    captured = capfd.readouterr()
    assert wrong not in captured.out + captured.err
    with db.session(write=False) as session:
        stored = session.execute(select(Registry.password_encrypted)).scalars().all()
        logs = session.execute(select(OperationLog.message)).scalars().all()
        operations = session.execute(select(Operation.error, Operation.params)).all()
    assert stored and all(value and wrong not in value for value in stored)
    assert all(wrong not in line for line in logs)
    assert all(wrong not in f"{error}{params}" for error, params in operations)

    fixed = api.patch(f"/registries/{registry_id}", json={"password": bed.registry_password})
    assert fixed.status_code == 200 and "password" not in fixed.json()
    assert api.post(f"/registries/{registry_id}/check").json()["ok"] is True


def test_missing_image_fails_with_not_found(images: Images, api: Api, bed: Testbed) -> None:
    h1 = images.host()
    missing = f"{bed.registry}/berth-test/nothing-{uuid.uuid4().hex[:8]}:1"
    response = api.post("/images/pull", json={"reference": missing, "host_id": h1})
    done = api.wait_operation(response.json()["operation"]["id"], timeout=60)
    assert done["status"] == "failed"
    assert "not found" in done["error"]
    assert done["attempts"] == 1


def test_pull_to_two_hosts_at_once(images: Images, api: Api, bed: Testbed) -> None:
    h1, h2 = images.host("h1"), images.host("h2")
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    pushed = api.post("/images/push", json={"host_id": h1, "reference": reference})
    assert api.wait_operation(pushed.json()["operation"]["id"], timeout=60)["status"] == "succeeded"

    response = api.post("/images/pull", json={"reference": reference, "host_ids": [h1, h2]})
    assert response.status_code == 202
    operations = response.json()["operations"]
    assert sorted(op["host_id"] for op in operations) == sorted([h1, h2])
    for operation in operations:
        assert api.wait_operation(operation["id"], timeout=60)["status"] == "succeeded"
    assert len(inventory(api, reference, h2)) == 1
    assert (
        images.engines["h2"].images.get(reference).id
        == images.engines["h1"].images.get(reference).id
    )


def test_failing_build_names_the_step(images: Images, api: Api, bed: Testbed) -> None:
    images.host()
    broken = DOCKERFILE.replace('CMD ["/bin/sh"]', 'RUN ["/bin/sh", "-c", "exit 7"]')
    done = images.build([images.reference(bed.registry)], context=busybox_context(broken))
    assert done["status"] == "failed"
    assert "Step 4/" in done["error"] and "RUN" in done["error"]
    assert "7" in done["error"]


def test_build_args_and_custom_dockerfile_path(images: Images, api: Api, bed: Testbed) -> None:
    h1 = images.host()
    dockerfile = DOCKERFILE + "ARG GREETING=none\nLABEL greeting=$GREETING\n"
    context = context_tar(
        {"build/Dockerfile.prod": dockerfile.encode(), "busybox": BUSYBOX.read_bytes()}
    )
    reference = images.reference(bed.registry)
    done = images.build(
        [reference],
        context=context,
        dockerfile="build/Dockerfile.prod",
        build_args=json.dumps({"GREETING": "hi"}),
    )
    assert done["status"] == "succeeded", done
    inspected = images.engines["h1"].api.inspect_image(reference)  # type: ignore[no-untyped-call]
    labels = inspected["Config"]["Labels"]
    assert labels["greeting"] == "hi"
    assert labels["berth.operation"] == done["id"]
    assert inventory(api, reference, h1)


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        (context_tar({"Dockerfile": b"FROM scratch\n", "../evil": b"x"}), ".."),
        (context_tar({"Dockerfile": b"FROM scratch\n", "/etc/cron.d/evil": b"x"}), "absolute"),
        (b"this is not a tar archive at all" * 100, "tar"),
        (context_tar({"README": b"no dockerfile here"}), "Dockerfile"),
    ],
)
def test_hostile_contexts_are_refused_and_nothing_is_written(
    images: Images, api: Api, db: Database, context: bytes, fragment: str
) -> None:
    response = api.post(
        "/images/build",
        files={"context": ("context.tar", context, "application/x-tar")},
        data={"host_id": images.host(), "tags[]": ["x/y:1"]},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == "body.context"
    with db.session(write=False) as session:
        assert session.execute(select(func.count()).select_from(Blob)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Operation)).scalar_one() == 0


def test_oversized_context_is_413(
    settings_factory: Callable[..., Settings], db: Database, bed: Testbed
) -> None:
    with TestClient(create_app(settings_factory(max_build_context_bytes=64 * 1024))) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()
        response = api.post(
            "/images/build",
            files={"context": ("context.tar", busybox_context(gzip=False), "application/x-tar")},
            data={"host_id": host["id"]},
        )
        assert response.status_code == 413
        with db.session(write=False) as session:
            assert session.execute(select(func.count()).select_from(Blob)).scalar_one() == 0


def test_registry_allow_list(
    settings_factory: Callable[..., Settings], db: Database, bed: Testbed
) -> None:
    settings = settings_factory(allowed_registries=bed.auth_registry)
    with TestClient(create_app(settings)) as client:
        api = Api(client, db)
        host = api.post("/hosts", json={"name": "h1", "url": bed.h1_url}).json()["id"]
        refused = api.post("/images/pull", json={"reference": "busybox:1.36", "host_id": host})
        assert refused.status_code == 422
        assert "BERTH_ALLOWED_REGISTRIES" in refused.json()["detail"]
        assert "docker.io" in refused.json()["detail"]
        push = api.post(
            "/images/push", json={"host_id": host, "reference": f"{bed.registry}/a/b:1"}
        )
        assert push.status_code == 422
        from_outside = busybox_context(DOCKERFILE.replace("FROM scratch", "FROM alpine:3.20"))
        build = api.post(
            "/images/build",
            files={"context": ("c.tar.gz", from_outside, "application/gzip")},
            data={"host_id": host},
        )
        assert build.status_code == 422
        assert build.json()["errors"][0]["loc"] == "body.dockerfile"
        allowed = api.post(
            "/images/pull", json={"reference": f"{bed.auth_registry}/a/b:1", "host_id": host}
        )
        assert allowed.status_code == 202
        api.post(f"/operations/{allowed.json()['operation']['id']}/cancel")


def test_delete_refuses_an_image_in_use_unless_forced(
    images: Images, api: Api, bed: Testbed
) -> None:
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    engine = images.engines["h1"]
    container = engine.containers.create(reference, ["true"], labels={"berth.test": "images"})
    try:
        image = wait_for(
            lambda: next((i for i in inventory(api, reference, h1) if i["containers"] == 1), None),
            timeout=15,
            what="the inventory to see the container",
        )
        refused = api.delete(f"/images/{image['id']}")
        assert refused.status_code == 409
        assert "container" in refused.json()["detail"]
        forced = api.delete(f"/images/{image['id']}", params={"force": "true"})
        assert forced.status_code == 202
        assert api.wait_operation(forced.json()["operation"]["id"])["status"] == "succeeded"
    finally:
        container.remove(force=True)


def test_inventory_follows_changes_made_behind_berths_back(
    images: Images, api: Api, bed: Testbed
) -> None:
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    alias = images.reference(bed.registry, tag="alias")
    images.engines["h1"].images.get(reference).tag(alias)
    wait_for(lambda: inventory(api, alias, h1), timeout=15, what="the new tag to show")
    images.engines["h1"].images.remove(alias)
    images.engines["h1"].images.remove(reference)
    wait_for(lambda: not inventory(api, reference, h1), timeout=15, what="the image to go")


def test_concurrent_syncs_of_one_host_agree(images: Images, db: Database, bed: Testbed) -> None:
    """An image operation's refresh and the inventory loop sync one host at the same moment."""
    h1 = images.host()
    with db.session() as session:
        session.execute(delete(Image).where(Image.host_id == h1))
    on_engine = {image.id for image in images.engines["h1"].images.list(all=False)}
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def sync() -> None:
        engine = DockerEngine(bed.h1_url)
        try:
            start.wait()
            sync_host(db, engine, h1)
        except BaseException as error:  # a thread's failure is reported by the assertion below
            failures.append(error)
        finally:
            engine.close()

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with db.session(write=False) as session:
        held = set(session.execute(select(Image.docker_id).where(Image.host_id == h1)).scalars())
    assert held == on_engine


def test_an_older_listing_never_undoes_a_newer_one(
    images: Images, db: Database, bed: Testbed
) -> None:
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    slow = PausedAfterListing(bed.h1_url)
    stale = threading.Thread(target=sync_host, args=(db, slow, h1))
    stale.start()
    try:
        assert slow.listed.wait(30)
        alias = images.reference(bed.registry, tag="alias")
        images.engines["h1"].images.get(reference).tag(alias)
        fresh = DockerEngine(bed.h1_url)
        try:
            sync_host(db, fresh, h1)
        finally:
            fresh.close()
    finally:
        slow.go_on.set()
        stale.join()
        slow.close()
    with db.session(write=False) as session:
        tags = {
            tag
            for row in session.execute(select(Image.repo_tags).where(Image.host_id == h1))
            for tag in row.repo_tags
        }
    assert alias in tags


def test_tag_and_validation(images: Images, api: Api, bed: Testbed) -> None:
    h1 = images.host()
    reference = images.reference(bed.registry)
    assert images.build([reference])["status"] == "succeeded"
    target = images.reference(bed.registry, tag="tagged")
    response = api.post("/images/tag", json={"host_id": h1, "source": reference, "target": target})
    assert api.wait_operation(response.json()["operation"]["id"])["status"] == "succeeded"
    assert inventory(api, target, h1)
    bad = api.post("/images/pull", json={"reference": "UPPER/Case:1", "host_id": h1})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == "body.reference"
    neither = api.post("/images/pull", json={"reference": "busybox"})
    assert neither.status_code == 422
    unknown_host = api.post("/images/pull", json={"reference": "busybox", "host_id": "nope"})
    assert unknown_host.status_code == 422
    assert (
        api.post(
            "/images/pull", role=Role.viewer, json={"reference": "busybox", "host_id": h1}
        ).status_code
        == 403
    )
    bad_url = api.post("/registries", json={"name": "r", "url": "https://user:pw@reg.example:5000"})
    assert bad_url.status_code == 422 and "credentials" in bad_url.text

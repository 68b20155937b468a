"""The Python client (`app.client`) against a live server (uvicorn, as `berth serve` runs it) and
the testbed's engine h1: what an integration does with it, each behaviour checked on the
engine or the server rather than on the client's word."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import aclosing, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from app.client import (
    AsyncBerth,
    Berth,
    ConnectionFailed,
    NotFound,
    OperationFailed,
    RateLimited,
    Retry,
    Unauthorized,
    pack_directory,
)
from app.client.models import Event, Operation
from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, free_port, served, wait_for
from tests.testbed import Testbed, remove_containers

SLEEPER = ["sh", "-c", "echo hello-from-client; trap 'exit 0' TERM; sleep 300 & wait"]


class Counting(httpx.HTTPTransport):
    """A real transport that counts the requests it sends, by method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


class LosesFirstAnswer(Counting):
    """Delivers the first POST to the server, then loses its answer, as a cut connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the request went out")
        return response


@dataclass(frozen=True)
class Live:
    url: str
    host_id: str
    engine: docker.DockerClient


@pytest.fixture(scope="module")
def live(module_settings: Settings, module_db: Database, bed: Testbed) -> Iterator[Live]:
    engine = docker.DockerClient(base_url=bed.h1_url, timeout=60)
    with served(create_app(module_settings)) as url, Berth(url, BOOTSTRAP_TOKEN) as berth:
        host = berth.hosts.create("h1", **bed.host("h1"))
        wait_for(lambda: berth.hosts.get(host.id).status == "ready", timeout=60, what="h1")
        try:
            yield Live(url=url, host_id=host.id, engine=engine)
        finally:
            # Only what this module's server made (the engine may be shared with other runs).
            for container in berth.containers.list():
                if container.managed:
                    remove_containers(engine, f"berth.container={container.id}")
            engine.close()


@pytest.fixture
def berth(live: Live) -> Iterator[Berth]:
    with Berth(live.url, BOOTSTRAP_TOKEN) as client:
        yield client


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_container_runs_and_is_found_by_name(berth: Berth, live: Live, bed: Testbed) -> None:
    accepted = berth.containers.create(
        bed.image, name=name("cl"), host_id=live.host_id, command=SLEEPER
    )
    done = berth.operations.wait(accepted, timeout=60)
    assert done.succeeded
    container = berth.containers.find(accepted.container.name)
    assert container.id == accepted.container.id
    assert container.state == "running"
    [running] = live.engine.containers.list(filters={"label": f"berth.container={container.id}"})
    assert running.status == "running"
    logs = wait_for(
        lambda: [line for line in berth.containers.logs(container.id, tail=10) if line],
        timeout=15,
        what="the container's first line",
    )
    assert logs == ["hello-from-client"]
    # Followed, the stream stays open for what comes; closing the iterator ends it.
    followed = berth.containers.logs(container.id, tail=1, follow=True)
    with closing(followed):
        assert next(followed) == "hello-from-client"
    berth.wait(berth.containers.remove(container.id), timeout=60)
    assert not live.engine.containers.list(all=True, filters={"id": str(running.id)})


def test_a_service_is_scaled(berth: Berth, live: Live, bed: Testbed) -> None:
    spec: dict[str, object] = {
        "image": bed.image,
        "command": SLEEPER,
        "replicas": 1,
    }
    created = berth.services.create(name("svc"), spec)
    berth.wait(created, timeout=60)
    try:
        berth.wait(berth.services.scale(created.service.id, 3), timeout=90)

        def three_running() -> bool:
            return berth.services.get(created.service.id).replicas.running == 3

        wait_for(three_running, timeout=60, what="three replicas")
        on_engine = live.engine.containers.list(
            filters={"label": f"berth.service={created.service.id}"}
        )
        assert len(on_engine) == 3
        assert berth.services.find(created.service.name).id == created.service.id
    finally:
        berth.wait(berth.services.delete(created.service.id), timeout=90)


def test_a_stack_is_deployed_with_its_build_context(
    berth: Berth, live: Live, bed: Testbed, tmp_path: Path
) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(
        f"FROM {bed.image}\nRUN echo built-by-client > /built\nCMD sleep 300\n"
    )
    # One service: two of a stack's services starting at once meet a known race over its
    # network (another change fixes it); the client's part is the same for one or two.
    compose = "services:\n  web:\n    build: ./web\n    environment:\n      GREETING: ${GREETING}\n"
    stack_name = name("st")
    # A build context makes the request multipart/form-data; the variables go as JSON text.
    accepted = berth.stacks.create(
        stack_name,
        compose,
        host_id=live.host_id,
        variables={"GREETING": "hello"},
        contexts={"web": pack_directory(tmp_path / "web")},
    )
    try:
        berth.wait(accepted, timeout=180)
        stack = berth.stacks.find(stack_name)
        assert stack.status == "running"
        web = next(s for s in stack.service_details if s.compose_name == "web")

        def web_running() -> list[Any]:
            label = f"berth.service={web.service_id}"
            return live.engine.containers.list(filters={"label": label, "status": "running"})

        [container] = wait_for(web_running, timeout=60, what="the web replica running")
        assert container.exec_run(["cat", "/built"]).output == b"built-by-client\n"
        assert "GREETING=hello" in container.attrs["Config"]["Env"]
    finally:
        berth.wait(berth.stacks.delete(accepted.stack.id, volumes=True), timeout=120)
        for image in berth.images.list(host_id=live.host_id):
            if any(stack_name in tag for tag in image.repo_tags):
                # The inventory may have renewed the row meanwhile: then it is gone already.
                with suppress(NotFound):
                    berth.wait(berth.images.remove(image.id, force=True), timeout=60, check=False)


def test_a_listing_is_read_across_pages(live: Live) -> None:
    counting = Counting()
    with Berth(live.url, BOOTSTRAP_TOKEN, transport=counting) as berth:
        made = [berth.secrets.create(name("pg"), "value").id for _ in range(5)]
        try:
            listed = [s.id for s in berth.secrets.list(page_size=2)]
            assert set(made) <= set(listed)
            assert len(listed) == len(set(listed))
            pages = [s for s in counting.sent if s == "GET /api/v1/secrets"]
            assert len(pages) == -(-len(listed) // 2)
        finally:
            for secret_id in made:
                berth.secrets.delete(secret_id)


def test_an_operation_is_awaited_with_the_long_poll(live: Live, bed: Testbed) -> None:
    counting = Counting()
    with Berth(live.url, BOOTSTRAP_TOKEN, transport=counting) as berth:
        seen: list[Operation] = []
        accepted = berth.containers.create(
            bed.image, host_id=live.host_id, command=SLEEPER, name=name("wt")
        )
        done = berth.operations.wait(accepted.operation.id, timeout=60, on_progress=seen.append)
        assert done.status == "succeeded"
        assert seen[-1].status == "succeeded"
        # The server holds each poll until something happens or a second passes: a wait of a
        # few seconds is a few requests, not a busy loop.
        polls = [s for s in counting.sent if s.startswith("GET /api/v1/operations/")]
        assert 1 <= len(polls) <= 65
        berth.wait(berth.containers.remove(accepted.container.id), timeout=60)

        broken = berth.containers.create(
            "berth-test/no-such-image:never", host_id=live.host_id, name=name("bad")
        )
        with pytest.raises(OperationFailed) as failed:
            berth.wait(broken, timeout=60)
        assert failed.value.operation.status == "failed"
        assert berth.wait(broken, check=False).status == "failed"
        berth.wait(berth.containers.remove(broken.container.id), timeout=60, check=False)


def test_a_retried_post_is_done_once(live: Live, bed: Testbed) -> None:
    losing = LosesFirstAnswer()
    retry = Retry(backoff=0.05)
    with Berth(live.url, BOOTSTRAP_TOKEN, transport=losing, retry=retry) as berth:
        container_name = name("idem")
        accepted = berth.containers.create(bed.image, name=container_name, host_id=live.host_id)
        # The answer to the first try was lost; the retry carried the same key, so the server
        # answered it with the first try's result instead of creating a second container.
        assert len(losing.keys) == 2 and losing.keys[0] == losing.keys[1]
        same = [c for c in berth.containers.list() if c.name == container_name]
        assert [c.id for c in same] == [accepted.container.id]
        berth.wait(accepted, timeout=60)

        key = str(uuid.uuid4())
        first = berth.containers.stop(accepted.container.id, idempotency_key=key)
        again = berth.containers.stop(accepted.container.id, idempotency_key=key)
        assert again.operation.id == first.operation.id
        berth.wait(first, timeout=60)
        berth.wait(berth.containers.remove(accepted.container.id), timeout=60)


def test_a_missing_object_raises_not_found_with_the_problem(berth: Berth) -> None:
    with pytest.raises(NotFound) as missing:
        berth.containers.get("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert missing.value.status == 404
    assert missing.value.problem["status"] == 404
    assert missing.value.problem["type"].endswith("/not-found")
    assert "01HZZZZZZZZZZZZZZZZZZZZZZZ" in missing.value.detail
    with pytest.raises(NotFound):
        berth.services.find("no-such-service")


def test_a_wrong_token_and_a_dead_server_are_clear_errors(live: Live) -> None:
    with Berth(live.url, "berth_wrong_token") as wrong, pytest.raises(Unauthorized) as refused:
        wrong.me()
    assert "berth_wrong_token" not in str(refused.value)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with (
        Berth(nowhere, BOOTSTRAP_TOKEN, retry=Retry(attempts=1, backoff=0.01)) as dead,
        pytest.raises(ConnectionFailed, match=r"^cannot reach Berth at http://127\.0\.0\.1:"),
    ):
        dead.me()


def test_a_429_is_retried_after_its_retry_after(
    module_settings: Settings, module_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # The guessing brake is a real limit: two wrong tokens from this address, and every token
    # (the right one too) is refused with 429 and Retry-After until the window ends.
    settings = module_settings.model_copy(
        update={"auth_failure_limit": 2, "auth_failure_window_seconds": 2.0}
    )
    with served(create_app(settings)) as url:
        with Berth(url, "berth_wrong_token") as wrong:
            for _ in range(2):
                with pytest.raises(Unauthorized):
                    wrong.me()
        with Berth(url, BOOTSTRAP_TOKEN, retry=Retry(attempts=0)) as impatient:
            with pytest.raises(RateLimited) as limited:
                impatient.me()
            assert limited.value.retry_after is not None and limited.value.retry_after >= 1
        counting = Counting()
        caplog.set_level(logging.DEBUG)
        with Berth(url, BOOTSTRAP_TOKEN, transport=counting) as patient:
            assert patient.me().role == "admin"
        assert len(counting.sent) >= 2
        assert "retrying GET /api/v1/me" in caplog.text
        # Never a token in a log line or a repr, the retries' included.
        assert BOOTSTRAP_TOKEN not in caplog.text
        assert BOOTSTRAP_TOKEN not in repr(patient)


def test_the_event_stream_resumes_after_the_server_closes_it(
    module_settings: Settings, module_db: Database, live: Live
) -> None:
    port = free_port()
    events: queue.Queue[Event | BaseException] = queue.Queue()

    def consume(url: str) -> None:
        try:
            with Berth(url, BOOTSTRAP_TOKEN) as berth:
                for event in berth.events.stream(resource_type="secret"):
                    events.put(event)
        except BaseException as exc:  # handed to the test, which fails with it
            events.put(exc)

    def created(secret_name: str) -> Event:
        while True:
            item = events.get(timeout=60)
            if isinstance(item, BaseException):
                raise item
            if item.type == "secret.created" and item.data and item.data["name"] == secret_name:
                return item

    first, second = name("ev1"), name("ev2")
    with Berth(live.url, BOOTSTRAP_TOKEN) as other:
        with served(create_app(module_settings), port=port) as url:
            threading.Thread(target=consume, args=(url,), daemon=True).start()

            def listening() -> bool:
                other.secrets.delete(other.secrets.create(name("probe"), "v").id)
                return not events.empty()

            wait_for(listening, timeout=30, interval=0.5, what="the stream to be read")
            other.secrets.create(first, "v")
            one = created(first)
        # The server is gone and its stream with it; the second event happens while the client
        # cannot reach it, through another server. Once a server answers at the address again,
        # the client asks for what came after the last event it gave: the second, once.
        other.secrets.create(second, "v")
        with served(create_app(module_settings), port=port):
            two = created(second)
    assert two.cursor > one.cursor
    with Berth(live.url, BOOTSTRAP_TOKEN) as berth:
        for secret in berth.secrets.list():
            berth.secrets.delete(secret.id)


def test_the_async_client(live: Live, bed: Testbed) -> None:
    async def scenario() -> None:
        async with AsyncBerth(live.url, BOOTSTRAP_TOKEN) as berth:
            accepted = await berth.containers.create(
                bed.image, name=name("as"), host_id=live.host_id, command=SLEEPER
            )
            assert (await berth.wait(accepted, timeout=60)).succeeded
            assert (await berth.containers.get(accepted.container.id)).state == "running"
            found = await berth.containers.find(accepted.container.name)
            assert found.id == accepted.container.id
            ids = [c.id async for c in berth.containers.list(page_size=1)]
            assert accepted.container.id in ids
            stream = berth.events.stream(since=0, resource_id=accepted.container.id)
            async with aclosing(stream):
                first = await anext(stream)
            assert first.resource_id == accepted.container.id
            with pytest.raises(NotFound):
                await berth.services.get("01HZZZZZZZZZZZZZZZZZZZZZZZ")
            await berth.wait(await berth.containers.remove(accepted.container.id), timeout=60)

    asyncio.run(scenario())

"""The client's pure logic, without a server: the event-stream decoder, the retry rules, the
login file, the models' tolerance of a newer server. Where a fake answers (httpx's
MockTransport) it stands for answers a live server gives only by accident (a 503 twice)."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from app.client import (
    AsyncBerth,
    Berth,
    ConfigurationError,
    ConnectionFailed,
    Invalid,
    Retry,
    load_login,
    pack_directory,
    save_login,
)
from app.client.config import resolve
from app.client.errors import parse_retry_after
from app.client.models import Container, TokenCreated
from app.client.wire import EventDecoder

TOKEN = "berth_unit_token_secret"


def test_events_are_decoded_message_by_message() -> None:
    decoder = EventDecoder()
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "event: secret.created",
        'data: {"cursor": "7", "type": "secret.created", "resource_type": "secret",',
        'data: "resource_id": "s1", "data": {"name": "a"}, "at": "2026-01-01T00:00:00Z"}',
        "",
    ]
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    assert [(e.cursor, e.type, e.resource_id) for e in events] == [(7, "secret.created", "s1")]
    assert decoder.retry == 2.0
    # A connection cut in the middle of a message: the next connection sends it whole.
    decoder.feed('data: {"cursor": "8", "type": "x.cre')
    decoder.discard_partial()
    assert decoder.feed("") is None


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(soon) or 0) <= 31
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None


def test_only_a_request_that_is_safe_to_repeat_is_retried_after_a_cut() -> None:
    retry = Retry(attempts=2, backoff=0.5)
    cut = httpx.ReadError("cut")
    get = httpx.Request("GET", "http://berth/api/v1/hosts")
    keyed = httpx.Request("POST", "http://berth/api/v1/hosts", headers={"Idempotency-Key": "k"})
    bare = httpx.Request("PATCH", "http://berth/api/v1/hosts/h")
    assert retry.after_error(get, cut, 0) == 0.5
    assert retry.after_error(keyed, cut, 1) == 1.0
    # Refused before it went out: nothing happened, any request may go again.
    assert retry.after_error(bare, httpx.ConnectError("refused"), 0) == 0.5
    with pytest.raises(ConnectionFailed, match="cannot reach Berth at http://berth: cut"):
        retry.after_error(bare, cut, 0)
    with pytest.raises(ConnectionFailed):
        retry.after_error(get, cut, 2)


def test_a_429_or_503_waits_as_told_within_bounds() -> None:
    retry = Retry(attempts=2, backoff=0.25, max_wait=10)

    def answer(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    assert retry.after_answer(answer(429, **{"Retry-After": "2"}), 0) == 2.0
    assert retry.after_answer(answer(503), 1) == 0.5
    assert retry.after_answer(answer(429, **{"Retry-After": "3600"}), 0) is None
    assert retry.after_answer(answer(503), 2) is None
    assert retry.after_answer(answer(404), 0) is None


def flaky_server(statuses: list[int], keys: list[str]) -> httpx.MockTransport:
    """Answers each POST with the next status (0 Retry-After), then 202."""

    def handle(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if statuses:
            return httpx.Response(statuses.pop(0), headers={"Retry-After": "0"})
        return httpx.Response(
            422,
            json={"type": "x/validation-error", "status": 422, "detail": "bad", "errors": []},
        )

    return httpx.MockTransport(handle)


def test_every_retry_of_a_post_carries_its_first_key() -> None:
    keys: list[str] = []
    with (
        Berth("http://berth", TOKEN, transport=flaky_server([503, 429], keys)) as berth,
        pytest.raises(Invalid) as invalid,
    ):
        berth.secrets.create("a", "b")
    assert len(keys) == 3 and len(set(keys)) == 1
    assert invalid.value.problem["detail"] == "bad"


def test_the_async_client_retries_alike() -> None:
    keys: list[str] = []

    async def scenario() -> None:
        transport = flaky_server([503], keys)
        async with AsyncBerth("http://berth", TOKEN, transport=transport) as berth:
            with pytest.raises(Invalid):
                await berth.secrets.create("a", "b")

    asyncio.run(scenario())
    assert len(keys) == 2 and len(set(keys)) == 1


def test_url_and_token_come_from_arguments_then_environment_then_login_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("BERTH_URL", raising=False)
    monkeypatch.delenv("BERTH_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="no Berth server"):
        resolve(None, None)
    path = save_login("http://stored:8000/", "stored-token")
    assert path == tmp_path / "berth" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_login() == {"url": "http://stored:8000/", "token": "stored-token"}
    assert resolve(None, None).token == "stored-token"
    monkeypatch.setenv("BERTH_TOKEN", "env-token")
    assert resolve(None, None).token == "env-token"
    assert resolve("http://stored:8000", "arg-token").token == "arg-token"
    monkeypatch.delenv("BERTH_TOKEN")
    # The stored token belongs to the stored server: it is never sent to another.
    with pytest.raises(ConfigurationError, match="no Berth token"):
        resolve("http://elsewhere:8000", None)
    assert "stored-token" not in repr(resolve(None, None))


def test_a_directory_is_packed_with_relative_names(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "sub" / "file.txt").write_text("x")
    with tarfile.open(fileobj=io.BytesIO(pack_directory(tmp_path))) as archive:
        assert sorted(archive.getnames()) == ["Dockerfile", "sub", "sub/file.txt"]


def test_a_context_leaves_out_what_its_dockerignore_names(tmp_path: Path) -> None:
    for name in (
        "Dockerfile",
        "app.py",
        "README.md",
        "NOTES.md",
        "node_modules/x/index.js",
        "src/a.pyc",
        "src/deep/b.pyc",
        "src/keep.md",
        "tmp1",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text(
        "# dependencies\n/node_modules\n**/*.pyc\n*.md\n!README*.md\ntmp?\nDockerfile\n"
    )
    with tarfile.open(fileobj=io.BytesIO(pack_directory(tmp_path))) as archive:
        names = sorted(archive.getnames())
    # Dockerfile and .dockerignore are sent anyway, as the docker CLI sends them.
    assert names == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "app.py",
        "src",
        "src/deep",
        "src/keep.md",
    ]


def test_models_accept_what_a_newer_server_adds_and_hide_secrets() -> None:
    container = Container.model_validate(
        {
            "id": "c1",
            "name": "web",
            "host_id": "h1",
            "image": "busybox",
            "desired_state": "running",
            "state": "hibernating",  # a state this client does not know
            "gpu_count": 2,  # a field it does not know
        }
    )
    assert container.state == "hibernating"
    assert container.model_extra == {"gpu_count": 2}
    created = TokenCreated(id="t", name="ci", role="operator", token=TOKEN)
    assert TOKEN not in repr(created)
    with Berth("http://berth", TOKEN) as berth:
        assert TOKEN not in repr(berth)


def test_the_client_imports_nothing_of_the_server() -> None:
    # As in an integration's environment: none of the server's dependencies importable.
    server_only = (
        *("fastapi", "starlette", "sqlalchemy", "alembic", "docker", "uvicorn", "orjson"),
        *("pydantic_settings", "cryptography", "yaml", "psycopg", "prometheus_client"),
    )
    code = (
        "import sys\n"
        f"for name in {server_only!r}: sys.modules[name] = None\n"
        "import app.client\n"
        "print(app.client.Berth.__name__, app.client.AsyncBerth.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Berth", "AsyncBerth"]


def test_a_project_deploy_and_its_dry_run_are_sent_as_the_api_takes_them() -> None:
    seen: list[httpx.Request] = []
    plan = {"name": "shop", "host_id": "h1", "services": [], "warnings": ["version: ignored"]}

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, json=plan)

    with Berth("http://berth", TOKEN, transport=httpx.MockTransport(handle)) as berth:
        planned = berth.stacks.plan_create("shop", project=b"tar", file="deploy/compose.yaml")
        assert planned.warnings == ["version: ignored"]
        berth.stacks.plan_update("s1", "services: {}\n", strict=True)
    create, update = seen
    assert (create.method, create.url.path, create.url.params["dry_run"]) == (
        "POST",
        "/api/v1/stacks",
        "true",
    )
    assert create.headers["content-type"].startswith("multipart/form-data")
    for part in (b'name="project"; filename="project.tar.gz"', b'name="file"\r\n\r\ndeploy/'):
        assert part in create.content
    assert (update.method, update.url.path, update.url.params["dry_run"]) == (
        "PUT",
        "/api/v1/stacks/s1",
        "true",
    )
    assert json.loads(update.content) == {"compose": "services: {}\n", "strict": True}

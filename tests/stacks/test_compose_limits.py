"""What a Compose file may cost: aliases, nesting and size are bounded before the document is
built, so a few hundred hostile bytes answer 422 at once; ordinary anchors still work."""

from __future__ import annotations

import textwrap
import time
import tracemalloc
from collections.abc import Callable

import pytest

from app.core.config import Settings
from app.stacks.compose import ComposeError, parse
from tests.support import Api


def _alias_bomb(levels: int) -> str:
    """Nested anchors, nine aliases a level: 9**levels strings from about 50 bytes a level."""
    lines = ["x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, levels)]
    lines.append(f"services:\n  web:\n    image: busybox\n    command: *l{levels - 1}\n")
    return "\n".join(lines)


def _errors(text: str, *, max_bytes: int = 256 * 1024) -> list[dict[str, str]]:
    with pytest.raises(ComposeError) as caught:
        parse(text, project="shop", variables={}, env_files={}, max_bytes=max_bytes)
    return caught.value.errors


def _timed_post(api: Api, compose: str) -> tuple[float, int, dict[str, object]]:
    started = time.perf_counter()
    response = api.post("/stacks", json={"name": "bomb", "compose": compose})
    return time.perf_counter() - started, response.status_code, response.json()


def test_an_alias_bomb_is_refused_at_once(api: Api) -> None:
    # Unbounded, these 445 bytes took 7 s of CPU and 300 MB to refuse (4.8 million strings).
    bomb = _alias_bomb(7)
    assert len(bomb) < 500
    # The baseline: an ordinary invalid file, through the same path (authentication, body,
    # parsing). Several samples, the fastest kept, so a busy machine does not skew it.
    baseline = min(
        _timed_post(api, "services:\n  web:\n    image: busybox\n    stop_grace_period: 1s\n")[0]
        for _ in range(3)
    )
    tracemalloc.start()
    try:
        elapsed, status, problem = _timed_post(api, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 422, problem
    assert problem["errors"] == [
        {"loc": "compose", "msg": "the YAML has more than 100000 values (aliases expanded)"}
    ]
    assert elapsed < 20 * baseline + 0.5, (elapsed, baseline)
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x-a: &a [*a]\nservices: {}\n", "a YAML alias refers to a collection that contains it"),
        ("x-a: &a {b: *a}\nservices: {}\n", "a YAML alias refers to a collection that contains it"),
        ("x-a: " + "[" * 65 + "]" * 65 + "\n", "the YAML nests more than 64 levels deep"),
        # Past Python's recursion limit in the YAML composer itself.
        ("x-a: " + "[" * 50_000 + "]" * 50_000 + "\n", "the YAML nests more than 64 levels deep"),
    ],
)
def test_documents_that_never_end_or_nest_too_deep(text: str, message: str) -> None:
    assert _errors(text) == [{"loc": "compose", "msg": message}]


def test_the_document_size_is_a_setting(
    api: Api, settings_factory: Callable[..., Settings]
) -> None:
    text = "services:\n  web:\n    image: busybox\n" + "# padding\n" * 200
    assert _errors(text, max_bytes=2000) == [
        {"loc": "compose", "msg": f"the file is {len(text)} bytes; the limit is 2000"}
    ]
    assert Settings.model_fields["max_compose_bytes"].default == 256 * 1024
    with pytest.raises(ValueError, match="less than or equal to 524288"):
        settings_factory(max_compose_bytes=2 * 2**20)


def test_anchors_and_merge_keys_of_real_files_still_work() -> None:
    project = parse(
        textwrap.dedent(
            """
            x-logging: &logging
              labels:
                team: shop
            x-env: &env
              TZ: UTC
              LANG: C.UTF-8
            x-service: &service
              restart: unless-stopped
              environment: *env
              <<: *logging
            services:
              web:
                <<: *service
                image: nginx:1.25
                environment:
                  <<: *env
                  PORT: "8080"
              worker:
                <<: [*service, *logging]
                image: busybox
                command: [sleep, "3600"]
            """
        ),
        project="shop",
        variables={},
        env_files={},
    )
    web, worker = sorted(project.services, key=lambda s: s.name)
    assert web.spec["env"] == {"TZ": "UTC", "LANG": "C.UTF-8", "PORT": "8080"}
    assert web.spec["labels"] == worker.spec["labels"] == {"team": "shop"}
    assert web.spec["restart_policy"] == worker.spec["restart_policy"] == "any"
    assert worker.spec["env"] == {"TZ": "UTC", "LANG": "C.UTF-8"}

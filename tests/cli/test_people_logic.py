"""The CLI's pure parts, table-tested without a server: the progress figures of each kind of
operation, `-p` and `NAME=N` parsing, the exit code of each error, and the stack's name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app.cli.containers import port
from app.cli.follow import Figures, figures
from app.cli.remote import describe, exit_code
from app.cli.services import scale_target
from app.cli.stacks import _project_name
from app.client.errors import (
    BerthError,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Invalid,
    NotFound,
    ServerError,
    Unauthorized,
)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (
            {
                "phase": "pull",
                "layers_done": 1,
                "layers_total": 3,
                "bytes_done": 1000,
                "bytes_total": 4000,
            },
            Figures("pull: 1/3 layers", 1000, 4000, "1.0 kB / 4.0 kB"),
        ),
        (
            {
                "status": "converging",
                "revision": 2,
                "desired": 3,
                "running": 1,
                "healthy": 1,
                "detail": "1/3 replicas ready",
            },
            Figures("revision 2: 1/3 replicas ready", 1, 3, "1/3 replicas"),
        ),
        ({"replicas_left": 2}, Figures("2 replicas left")),
        ({"step": "building web"}, Figures("building web")),
        ({"b": 1, "a": "x"}, Figures("a=x b=1")),
        (None, Figures("")),
    ],
)
def test_progress_figures_of_each_kind(
    progress: dict[str, object] | None, expected: Figures
) -> None:
    assert figures(progress) == expected


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("80", {"container_port": 80}),
        ("8080:80", {"container_port": 80, "host_port": 8080}),
        (
            "127.0.0.1:8080:80/udp",
            {"container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1", "protocol": "udp"},
        ),
        ("[::1]:53:53", {"container_port": 53, "host_port": 53, "host_ip": "::1"}),
    ],
)
def test_ports_as_docker_run_takes_them(text: str, mapping: dict[str, object]) -> None:
    assert port(text) == mapping


@pytest.mark.parametrize("text", ["", "web", "8080:", "a:b", "80/icmp"])
def test_malformed_ports_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        port(text)


def test_scale_targets() -> None:
    assert scale_target("web=3") == ("web", 3)
    for bad in ("web", "web=", "web=-1", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            scale_target(bad)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("no server"), 2),
        (ConnectionFailed("cannot reach"), 1),
        (ServerError("boom", status=500), 1),
        (NotFound("no such", status=404), 3),
        (Unauthorized("401", status=401), 4),
        (Forbidden("403", status=403), 4),
        (Conflict("409", status=409), 4),
        (Invalid("422", status=422), 4),
        (BerthError("something else"), 1),
    ],
)
def test_exit_codes(error: BerthError, code: int) -> None:
    assert exit_code(error) == code


def test_an_invalid_request_names_its_fields_on_one_line() -> None:
    error = Invalid(
        "422",
        status=422,
        problem={"detail": "invalid request", "errors": [{"loc": "body.name", "msg": "taken"}]},
    )
    assert describe(error) == "invalid request (body.name: taken)"
    assert "\n" not in describe(Unauthorized("401", status=401, problem={"detail": "bad token"}))


def test_stack_names_follow_compose(tmp_path: Path) -> None:
    assert _project_name({}, tmp_path / "My_Shop", None) == "myshop"
    assert _project_name({"name": "web-app"}, tmp_path, None) == "web-app"
    assert _project_name({"name": "web-app"}, tmp_path, "given") == "given"

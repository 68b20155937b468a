"""Compose values Berth reads through libraries: port specs (docker's split_port), memory sizes
(docker's parse_bytes) and env files (python-dotenv), with Berth's own checks around them."""

from __future__ import annotations

from typing import Any

import pytest

from app.stacks.compose import ComposeError, parse


def _web(service_yaml: str, env_files: dict[str, str] | None = None) -> dict[str, Any]:
    """Service `web`'s spec, or {"errors": [...]} when the file is refused."""
    lines = "".join(f"    {line}\n" for line in service_yaml.splitlines())
    text = f"services:\n  web:\n    image: nginx\n{lines}"
    try:
        project = parse(text, project="shop", variables={"FROM": "v"}, env_files=env_files or {})
    except ComposeError as exc:
        return {"errors": exc.errors}
    return project.services[0].spec


_INVALID = """invalid port '{}' (e.g. "8000:5000", "127.0.0.1:8000:5000/udp")"""


def _port(container: int, host: int | None, ip: str = "", protocol: str = "tcp") -> dict[str, Any]:
    return {"container_port": container, "host_port": host, "protocol": protocol, "host_ip": ip}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (":5000", [_port(5000, None)]),
        ("[1.2.3.4]:80:8080", [_port(8080, 80, "1.2.3.4")]),
        ("[fe80::1]::53/udp", [_port(53, None, "fe80::1", "udp")]),
        ("1.2.3.4:8000-8001:5000-5001/sctp", [_port(5000, 8000, "1.2.3.4", "sctp"),
                                              _port(5001, 8001, "1.2.3.4", "sctp")]),
    ],
)  # fmt: skip
def test_short_ports(spec: str, expected: list[dict[str, Any]]) -> None:
    assert _web(f'ports: ["{spec}"]')["ports"] == expected


@pytest.mark.parametrize(
    ("spec", "msg"),
    [
        ("80/", _INVALID.format("80/")),
        ("80/t-p", _INVALID.format("80/t-p")),
        ("-8001:5000", _INVALID.format("-8001:5000")),
        ("::1:80:80", _INVALID.format("::1:80:80")),  # IPv6 goes in brackets
        ("[::1:80:80", _INVALID.format("[::1:80:80")),
        ("999.1.1.1:80:80", _INVALID.format("999.1.1.1:80:80")),
        ("1.2.3.4:80", _INVALID.format("1.2.3.4:80")),  # an address needs a published port, or ::
        ("0:80", "invalid port range '0' (ports are 1 to 65535)"),
        ("5001-5000", "invalid port range '5001-5000' (ports are 1 to 65535)"),
        ("8000-8001:5000", "the published and the container port ranges differ in length"),
        ("1.2.3.4:8000:5000-5001", "the published and the container port ranges differ in length"),
        ("80/quic", "protocol 'quic' is not one of tcp, udp, sctp"),
    ],
)
def test_short_port_errors(spec: str, msg: str) -> None:
    assert _web(f'ports: ["{spec}"]') == {
        "errors": [{"loc": "compose.services.web.ports[0]", "msg": msg}]
    }


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("2 k", 2048), ("3KB", 3 * 2**10), ("1048576", 2**20), ("0.5m", 2**19)],
)
def test_memory_sizes(memory: str, expected: int) -> None:
    spec = _web(f"deploy: {{resources: {{limits: {{memory: '{memory}'}}}}}}")

    assert spec["resources"] == {"memory_bytes": expected}


@pytest.mark.parametrize("memory", ["", "-1g", "1t", "g", "infk", "nan"])
def test_memory_size_errors(memory: str) -> None:
    errors = _web(f"deploy: {{resources: {{limits: {{memory: '{memory}'}}}}}}")["errors"]

    assert errors == [
        {
            "loc": "compose.services.web.deploy.resources.limits.memory",
            "msg": f"invalid memory size {memory!r} (e.g. 512m, 1g)",
        }
    ]


def test_env_file_values_as_dotenv_reads_them() -> None:
    content = (
        'QUOTED="x" # comment\n'
        'ESCAPES="a\\tb"\n'
        'MULTI="one\ntwo"\n'
        "export SPACED = value\n"
        "HASH=a#b\n"
        "DOUBLED='it''s'\n"
        'INNER="say "hi""\n'
        "FROM\n"
        "MISSING\n"
    )

    assert _web("env_file: app.env", {"app.env": content})["env"] == {
        "QUOTED": "x",
        "ESCAPES": "a\tb",
        "MULTI": "one\ntwo",
        "SPACED": "value",
        "HASH": "a#b",
        "DOUBLED": "it''s",
        "INNER": 'say "hi"',
        "FROM": "v",
    }


def test_env_file_errors_name_the_line() -> None:
    content = "# head\n\nOK=1\n\n\nnot valid\n9LIVES=x\n"

    assert _web("env_file: app.env", {"app.env": content})["errors"] == [
        {"loc": "compose.services.web.env_file", "msg": f"env_file 'app.env' line {line}: {msg}"}
        for line, msg in ((6, "expected KEY=VALUE"), (7, "expected KEY=VALUE"))
    ]

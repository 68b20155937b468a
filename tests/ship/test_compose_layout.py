"""docker/compose.yaml, the production layout the README explains, is a valid Compose file of
the shape it claims: PostgreSQL, two API processes and one worker from Berth's own image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.stacks.compose.check import schema
from app.stacks.compose.errors import Problems
from tests.testbed import ROOT

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def test_the_production_layout_follows_the_compose_spec() -> None:
    problems = Problems()
    schema(load(COMPOSE_FILE), problems)
    assert problems.errors == []


def test_the_production_layout_is_postgresql_two_apis_and_a_worker() -> None:
    services = load(COMPOSE_FILE)["services"]
    berth = {name: s for name, s in services.items() if s.get("image") == "berth:local"}
    commands = sorted(" ".join(s["command"]) for s in berth.values())
    assert commands == ["migrate", "serve --no-workers", "serve --no-workers", "worker"]
    assert services["db"]["image"].startswith("postgres:")
    for service in berth.values():
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["environment"]["BERTH_DATABASE_URL"].startswith("postgresql+psycopg://")
        # One key for every process: each mounts the same state volume holding BERTH_KEY_FILE.
        assert "state:/var/lib/berth" in service["volumes"]
        assert service["environment"]["BERTH_KEY_FILE"].startswith("/var/lib/berth/")

"""`berth token create` records its event as the API does: the CLI imports only the token
service, so the event must come from the token model itself, not from a module it never loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from app.core.db import Database
from app.events.models import Event


def test_token_create_on_the_command_line_records_token_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'berth.db'}"
    env = dict(os.environ, BERTH_DATABASE_URL=url)
    env.pop("BERTH_BOOTSTRAP_TOKEN", None)
    subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "create", "--role", "viewer", "--name", "ops"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=True,
    )
    database = Database(url)
    try:
        with database.session(write=False) as session:
            events = session.execute(
                select(Event.type, Event.data).where(Event.resource_type == "token")
            ).all()
    finally:
        database.dispose()
    assert [(type_, data["name"], data["role"]) for type_, data in events] == [
        ("token.created", "ops", "viewer")
    ]

"""Counting the SQL a request issues, to hold list endpoints to a fixed number of queries
per page (no query per row)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import Database
from app.hosts.models import Host
from app.main import create_app
from app.security.roles import Role
from tests.support import Api


def add_host(session: Session, name: str, status: str = "ready") -> Host:
    """A host row for rows that need one; nothing ever connects to it."""
    host = Host(name=name, url="tcp://127.0.0.1:1", status=status)
    session.add(host)
    session.flush()
    return host


class QuietApi(Api):
    """An API with nothing running beside the requests (no workers, and no lifespan, so no
    event poller either): every statement on its database is one a request issued. Without
    the start-up chores there is no bootstrap token either, so it asks as a viewer."""

    def __init__(self, settings: Settings, db: Database) -> None:
        app = create_app(settings, run_workers=False)
        super().__init__(TestClient(app), db)
        self.app_db: Database = app.state.context.db

    def request(
        self, method: str, path: str, *, role: Role | None = Role.viewer, **kwargs: Any
    ) -> httpx.Response:
        return super().request(method, path, role=role, **kwargs)

    def statements(self, path: str) -> int:
        """How many statements one GET of `path` issues; it must answer 200."""
        statements: list[str] = []

        def record(*args: Any) -> None:
            statement: str = args[2]
            # The caller's token is looked up once, then cached for seconds: whether the lookup
            # falls in the measured request is timing, not the endpoint's doing.
            if "api_tokens" not in statement:
                statements.append(statement)

        engines = {self.app_db.engine, self.app_db.read_engine}
        for engine in engines:
            event.listen(engine, "before_cursor_execute", record)
        try:
            response = self.get(path)
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.text
        return len(statements)

    def statements_for_1_and_10(
        self, path: str, add: Callable[[list[str]], None], prefix: str
    ) -> tuple[int, int]:
        """The statements one GET of `path` issues with one row, then with ten (`add` stores
        rows of the given names)."""
        add([f"{prefix}-0"])
        self.get(path)  # warm: the caller's token is looked up on a first request
        one = self.statements(path)
        add([f"{prefix}-{n}" for n in range(1, 10)])
        return one, self.statements(path)

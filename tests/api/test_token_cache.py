"""The token cache of app/api/deps.py: a burst of requests that finds a token's entry stale
reads the token once, not once per request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import event

from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from app.security.roles import Role
from app.tokens import service as tokens


def test_a_burst_with_a_stale_entry_reads_the_token_once(settings: Settings, db: Database) -> None:
    with db.session() as session:
        _, secret = tokens.create(session, name="poller", role=Role.viewer, created_by="test")
    app = create_app(settings, run_workers=False)
    context = app.state.context
    reads: list[str] = []

    def record(*args: Any) -> None:
        if "api_tokens" in args[2]:
            reads.append(args[2])

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://berth") as client:
            assert (await client.get("/api/v1/containers", headers=headers)).status_code == 200
            # Every entry as old as the TTL allows, and more: the next request must read again.
            context.principals = {k: (0.0, *v[1:]) for k, v in context.principals.items()}
            reads.clear()
            answers = await asyncio.gather(
                *(client.get("/api/v1/containers", headers=headers) for _ in range(20))
            )
        return [answer.status_code for answer in answers]

    engines = {context.db.engine, context.db.read_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        statuses = asyncio.run(burst())
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
        context.close()
    assert statuses == [200] * 20
    assert len(reads) == 1, reads

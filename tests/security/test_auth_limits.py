"""A brake on token guessing: failed authentications per client address, and one audit entry
per burst of them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.api.auth_limit import FailedAuthLimiter
from app.audit.models import AuditEntry
from app.core.config import Settings
from app.core.db import Database
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN

HOST = {"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True}


def test_the_limiter_counts_wrong_tokens_per_address_per_window() -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(limit=3, window_seconds=10, clock=lambda: now[0])
    assert limiter.failed("a", guess=True)  # the first of its window
    assert not limiter.failed("a", guess=True)
    assert not limiter.failed("a", guess=False)  # no token at all: no guess
    assert limiter.retry_after("a") is None
    limiter.failed("a", guess=True)
    now[0] = 4.0
    assert limiter.retry_after("a") == 6
    assert limiter.retry_after("b") is None
    now[0] = 10.0
    assert limiter.retry_after("a") is None  # a new window
    assert limiter.failed("a", guess=True)


def test_bad_tokens_get_429_and_one_audit_entry(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    # The shipped limit, not the one the other tests raise.
    limit = Settings.model_fields["auth_failure_limit"].default
    settings = settings_factory(auth_failure_limit=limit)
    app = create_app(settings)
    attacker = TestClient(app, client=("192.0.2.7", 40000))
    other = TestClient(app, client=("192.0.2.8", 40000))
    with attacker, other:
        statuses = []
        for i in range(300):
            response = attacker.post(
                "/api/v1/hosts", json=HOST, headers={"Authorization": f"Bearer guess-{i}"}
            )
            statuses.append(response.status_code)
        assert statuses[:limit] == [401] * limit
        assert set(statuses[limit:]) == {429}
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["content-type"] == "application/problem+json"
        good = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        # Even the right token waits at that address: a guess must not be confirmed...
        assert attacker.get("/api/v1/me", headers=good).status_code == 429
        # ...while another address is not held up.
        assert other.get("/api/v1/me", headers=good).status_code == 200
    with db.session(write=False) as session:
        anonymous = session.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.actor == "anonymous")
        ).scalar_one()
    assert anonymous == 1

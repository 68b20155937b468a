"""`GET /secrets` reads a page in a fixed number of queries, however many secrets it holds,
the services that use them included."""

from __future__ import annotations

from functools import partial

from app.core.config import Settings
from app.core.db import Database
from app.secrets.models import Secret
from app.services.models import Service
from tests.statements import QuietApi


def add_secrets(db: Database, names: list[str]) -> None:
    """Secrets, each used by a service of its own (the value is never read by a list)."""
    with db.session() as session:
        session.add_all(Secret(name=name, value_encrypted="unread") for name in names)
        session.add_all(
            Service(name=f"uses-{name}", spec={"image": "busybox", "secrets": [{"name": name}]})
            for name in names
        )


def test_listing_secrets_does_not_query_per_secret(settings: Settings, db: Database) -> None:
    api = QuietApi(settings, db)
    one, ten = api.statements_for_1_and_10("/secrets", partial(add_secrets, db), "secret")
    page = api.get("/secrets").json()["items"]
    assert len(page) == 10
    assert [s["used_by"] for s in page] == [[f"uses-{s['name']}"] for s in page]
    assert ten == one

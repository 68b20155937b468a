"""How Berth reaches an engine over TCP, against the testbed's real engines: h3 answers TLS only,
to a client certificate from the testbed CA; h2 answers plain TCP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from app.core.db import Database, utcnow
from app.core.migrate import alembic_config, upgrade
from app.hosts.models import Host
from tests.support import Api, wait_for
from tests.testbed import Testbed

VERIFY_FAILED = "certificate failed verification"
NO_CLIENT_CERT = "requires a client certificate"


def register(api: Api, name: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/hosts", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    host: dict[str, Any] = response.json()
    return host


def settles(api: Api, host_id: str, status: str) -> dict[str, Any]:
    """The host once its status is `status` (the prober decides, within seconds)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(api.get(f"/hosts/{host_id}").json())
        return bool(seen["status"] == status)

    wait_for(reached, timeout=60, what=f"host {status}")
    return seen


def test_h3_with_its_ca_and_a_client_certificate_becomes_ready(api: Api, bed: Testbed) -> None:
    host = register(api, "h3", **bed.host("h3"))
    assert host["insecure"] is False and host["tls_configured"] is True
    ready = settles(api, host["id"], "ready")
    assert ready["engine_version"].startswith("20.10") and ready["error"] is None


@pytest.mark.parametrize(
    ("what", "tls", "reason"),
    [
        # Before verification by default, a host without a CA was ready: nothing was checked.
        ("no CA: the system's trust store", {"ca_cert": None}, VERIFY_FAILED),
        ("a CA that did not sign h3", {"ca_cert": "other"}, VERIFY_FAILED),
        ("no client certificate", {"client_cert": None, "client_key": None}, NO_CLIENT_CERT),
    ],
)
def test_h3_refused_is_unreachable_and_says_why(
    api: Api, bed: Testbed, what: str, tls: dict[str, str | None], reason: str
) -> None:
    material: dict[str, str | None] = {**bed.h3_tls(), **tls}
    if tls.get("ca_cert") == "other":
        material["ca_cert"] = bed.h3_other_ca.read_text()
    host = register(api, "h3", url=bed.h3_url, tls=material)
    down = settles(api, host["id"], "unreachable")
    assert reason in down["error"], (what, down["error"])
    assert down["engine_version"] is None


def test_insecure_tls_skips_only_the_engine_certificate_check(api: Api, bed: Testbed) -> None:
    tls = {**bed.h3_tls(), "ca_cert": None}
    host = register(api, "h3", url=bed.h3_url, tls=tls, insecure=True)
    assert host["insecure"] is True
    settles(api, host["id"], "ready")


def test_plain_tcp_only_for_a_host_registered_insecure(api: Api, bed: Testbed) -> None:
    refused = api.post("/hosts", json={"name": "h2", "url": bed.h2_url})
    assert refused.status_code == 422
    assert "plain tcp://" in refused.json()["detail"]
    assert "insecure: true" in refused.json()["detail"]
    assert api.get("/hosts").json()["items"] == []

    host = register(api, "h2", url=bed.h2_url, insecure=True)
    assert host["insecure"] is True and host["tls_configured"] is False
    settles(api, host["id"], "ready")
    assert api.get(f"/hosts/{host['id']}").json()["insecure"] is True

    # Taking `insecure` away from a plain-TCP host breaks the same rule.
    patched = api.patch(f"/hosts/{host['id']}", json={"insecure": False})
    assert patched.status_code == 422
    assert "plain tcp://" in patched.json()["detail"]
    assert api.get(f"/hosts/{host['id']}").json()["insecure"] is True


def test_insecure_and_tls_belong_to_tcp_hosts(api: Api, bed: Testbed) -> None:
    unix = api.post("/hosts", json={"name": "h1", "url": bed.h1_url, "insecure": True})
    assert unix.status_code == 422
    assert "insecure applies to tcp:// URLs only" in unix.json()["detail"]
    half = {"ca_cert": bed.h3_ca.read_text(), "client_cert": bed.h3_client_cert.read_text()}
    lone = api.post("/hosts", json={"name": "h3", "url": bed.h3_url, "tls": half})
    assert lone.status_code == 422
    assert "client_cert and client_key go together" in lone.text

    # unix:// is not affected: registered as before. Moving a host there drops `insecure`.
    host = register(api, "h2", url=bed.h2_url, insecure=True)
    moved = api.patch(f"/hosts/{host['id']}", json={"url": bed.h1_url})
    assert moved.status_code == 200, moved.text
    assert moved.json()["insecure"] is False
    settles(api, host["id"], "ready")


def test_an_upgrade_marks_hosts_registered_over_plain_tcp_insecure(tmp_path: Path) -> None:
    """So an upgrade does not cut off a fleet registered before the rule; TLS and unix hosts
    are left verified."""
    scripts = ScriptDirectory.from_config(alembic_config())
    added = next(r for r in scripts.walk_revisions() if r.doc.startswith("hosts.insecure"))
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(database, str(added.down_revision))
        with database.engine.begin() as connection:
            for name, url, tls in [
                ("plain", "tcp://10.0.0.1:2375", None),
                ("tls", "tcp://10.0.0.2:2376", "encrypted"),
                ("local", "unix:///var/run/docker.sock", None),
            ]:
                connection.execute(
                    text(
                        "INSERT INTO hosts (id, name, url, labels, schedulable, draining,"
                        " tls_encrypted, status, consecutive_failures, created_at, updated_at,"
                        " version) VALUES (:name, :name, :url, '{}', true, false, :tls,"
                        " 'ready', 0, :now, :now, 1)"
                    ),
                    {"name": name, "url": url, "tls": tls, "now": utcnow()},
                )
        upgrade(database)
        with database.session(write=False) as session:
            rows = session.execute(select(Host.name, Host.insecure))
            marked = {row.name: row.insecure for row in rows}
        assert marked == {"plain": True, "tls": False, "local": False}
    finally:
        database.dispose()

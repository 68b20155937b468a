"""A change and its audit entry commit together: a `berth serve` killed (SIGKILL, no chance to
finish anything) right after answering 2xx has already stored the entry."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from sqlalchemy import select

from app.audit import keys, service
from app.audit.models import AuditEntry
from app.core.db import Database
from app.hosts.models import Host
from tests.support import BOOTSTRAP_TOKEN, start_serve, stop_process

HOST = {"name": "h", "url": "tcp://10.203.0.2:2375", "insecure": True}


def test_a_server_killed_right_after_a_2xx_leaves_the_audit_entry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'berth.db'}"
    env = {
        "BERTH_DATABASE_URL": url,
        "BERTH_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        "BERTH_REGISTER_LOCAL_HOST": "false",
        "BERTH_LOG_LEVEL": "WARNING",
    }
    process, port = start_serve(tmp_path, env, "--no-workers")
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/hosts",
            json=HOST,
            headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}", "X-Request-ID": "crash-1"},
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        stop_process(process, grace=5)
    assert response.status_code == 201, response.text
    db = Database(url)
    try:
        keys.load(db, tmp_path / "berth-audit.key")
        with db.session(write=False) as session:
            host = session.execute(select(Host)).scalar_one()
            entry = session.execute(
                select(AuditEntry).where(AuditEntry.request_id == "crash-1")
            ).scalar_one()
            assert (entry.action, entry.outcome, entry.success) == ("create_host", 201, True)
            assert entry.resource_id == host.id == response.json()["id"]
            assert service.verify(session).ok
    finally:
        db.dispose()

"""The change loop: closes the requests nobody answered in time and applies the approved ones
whose change window opened. One process runs it at a time (a lease)."""

from __future__ import annotations

import logging

from app.api.paths import API_PREFIX
from app.audit import service as audit
from app.changes import clock
from app.changes import service as changes
from app.core.context import AppContext
from app.workers import wakeups
from app.workers.loops import LeasedLoop

log = logging.getLogger("berth.changes")


class ChangeWindows(LeasedLoop):
    name = "change-windows"
    lease = "changes.windows"

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.db, app.settings.change_interval_seconds)
        self.app = app

    def run_leased(self) -> None:
        now = clock.now()
        due: list[str] = []
        with self.app.db.session() as session:
            if self.holds_lease(session):
                changes.expire(session, now=now)
                due = changes.due_ids(session, now=now)
        applied = sum(self._apply(change_id) for change_id in due)
        if applied:
            wakeups.notify(wakeups.SERVICES)

    def _apply(self, change_id: str) -> bool:
        """One waiting change in its own transaction, with its audit entry: approved earlier
        by `approver`, applied now as `author`."""
        with self.app.db.session() as session:
            if not self.holds_lease(session):
                return False
            resource = changes.apply_waiting(
                session,
                change_id=change_id,
                now=clock.now(),
                settings=self.app.settings,
                cipher=self.app.cipher,
            )
            if resource is None:
                return False
            change = changes.get(session, change_id=change_id)
            audit.append(
                session,
                actor=change.approver or change.author,
                token_id=change.approver_token_id,
                author=change.author,
                action="apply_change_in_window",
                method="LOOP",
                path=f"{API_PREFIX}/changes/{change_id}",
                resource=resource,
                request_id=None,
                source=None,
                outcome=200 if change.state == "applied" else 409,
                project_id=change.project_id,
            )
        log.info("applied a change in its window", extra={"change": change_id})
        return True

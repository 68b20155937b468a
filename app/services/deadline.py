"""When waiting for services to converge stops being worth it: no further replica has become
ready for `BERTH_CONVERGE_DEADLINE_SECONDS`. Pure: the operations that wait (`service.converge`,
`stack.deploy`) carry the mark from pass to pass in their progress.

Progress, not age: a rolling update of many replicas may take hours and is fine while replicas
keep becoming ready; a replica that fails again and again is never ready, so it makes none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.services.schemas import ServiceSpec


@dataclass(frozen=True)
class Mark:
    """The most replicas ready at once so far in a wait, and when that was first reached."""

    ready: int
    since: datetime

    @classmethod
    def carried(cls, stored: Mapping[str, Any] | None, ready: int, now: datetime) -> Mark:
        """The mark after this pass, from the one an earlier pass stored (if any)."""
        best, since = (stored or {}).get("ready_best"), (stored or {}).get("ready_since")
        if best is None or since is None or ready > int(best):
            return cls(ready, now)
        return cls(int(best), datetime.fromisoformat(since))

    def to_json(self) -> dict[str, Any]:
        return {"ready_best": self.ready, "ready_since": self.since.isoformat()}

    def overdue(self, now: datetime, allowance: timedelta) -> bool:
        return now - self.since > allowance


def allowance(deadline_seconds: float, specs: Iterable[ServiceSpec]) -> timedelta:
    """The deadline, plus the longest pause a rolling update of these services takes on
    purpose between two replicas becoming ready (its delay and monitor time)."""
    pause = max((s.update_config.delay_s + s.update_config.monitor_s for s in specs), default=0.0)
    return timedelta(seconds=deadline_seconds + pause)

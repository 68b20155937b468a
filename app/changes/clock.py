"""The time change requests expire and change windows open by. A test that moves time
registers its own source (`use`) instead of patching: windows are weekly and a TTL is a day,
neither of which a test can wait for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from app.core.db import utcnow

Source = Callable[[], datetime]

_source: Source = utcnow


def now() -> datetime:
    return _source()


def use(source: Source) -> Source:
    """Make `source` the clock; returns the one it replaces, to put back afterwards."""
    global _source
    previous, _source = _source, source
    return previous

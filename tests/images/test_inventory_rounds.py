"""Which hosts a round of the inventory loop re-reads: those not read in full within its
interval (pure logic; the reading itself is tested on real engines in test_images.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.images.loops import due_hosts

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STALE = NOW - timedelta(seconds=300)
LONG_AGO = NOW - timedelta(hours=1)
JUST_NOW = NOW - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("created", "read", "due"),
    [
        # Read by a follower's first opening (or an image operation) within the interval.
        (LONG_AGO, JUST_NOW, False),
        (LONG_AGO, LONG_AGO, True),
        (LONG_AGO, STALE, True),
        # Holding no image: due by its registration, so a new host is its follower's to read.
        (LONG_AGO, None, True),
        (JUST_NOW, None, False),
    ],
)
def test_a_round_reads_only_hosts_not_read_within_its_interval(
    created: datetime, read: datetime | None, due: bool
) -> None:
    last_read = {} if read is None else {"h": read}
    assert due_hosts({"h": created}, last_read, stale=STALE) == (["h"] if due else [])

"""The engine's timestamps, as every engine version writes them: RFC 3339 with up to nine
fractional digits (trailing zeros dropped), `Z` or an offset. One parser reads them all (the
image inventory had its own, which turned an offset into `+00:00+00:00`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.engine.docker_engine import parse_engine_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5Z", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.25+00:00", datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
        ("2024-01-02T05:04:05.000000001+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_engine_times_are_read_in_utc(text: str, expected: datetime) -> None:
    parsed = parse_engine_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-02T03:04:05Z"])
def test_what_is_not_a_time_is_none(text: str) -> None:
    assert parse_engine_time(text) is None

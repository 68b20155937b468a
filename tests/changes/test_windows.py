"""Change-window arithmetic: pure, over aware datetimes (no clock, no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.projects.windows import Window, describe, opening


def _utc(*parts: int) -> datetime:
    year, month, day, hour, minute = parts
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _window(days: list[str], start: str, end: str, tz: str = "UTC") -> Window:
    return Window.model_validate({"days": days, "start": start, "end": end, "tz": tz})


OFFICE = _window(["mon", "tue"], "09:00", "17:00", "Europe/Zurich")


def test_inside_a_window_the_change_applies_now() -> None:
    at = _utc(2026, 11, 30, 10, 0)  # Monday 11:00 in Zurich (CET, +01:00)
    assert opening([OFFICE], at) == at


def test_outside_it_waits_for_the_next_start_in_the_windows_time_zone() -> None:
    # Monday 17:30 in Zurich: closed; Tuesday 09:00 CET is 08:00 UTC.
    assert opening([OFFICE], _utc(2026, 11, 30, 16, 30)) == _utc(2026, 12, 1, 8, 0)
    # Tuesday evening: the next is Monday.
    assert opening([OFFICE], _utc(2026, 12, 1, 18, 0)) == _utc(2026, 12, 7, 8, 0)


def test_the_end_is_exclusive_and_the_start_inclusive() -> None:
    assert opening([OFFICE], _utc(2026, 11, 30, 8, 0)) == _utc(2026, 11, 30, 8, 0)
    assert opening([OFFICE], _utc(2026, 11, 30, 16, 0)) == _utc(2026, 12, 1, 8, 0)


def test_daylight_saving_moves_the_utc_start_not_the_local_one() -> None:
    # Zurich springs forward on Sunday 29 March 2026: Monday 09:00 is 08:00 UTC the week
    # before and 07:00 UTC after.
    assert opening([OFFICE], _utc(2026, 3, 23, 7, 30)) == _utc(2026, 3, 23, 8, 0)
    assert opening([OFFICE], _utc(2026, 3, 27, 12, 0)) == _utc(2026, 3, 30, 7, 0)
    # And back on 25 October.
    assert opening([OFFICE], _utc(2026, 10, 23, 12, 0)) == _utc(2026, 10, 26, 8, 0)


def test_the_same_local_time_in_two_zones_is_two_instants() -> None:
    new_york = _window(["mon"], "09:00", "10:00", "America/New_York")
    # New York springs forward on 8 March 2026, three weeks before Zurich.
    assert opening([new_york], _utc(2026, 3, 2, 0, 0)) == _utc(2026, 3, 2, 14, 0)
    assert opening([new_york], _utc(2026, 3, 9, 0, 0)) == _utc(2026, 3, 9, 13, 0)
    zurich = _window(["mon"], "09:00", "10:00", "Europe/Zurich")
    assert opening([zurich, new_york], _utc(2026, 3, 9, 9, 0)) == _utc(2026, 3, 9, 13, 0)


def test_a_start_the_clock_skips_opens_when_it_jumps() -> None:
    # 02:30 does not exist in Zurich on 29 March 2026 (02:00 CET -> 03:00 CEST): the window
    # opens at 01:30 UTC, i.e. 03:30 CEST, and still ends at 04:00 CEST (02:00 UTC).
    night = _window(["sun"], "02:30", "04:00", "Europe/Zurich")
    assert opening([night], _utc(2026, 3, 29, 1, 0)) == _utc(2026, 3, 29, 1, 30)
    assert opening([night], _utc(2026, 3, 29, 1, 59)) == _utc(2026, 3, 29, 1, 59)
    assert opening([night], _utc(2026, 3, 29, 2, 0)) == _utc(2026, 4, 5, 0, 30)


def test_a_start_the_clock_repeats_opens_at_its_first_occurrence() -> None:
    # 02:30 happens twice in Zurich on 25 October 2026; the first is CEST, 00:30 UTC.
    night = _window(["sun"], "02:30", "04:00", "Europe/Zurich")
    assert opening([night], _utc(2026, 10, 25, 0, 0)) == _utc(2026, 10, 25, 0, 30)


def test_a_window_may_cross_midnight() -> None:
    friday_night = _window(["fri"], "22:00", "02:00")
    assert opening([friday_night], _utc(2026, 12, 5, 1, 0)) == _utc(2026, 12, 5, 1, 0)
    assert opening([friday_night], _utc(2026, 12, 5, 3, 0)) == _utc(2026, 12, 11, 22, 0)


def test_midnight_to_midnight_is_the_whole_day() -> None:
    sunday = _window(["sun"], "00:00", "00:00")
    assert opening([sunday], _utc(2026, 12, 6, 23, 59)) == _utc(2026, 12, 6, 23, 59)
    assert opening([sunday], _utc(2026, 12, 7, 0, 0)) == _utc(2026, 12, 13, 0, 0)


def test_the_soonest_of_several_windows_wins() -> None:
    weekend = _window(["sat"], "06:00", "08:00")
    assert opening([OFFICE, weekend], _utc(2026, 12, 1, 18, 0)) == _utc(2026, 12, 5, 6, 0)


def test_no_windows_is_no_opening() -> None:
    assert opening([], _utc(2026, 12, 1, 18, 0)) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"days": ["mon"], "start": "09:00", "end": "17:00", "tz": "Mars/Olympus"},
        {"days": [], "start": "09:00", "end": "17:00"},
        {"days": ["monday"], "start": "09:00", "end": "17:00"},
        {"days": ["mon"], "start": "09:00:30", "end": "17:00"},
        {"days": ["mon"], "start": "9am", "end": "17:00"},
        {"days": ["mon"], "start": "09:00", "end": "17:00", "extra": 1},
    ],
)
def test_a_malformed_window_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Window.model_validate(bad)


def test_windows_read_as_a_person_writes_them() -> None:
    assert describe([OFFICE]) == "mon,tue 09:00-17:00 Europe/Zurich"
    assert OFFICE.model_dump(mode="json")["start"] == "09:00"

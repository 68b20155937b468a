"""Change windows: weekly periods, in a time zone, when a protected project takes changes.

Pure arithmetic over aware datetimes, so every branch (time zones, daylight saving, windows
that cross midnight) is tested in milliseconds, with no clock and no database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# What an approval outside a project's windows does: wait for the next one, or be refused.
OutsideWindow = Literal["wait", "refuse"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Window(BaseModel):
    """Every `days` from `start` to `end`, wall-clock time in `tz`. An `end` at or before
    `start` ends on the next day (`fri 22:00-02:00`), and `00:00-00:00` is the whole day.
    A start that daylight saving skips (02:30 on the spring-forward night) opens when the
    clock jumps; one it repeats opens at its first occurrence."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(min_length=1, max_length=7)
    start: time = Field(description="`HH:MM`, local time in `tz`")
    end: time = Field(description="`HH:MM`, local time in `tz`; at or before `start`: next day")
    tz: str = Field(default="UTC", max_length=64, description="An IANA time zone")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("start", "end")
    @classmethod
    def _minutes(cls, value: time) -> time:
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError("a time of day as HH:MM")
        return value

    @field_serializer("start", "end")
    def _as_written(self, value: time) -> str:
        return f"{value:%H:%M}"

    def periods(self, around: datetime) -> Iterator[tuple[datetime, datetime]]:
        """This window's periods (UTC start, UTC end) that start from a day before `around`
        to a week after it, in order."""
        zone = ZoneInfo(self.tz)
        today = around.astimezone(zone).date()
        for offset in range(-1, 8):
            day = today + timedelta(days=offset)
            if DAYS[day.weekday()] not in self.days:
                continue
            yield (
                _utc(day, self.start, zone),
                _utc(day if self.end > self.start else day + timedelta(days=1), self.end, zone),
            )


def _utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0: a repeated local time is its first occurrence, a skipped one is read with the
    # offset before the jump (02:30 CET on the spring-forward night is 03:30 CEST).
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def opening(windows: Sequence[Window], at: datetime) -> datetime | None:
    """`at` when a window is open then, else when the next one opens (None: no windows).
    Every window recurs weekly, so one a week ahead is always found."""
    soonest: datetime | None = None
    for window in windows:
        for start, end in window.periods(at):
            if start <= at < end:
                return at
            if start > at and (soonest is None or start < soonest):
                soonest = start
    return soonest


def describe(windows: Sequence[Window]) -> str:
    """The windows as a person reads them: `mon,tue 09:00-17:00 Europe/Zurich`."""
    return "; ".join(f"{','.join(w.days)} {w.start:%H:%M}-{w.end:%H:%M} {w.tz}" for w in windows)

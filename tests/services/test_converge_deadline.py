"""When a wait for services gives up: the mark it carries from pass to pass. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.engine.docker_engine import created_at
from app.services.deadline import Mark, allowance
from app.services.schemas import ServiceSpec

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_first_pass_starts_the_clock() -> None:
    assert Mark.carried(None, 0, START) == Mark(0, START)
    assert Mark.carried({"step": "building web"}, 2, START) == Mark(2, START)


def test_a_new_best_restarts_it_and_anything_less_does_not() -> None:
    stored = Mark(2, START).to_json()
    later = START + timedelta(seconds=30)
    assert Mark.carried(stored, 3, later) == Mark(3, later)
    assert Mark.carried(stored, 2, later) == Mark(2, START)
    # A replica that came and went again is no progress.
    assert Mark.carried(stored, 1, later) == Mark(2, START)


def test_overdue_only_past_the_allowance() -> None:
    mark = Mark(0, START)
    assert not mark.overdue(START + timedelta(seconds=10), timedelta(seconds=10))
    assert mark.overdue(START + timedelta(seconds=10.5), timedelta(seconds=10))


def test_the_allowance_covers_the_slowest_update_pause() -> None:
    slow = ServiceSpec(image="a", update_config={"delay_s": 20, "monitor_s": 40})
    quick = ServiceSpec(image="a", update_config={"monitor_s": 0})
    assert allowance(600, [quick, slow]) == timedelta(seconds=660)
    assert allowance(600, []) == timedelta(seconds=600)


def test_engine_creation_times_sort_as_time_not_as_text() -> None:
    # Trailing zeros are dropped: as text, ".1Z" would sort after ".12Z".
    earlier = {"Created": "2026-11-30T03:53:33.1Z"}
    later = {"Created": "2026-11-30T03:53:33.12Z"}
    assert created_at(earlier) < created_at(later)
    assert created_at({"Created": "2026-11-30T04:53:33+01:00"}) == created_at(
        {"Created": "2026-11-30T03:53:33Z"}
    )
    assert created_at({"Created": "2026-11-30T03:53:33.000000001Z"}) > created_at(
        {"Created": "2026-11-30T03:53:33Z"}
    )
    assert created_at({}) > created_at(later)

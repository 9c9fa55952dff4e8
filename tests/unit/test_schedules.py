"""Cron in a timezone, DST, and the rule for missed ticks: computed, no database, no waiting."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable

import pytest

from backend.declare.registry import NoArgs, PeriodicArgs, TaskBlueprint
from backend.declare.schedules import (
    configured_schedules,
    next_tick,
    previous_tick,
    ticks,
)
from backend.errors import SettingsError
from backend.runtime.app import build_task_app
from backend.runtime.periodic import ZonedDeferrer
from backend.settings import Settings, load_settings

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
RIYADH = zoneinfo.ZoneInfo("Asia/Riyadh")
UNUSED_URL = "postgresql://nobody@127.0.0.1:1/never"  # the connector is never opened


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    tz: datetime.tzinfo = datetime.UTC,
) -> float:
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()


def utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%MZ")


def test_cron_reads_its_fields_in_the_timezone() -> None:
    # 03:00 in Riyadh (UTC+3, no DST) is midnight UTC.
    assert utc(next_tick("0 3 * * *", RIYADH, at(2026, 11, 22, 12))) == "2026-11-23 00:00Z"
    assert utc(next_tick("0 3 * * *", datetime.UTC, at(2026, 11, 22, 12))) == "2026-11-23 03:00Z"


def test_a_daily_time_stays_at_local_time_across_spring_forward() -> None:
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29.
    runs = ticks("0 9 * * *", BERLIN, at(2026, 3, 27, 12), at(2026, 3, 30, 12))
    assert [utc(run) for run in runs] == [
        "2026-03-28 08:00Z",
        "2026-03-29 07:00Z",
        "2026-03-30 07:00Z",
    ]


def test_a_time_skipped_by_spring_forward_runs_right_after_the_gap() -> None:
    runs = list(ticks("30 2 * * *", BERLIN, at(2026, 3, 28, 12), at(2026, 3, 30, 12)))
    local = [datetime.datetime.fromtimestamp(run, BERLIN).strftime("%d %H:%M") for run in runs]
    assert local == ["29 03:00", "30 02:30"]


def test_a_fixed_time_in_the_repeated_hour_runs_once_when_clocks_go_back() -> None:
    # Berlin goes from UTC+2 back to UTC+1 at 03:00 on 2026-10-25: 02:30 happens twice.
    runs = ticks("30 2 * * *", BERLIN, at(2026, 10, 24, 12), at(2026, 10, 26, 12))
    assert [utc(run) for run in runs] == ["2026-10-25 00:30Z", "2026-10-26 01:30Z"]


def test_an_hourly_schedule_runs_in_both_repeated_hours() -> None:
    runs = ticks("0 * * * *", BERLIN, at(2026, 10, 24, 22, 30), at(2026, 10, 25, 2, 30))
    assert [utc(run) for run in runs] == [
        "2026-10-24 23:00Z",  # 01:00 +02:00
        "2026-10-25 00:00Z",  # 02:00 +02:00
        "2026-10-25 01:00Z",  # 02:00 +01:00, an hour of real time later
        "2026-10-25 02:00Z",  # 03:00 +01:00
    ]


def test_previous_tick_includes_a_tick_at_the_instant() -> None:
    tick = at(2026, 11, 22, 3)
    assert previous_tick("0 3 * * *", datetime.UTC, tick) == tick
    assert previous_tick("0 3 * * *", datetime.UTC, tick - 0.5) == tick - 86_400
    assert previous_tick("0 3 * * *", datetime.UTC, tick + 0.9) == tick


def _blueprint() -> TaskBlueprint:
    blueprint = TaskBlueprint()

    @blueprint.task(name="reports.daily", cron="0 6 * * *")
    def daily(args: PeriodicArgs) -> None:
        """A periodic task."""

    @blueprint.task(name="reports.on_demand")
    def on_demand(args: PeriodicArgs) -> None:
        """Not periodic, but its model takes the tick."""

    @blueprint.task(name="reports.plain")
    def plain(args: NoArgs) -> None:
        """Cannot be scheduled."""

    return blueprint


def test_operators_replace_add_and_turn_off_schedules() -> None:
    settings = load_settings(
        schedules="reports.daily=off; reports.on_demand=*/15 * * * *", timezone="Asia/Riyadh"
    )
    by_name = {s.task_name: s for s in configured_schedules(settings, [_blueprint()])}
    assert set(by_name) == {"reports.daily", "reports.on_demand"}
    assert by_name["reports.daily"].cron is None
    assert by_name["reports.daily"].declared_cron == "0 6 * * *"
    assert by_name["reports.on_demand"].cron == "*/15 * * * *"

    app = build_task_app(UNUSED_URL, settings, [_blueprint()])
    crons = {task.task.name: task.cron for task in app.periodic_registry.periodic_tasks.values()}
    assert crons == {"reports.on_demand": "*/15 * * * *"}


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ("reports.unknown=0 6 * * *", "unknown task 'reports.unknown'"),
        ("reports.plain=0 6 * * *", "its arguments model has no timestamp field"),
    ],
)
def test_unusable_overrides_are_refused(schedules: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        configured_schedules(load_settings(schedules=schedules), [_blueprint()])
    assert "TASKHUB_SCHEDULES" in str(error.value)


Deferrer = Callable[..., ZonedDeferrer]


@pytest.fixture
def deferrer() -> Deferrer:
    def make(cron: str, catch_up: float, timezone: datetime.tzinfo = datetime.UTC) -> ZonedDeferrer:
        settings = Settings(schedules=f"reports.daily={cron}")
        app = build_task_app(UNUSED_URL, settings, [_blueprint()])
        return ZonedDeferrer(app.periodic_registry, timezone=timezone, catch_up=catch_up)

    return make


def due(deferrer: ZonedDeferrer, now: float) -> list[str]:
    return [utc(tick) for _, tick in deferrer.get_previous_tasks(at=now)]


def test_on_start_the_latest_missed_tick_runs_within_the_catch_up(deferrer: Deferrer) -> None:
    hourly = deferrer("0 * * * *", catch_up=600)
    assert due(hourly, at(2026, 11, 22, 10, 9)) == ["2026-11-22 10:00Z"]
    assert due(hourly, at(2026, 11, 22, 10, 30)) == []  # deferred already
    assert due(hourly, at(2026, 11, 22, 11, 0, 1)) == ["2026-11-22 11:00Z"]


def test_on_start_a_tick_later_than_the_catch_up_is_skipped(deferrer: Deferrer) -> None:
    hourly = deferrer("0 * * * *", catch_up=600)
    assert due(hourly, at(2026, 11, 22, 10, 11)) == []
    assert due(hourly, at(2026, 11, 22, 10, 59)) == []  # not looked at again
    assert due(hourly, at(2026, 11, 22, 11, 0, 1)) == ["2026-11-22 11:00Z"]


def test_catch_up_zero_skips_missed_ticks_but_runs_on_time_ones(deferrer: Deferrer) -> None:
    hourly = deferrer("0 * * * *", catch_up=0)
    assert due(hourly, at(2026, 11, 22, 10, 1)) == []
    assert due(hourly, at(2026, 11, 22, 11, 0, 2)) == ["2026-11-22 11:00Z"]  # a little late


def test_ticks_missed_while_running_collapse_into_the_latest(deferrer: Deferrer) -> None:
    every_minute = deferrer("* * * * *", catch_up=600)
    assert due(every_minute, at(2026, 11, 22, 10, 0, 1)) == ["2026-11-22 10:00Z"]
    # The database was unreachable for five minutes: one run, not five.
    assert due(every_minute, at(2026, 11, 22, 10, 5, 1)) == ["2026-11-22 10:05Z"]
    assert due(every_minute, at(2026, 11, 22, 10, 30, 30)) == ["2026-11-22 10:30Z"]

    short = deferrer("* * * * *", catch_up=20)
    assert due(short, at(2026, 11, 22, 10, 0, 1)) == ["2026-11-22 10:00Z"]
    # The latest missed tick is later than the catch-up: none, then the next tick as usual.
    assert due(short, at(2026, 11, 22, 10, 5, 30)) == []
    assert due(short, at(2026, 11, 22, 10, 6, 1)) == ["2026-11-22 10:06Z"]


def test_the_deferrer_sleeps_until_the_next_local_tick(deferrer: Deferrer) -> None:
    daily = deferrer("0 3 * * *", catch_up=600, timezone=RIYADH)
    now = at(2026, 11, 22, 23, 0)
    assert daily.get_next_tick(now) == pytest.approx(3600)

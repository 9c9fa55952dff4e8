"""Schedules against a real database: one job per tick across workers, restarts, GET /schedules.

Time is under control: deferrers are asked what is due at chosen instants; no test waits for
a real tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import zoneinfo
from collections.abc import AsyncIterator

from backend.api import create_app
from backend.control.schedules import list_schedules
from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.runtime.app import build_task_app
from backend.runtime.periodic import ZonedDeferrer
from backend.settings import Settings
from tests.conftest import READ_TOKEN, eventually
from tests.integration.conftest import running_api, running_worker

RIYADH = zoneinfo.ZoneInfo("Asia/Riyadh")

blueprint = TaskBlueprint()


@blueprint.task(name="reports.every_minute", cron="* * * * *", queue="reports")
def every_minute(args: PeriodicArgs) -> int | None:
    """Returns its tick, so the test sees which tick each job ran for."""
    return args.timestamp


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


@contextlib.asynccontextmanager
async def deferrers(
    settings: Settings, db_url: str, count: int, catch_up: float = 600
) -> AsyncIterator[list[ZonedDeferrer]]:
    """``count`` deferrers, each on its own app and pool, as in separate worker processes."""
    async with contextlib.AsyncExitStack() as stack:
        found = []
        for _ in range(count):
            app = build_task_app(db_url, settings, [blueprint])
            await stack.enter_async_context(app.open_async())
            found.append(
                ZonedDeferrer(app.periodic_registry, timezone=settings.tzinfo(), catch_up=catch_up)
            )
        yield found


async def tick_jobs(conn: DictConnection) -> list[int]:
    cursor = await conn.execute(
        "SELECT (args->>'timestamp')::bigint AS tick FROM procrastinate_jobs"
        " WHERE task_name = 'reports.every_minute' ORDER BY id"
    )
    return [row["tick"] for row in await cursor.fetchall()]


async def defer_due(deferrer: ZonedDeferrer, now: float) -> None:
    await deferrer.defer_jobs(deferrer.get_previous_tasks(at=now))


async def test_three_workers_defer_one_job_per_tick(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    start = at(2026, 11, 22, 10, 0, 1)
    async with deferrers(settings, db_url, 3) as three:
        for minute in range(5):
            now = start + 60 * minute
            await asyncio.gather(*(defer_due(deferrer, now) for deferrer in three))
    assert await tick_jobs(conn) == [int(start - 1 + 60 * minute) for minute in range(5)]


async def test_a_restart_within_a_tick_does_not_defer_it_again(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    async with deferrers(settings, db_url, 1) as [before]:
        await defer_due(before, at(2026, 11, 22, 10, 0, 1))
    # A new process knows nothing of the first; the database refuses the same tick twice.
    async with deferrers(settings, db_url, 1) as [after]:
        await defer_due(after, at(2026, 11, 22, 10, 0, 40))
        await defer_due(after, at(2026, 11, 22, 10, 1, 1))
    assert await tick_jobs(conn) == [int(at(2026, 11, 22, 10)), int(at(2026, 11, 22, 10, 1))]


async def test_a_lagging_clock_never_defers_a_tick_older_than_the_newest(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """One process's clock is ahead and has deferred 10:01 (whose record replaced 10:00's); a
    process started later with a clock two minutes behind catches up its "latest missed tick",
    10:00, and must not run it again."""
    async with deferrers(settings, db_url, 1) as [ahead]:
        await defer_due(ahead, at(2026, 11, 22, 10, 0, 1))
        await defer_due(ahead, at(2026, 11, 22, 10, 1, 1))
    async with deferrers(settings, db_url, 1) as [behind]:
        await defer_due(behind, at(2026, 11, 22, 10, 0, 30))
        await defer_due(behind, at(2026, 11, 22, 10, 2, 1))
    assert await tick_jobs(conn) == [
        int(at(2026, 11, 22, 10)),
        int(at(2026, 11, 22, 10, 1)),
        int(at(2026, 11, 22, 10, 2)),
    ]


async def test_after_downtime_only_the_latest_tick_within_the_catch_up_runs(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    async with deferrers(settings, db_url, 1, catch_up=600) as [before]:
        await defer_due(before, at(2026, 11, 22, 10, 0, 1))
    # Down for 7 minutes: the 10:07 tick runs once; 10:01 to 10:06 are skipped.
    async with deferrers(settings, db_url, 1, catch_up=600) as [after]:
        await defer_due(after, at(2026, 11, 22, 10, 7, 30))
    # Down for 20 minutes with no catch-up: nothing until the next tick.
    async with deferrers(settings, db_url, 1, catch_up=0) as [strict]:
        await defer_due(strict, at(2026, 11, 22, 10, 27, 30))
        await defer_due(strict, at(2026, 11, 22, 10, 28, 1))
    assert await tick_jobs(conn) == [
        int(at(2026, 11, 22, 10)),
        int(at(2026, 11, 22, 10, 7)),
        int(at(2026, 11, 22, 10, 28)),
    ]


async def test_schedules_list_next_and_last_run_in_the_timezone(
    db_url: str, settings: Settings, conn: DictConnection
) -> None:
    riyadh = settings.model_copy(update={"timezone": "Asia/Riyadh"})
    rescue_off = riyadh.model_copy(update={"schedules": "taskhub.rescue_stalled_jobs=off"})
    async with deferrers(riyadh, db_url, 1) as [deferrer]:
        await defer_due(deferrer, datetime.datetime.now(datetime.UTC).timestamp())
    [tick] = await tick_jobs(conn)
    async with running_worker(riyadh, db_url, queues=["reports"], blueprints=[blueprint]):

        async def ran() -> bool:
            cursor = await conn.execute(
                "SELECT 1 FROM procrastinate_jobs WHERE status = 'succeeded'"
                " AND task_name = 'reports.every_minute'"
            )
            return await cursor.fetchone() is not None

        await eventually(ran)

    async with running_api(create_app(rescue_off, db_url)) as client:
        response = await client.get("/schedules")
    assert response.status_code == 200, response.text
    listed = {schedule["task"]: schedule for schedule in response.json()}

    # The API lists the schedules of the tasks it knows: the built-in ones.
    rescue = listed["taskhub.rescue_stalled_jobs"]
    assert rescue["enabled"] is False
    assert rescue["cron"] is None
    assert rescue["declared_cron"] == "* * * * *"
    assert rescue["next_run_at"] is None
    prune = next(s for name, s in listed.items() if name.startswith("taskhub.prune"))
    assert prune["enabled"] is True
    assert prune["timezone"] == "Asia/Riyadh"
    assert prune["next_run_at"].endswith("+03:00")
    next_run = datetime.datetime.fromisoformat(prune["next_run_at"])
    assert datetime.timedelta(0) < next_run - datetime.datetime.now(datetime.UTC)
    assert next_run - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(days=1)

    # The tick deferred above belongs to a task the API does not declare: its own listing.
    [own] = await list_schedules(conn, riyadh, blueprints=[blueprint])
    assert own.task == "reports.every_minute"
    assert own.last_run is not None
    assert own.last_run.status == "succeeded"
    assert own.last_run.tick_at.timestamp() == tick
    assert own.last_run.tick_at.utcoffset() == datetime.timedelta(hours=3)
    assert own.last_run.finished_at is not None
    assert own.next_run_at is not None
    now = datetime.datetime.now(datetime.UTC).timestamp()
    assert tick < own.next_run_at.timestamp() <= now + 60


async def test_schedules_need_a_token(settings: Settings, db_url: str) -> None:
    async with running_api(create_app(settings, db_url), token=None) as client:
        response = await client.get("/schedules")
    assert response.status_code == 401


async def test_a_read_token_lists_schedules(settings: Settings, db_url: str) -> None:
    async with running_api(create_app(settings, db_url), token=READ_TOKEN) as client:
        response = await client.get("/schedules")
    assert response.status_code == 200
    names = [schedule["task"] for schedule in response.json()]
    assert "taskhub.rescue_stalled_jobs" in names

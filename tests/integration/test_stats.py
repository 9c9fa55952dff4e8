"""Task statistics: the rollup of finished attempts, GET /stats, GET /stats/slow, /metrics."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import subprocess

import httpx
import pytest

from backend import cli, defer
from backend.control import stats
from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.queries import QUERIES
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.conftest import BLUEPRINTS, READ_TOKEN, bearer, eventually
from tests.integration.conftest import running_worker

blueprint = TaskBlueprint()


@blueprint.task(name="tests.stats_flaky", retry=1)
def flaky(args: PeriodicArgs) -> None:
    raise ValueError("always")


TEST_BLUEPRINTS = (*BLUEPRINTS, blueprint)


async def roll_up(conn: DictConnection) -> int:
    """Every window due, as taskhub.rollup_stats does."""
    attempts = 0
    while True:
        async with conn.transaction():
            done = await stats.rollup_window(conn)
        if done is None:
            return attempts
        attempts += done.attempts
        if done.caught_up:
            return attempts


async def finish_jobs(conn: DictConnection, settings: Settings, db_url: str) -> None:
    """Three pings (two fast, one of 0.3 s) and a task that fails twice (a retry, a failure)."""
    for sleep in (0, 0, 0.3):
        await defer.defer(conn, ping, {"sleep": sleep}, queue="emails")
    await defer.defer(conn, blueprint.tasks["tests.stats_flaky"], {})
    async with running_worker(settings, db_url, blueprints=TEST_BLUEPRINTS):

        async def done() -> bool:
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs"
                " WHERE status IN ('succeeded', 'failed')"
                " AND task_name IN ('taskhub.ping', 'tests.stats_flaky')"
            )
            row = await cursor.fetchone()
            return row is not None and row["n"] == 4

        await eventually(done, within=20)


async def test_the_rollup_counts_each_attempt_once_and_outlives_pruning(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "UPDATE taskhub.stats_watermark SET rolled_up_to = now() - interval '1 second'"
    )
    await finish_jobs(conn, settings, db_url)
    await roll_up(conn)  # what the worker's own taskhub.rollup_stats left
    assert await roll_up(conn) == 0, "a second pass counts nothing again"

    cursor = await conn.execute("SELECT * FROM taskhub.task_totals ORDER BY task_name")
    totals = {row["task_name"]: row for row in await cursor.fetchall()}
    assert totals["taskhub.ping"]["succeeded"] == 3
    assert totals["taskhub.ping"]["duration_count"] == 3
    assert sum(totals["taskhub.ping"]["buckets"]) == 3
    flaky_total = totals["tests.stats_flaky"]
    assert (flaky_total["retried"], flaky_total["failed"]) == (1, 1)

    now = datetime.datetime.now(datetime.UTC)
    answer = await stats.series(conn, now - datetime.timedelta(hours=1), now, 3600)
    by_task = {item.task: item for item in answer.series}
    [point] = by_task["taskhub.ping"].points
    assert (point.succeeded, point.durations) == (3, 3)
    assert by_task["taskhub.ping"].queue == "emails"
    assert point.p99 is not None
    assert 0.25 <= point.p99 <= 0.5, "the 0.3 s ping is in 0.25-0.5"

    # Pruning deletes the finished jobs with their events: the statistics stay.
    cursor = await conn.execute(
        "DELETE FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed') RETURNING id"
    )
    assert len(await cursor.fetchall()) >= 4
    after = await stats.series(conn, now - datetime.timedelta(hours=1), now, 3600)
    assert after == answer


async def test_per_minute_rows_are_pruned_after_the_retention(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "INSERT INTO taskhub.task_stats (minute, task_name, queue_name, succeeded, buckets)"
        " SELECT now() - make_interval(days => d), 't', 'q', 1, '{1}'"
        "   FROM generate_series(1, 40) d"
    )
    assert await stats.prune_batch(conn) == 11, "30 days old and older"
    assert await stats.prune_batch(conn) == 0


def test_quantiles_interpolate_inside_their_bucket() -> None:
    bounds = [1.0, 2.0, 4.0]
    assert stats.quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert stats.quantile(bounds, [0, 10, 0, 0], 0.5) == 1.5
    assert stats.quantile(bounds, [10, 0, 0, 0], 1.0) == 1.0
    assert stats.quantile(bounds, [0, 0, 0, 5], 0.99) == 4.0


async def test_stats_slow_jobs_and_metrics_over_the_api(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    await finish_jobs(conn, settings, db_url)
    await roll_up(conn)
    reader = bearer(READ_TOKEN)

    answer = (await client.get("/stats", params={"task": "taskhub.ping"}, headers=reader)).json()
    [series] = answer["series"]
    assert (series["task"], series["queue"]) == ("taskhub.ping", "emails")
    assert sum(point["succeeded"] for point in series["points"]) == 3

    slow = (await client.get("/stats/slow", params={"threshold": 0.2}, headers=reader)).json()
    assert [job["task_name"] for job in slow] == ["taskhub.ping"], "the 0.3 s ping alone"
    assert slow[0]["seconds"] >= 0.3

    assert (await client.get("/metrics", headers=bearer("wrong"))).status_code == 401
    response = await client.get("/metrics", headers=reader)
    assert response.status_code == 200
    text = response.text
    assert 'taskhub_jobs_succeeded_total{task="taskhub.ping"} 3.0' in text
    assert 'taskhub_jobs_retried_total{task="tests.stats_flaky"} 1.0' in text
    assert 'taskhub_job_duration_seconds_count{task="taskhub.ping"} 3.0' in text
    assert "taskhub_workers_alive 0.0" in text
    assert 'taskhub_alerts_firing{severity="critical"} 0.0' in text
    await conn.execute(
        "INSERT INTO taskhub.alert_states (rule, subject, firing, severity, message, firing_since)"
        " VALUES ('backlog', 'emails', true, 'critical', 'backlog over 1000', now()),"
        " ('dead_worker', '7', false, 'critical', 'resolved', now())"
    )
    firing = (await client.get("/metrics", headers=reader)).text
    assert 'taskhub_alerts_firing{severity="critical"} 1.0' in firing
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: ./scripts/test.sh installs it"
    check = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_taskhub_stats_prints_one_row_per_task_and_queue(
    conn: DictConnection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "UPDATE taskhub.stats_watermark SET rolled_up_to = now() - interval '1 second'"
    )
    await finish_jobs(conn, settings, db_url)
    await roll_up(conn)
    monkeypatch.setenv("DATABASE_URL", db_url)

    def taskhub(*argv: str) -> str:
        assert cli.main(list(argv)) == 0
        return capsys.readouterr().out

    table = await asyncio.to_thread(taskhub, "stats", "--since", "1h")
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["taskhub.ping"][1:5] == ["emails", "3", "0", "0"]
    assert rows["tests.stats_flaky"][1:5] == ["default", "0", "1", "1"]
    only = await asyncio.to_thread(taskhub, "stats", "--task", "taskhub.ping", "--json")
    assert [series["task"] for series in json.loads(only)["series"]] == ["taskhub.ping"]
    empty = await asyncio.to_thread(taskhub, "stats", "--queue", "nowhere")
    assert empty.strip() == "no finished jobs in that period"


@pytest.mark.parametrize("period", ["soon", "0m", "400d", "-5s"])
def test_taskhub_stats_refuses_a_bad_period(
    period: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats", "--since", period])
    assert exited.value.code == 2
    assert "--since" in capsys.readouterr().err


@blueprint.task(name="tests.stats_limited", rate_limit="2/s")
async def limited_task() -> None:
    pass


async def test_rescues_and_rate_limits_are_counted(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "UPDATE taskhub.stats_watermark SET rolled_up_to = now() - interval '1 second'"
    )
    # A job whose worker vanished mid-run: rescued (a WorkerLost attempt), then run again.
    lost = await defer.defer(conn, ping, {"message": "lost"}, queue="rescues")
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE id = %s", (lost,)
    )
    cursor = await conn.execute(
        QUERIES["rescue_stalled_jobs"], {"seconds": 60, "lost_limit": 3, "hooked_tasks": []}
    )
    assert [row["id"] for row in await cursor.fetchall()] == [lost]
    limited_ids = [await defer.defer(conn, limited_task, {}) for _ in range(5)]
    quick = settings.model_copy(update={"fetch_polling_interval": 0.1})
    async with running_worker(quick, db_url, blueprints=TEST_BLUEPRINTS):

        async def done() -> bool:
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs"
                " WHERE status = 'succeeded' AND id = ANY(%s)",
                ([lost, *limited_ids],),
            )
            row = await cursor.fetchone()
            return row is not None and row["n"] == 6

        await eventually(done, within=30)
    await roll_up(conn)
    cursor = await conn.execute(
        "SELECT task_name, sum(rescued) AS rescued, sum(rate_limited) AS rate_limited,"
        " sum(succeeded) AS succeeded FROM taskhub.task_stats"
        " WHERE task_name IN ('taskhub.ping', 'tests.stats_limited') GROUP BY task_name"
    )
    counted = {row["task_name"]: row for row in await cursor.fetchall()}
    assert (counted["taskhub.ping"]["rescued"], counted["taskhub.ping"]["succeeded"]) == (1, 1)
    assert counted["tests.stats_limited"]["succeeded"] == 5
    assert counted["tests.stats_limited"]["rate_limited"] >= 1, "5 jobs at 2/s waited"

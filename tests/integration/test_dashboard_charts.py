"""The overview charts over the rollup, and the queue depth samples taskhub.rollup_stats writes."""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET

from backend import defer
from backend.control import stats
from backend.dashboard import charts
from backend.db import DictConnection
from backend.queries import QUERIES
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.conftest import eventually
from tests.integration.conftest import running_worker

SVG = "{http://www.w3.org/2000/svg}"
UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 4, 10, 37, 30, tzinfo=UTC)


def at(hour: int, minute: int, day: int = 4) -> datetime.datetime:
    return datetime.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def buckets(**counts: int) -> list[int]:
    """A histogram over taskhub.stats_bounds() (17 buckets): ``b7=10`` puts 10 in bucket 7."""
    histogram = [0] * 17
    for name, count in counts.items():
        histogram[int(name.removeprefix("b"))] = count
    return histogram


def titles(chart: charts.Chart) -> dict[str, str]:
    """Each step's hover text, by its time (what precedes ': ')."""
    root = ET.fromstring(chart.svg)
    found = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("class") == "hover":
            when, _, values = "".join(rect.itertext()).partition(": ")
            found[when] = values
    return found


def is_empty(chart: charts.Chart) -> bool:
    return "no data in this range" in chart.svg


async def add_stats(
    conn: DictConnection,
    minute: datetime.datetime,
    task: str,
    queue: str,
    succeeded: int,
    failed: int,
    histogram: list[int],
) -> None:
    await conn.execute(
        "INSERT INTO taskhub.task_stats (minute, task_name, queue_name, succeeded, failed,"
        " duration_count, buckets) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (minute, task, queue, succeeded, failed, sum(histogram), histogram),
    )


async def add_depth(
    conn: DictConnection, minute: datetime.datetime, queue: str, waiting: int, running: int
) -> None:
    await conn.execute(
        "INSERT INTO taskhub.queue_depth (minute, queue_name, waiting, scheduled, running)"
        " VALUES (%s, %s, %s, 0, %s)",
        (minute, queue, waiting, running),
    )


async def fill(conn: DictConnection) -> None:
    # 10:20: two tasks; their durations only give a p95 of 4.75 s once summed (one task alone:
    # 0.975 s or 4.875 s). 10:21: successes only.
    await add_stats(conn, at(10, 20), "a", "q1", 6, 2, buckets(b7=10))
    await add_stats(conn, at(10, 20), "b", "q2", 4, 0, buckets(b9=10))
    await add_stats(conn, at(10, 21), "a", "q1", 3, 0, buckets(b10=3))
    # Three days ago (the week alone), and eight days ago (no range).
    await add_stats(conn, at(9, 5, day=1), "a", "q1", 120, 40, buckets(b3=160))
    await add_stats(conn, at(10, 0, day=26), "a", "q1", 1_000_000, 0, buckets(b3=1))
    await add_depth(conn, at(10, 30), "q1", 5, 1)
    await add_depth(conn, at(10, 30), "q2", 2, 2)
    await add_depth(conn, at(10, 31), "q1", 9, 0)
    await add_depth(conn, at(10, 31), "q2", 0, 0)
    await add_depth(conn, at(9, 10, day=1), "q1", 400, 7)
    await add_depth(conn, at(10, 0, day=26), "q1", 1_000_000, 0)


async def test_the_hour_shows_each_minute(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    await fill(conn)
    jobs, depth, failures, p95 = await charts.overview_charts(conn, "hour", now=NOW)
    assert [c.title for c in (jobs, depth, failures, p95)] == [
        "Jobs per minute",
        "Queue depth",
        "Failure rate",
        "p95 duration",
    ]
    assert titles(jobs)["2026-12-04 10:20 UTC"] == "succeeded 10/min, failed 2/min"
    assert titles(jobs)["2026-12-04 10:21 UTC"] == "succeeded 3/min, failed 0/min"
    assert titles(jobs)["2026-12-04 10:22 UTC"] == "succeeded 0/min, failed 0/min"
    assert len(titles(jobs)) == 60
    assert min(titles(jobs)) == "2026-12-04 09:38 UTC"
    assert max(titles(jobs)) == "2026-12-04 10:37 UTC"
    assert titles(depth)["2026-12-04 10:30 UTC"] == "waiting 7 jobs, running 3 jobs"
    assert titles(depth)["2026-12-04 10:31 UTC"] == "waiting 9 jobs, running 0 jobs"
    assert titles(depth)["2026-12-04 10:32 UTC"] == "waiting 0 jobs, running 0 jobs"
    assert titles(failures)["2026-12-04 10:20 UTC"] == "failure rate 16.67%"
    assert titles(failures)["2026-12-04 10:21 UTC"] == "failure rate 0%"
    assert titles(failures)["2026-12-04 10:22 UTC"] == "failure rate no data"
    assert titles(p95)["2026-12-04 10:20 UTC"] == "p95 4.75 s"
    assert titles(p95)["2026-12-04 10:21 UTC"] == "p95 9.75 s", "3 in 5-10 s"
    assert titles(p95)["2026-12-04 10:22 UTC"] == "p95 no data"
    assert "sampled each minute" in depth.subtitle
    assert not any(is_empty(chart) for chart in (jobs, depth, failures, p95))


async def test_the_day_averages_rates_and_peaks_depth_per_15_minutes(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    await fill(conn)
    jobs, depth, failures, p95 = await charts.overview_charts(conn, "day", now=NOW)
    step = "2026-12-04 10:15\u201310:30 UTC"
    assert len(titles(jobs)) == 96
    # 13 successes and 2 failures over the 15 minutes.
    assert titles(jobs)[step] == "succeeded 0.87/min, failed 0.13/min"
    assert titles(failures)[step] == "failure rate 13.33%"
    # 10 in 0.5-1 s, 10 in 2.5-5 s, 3 in 5-10 s: rank 21.85 of 23.
    assert titles(p95)[step] == "p95 8.08 s"
    # The current step, 10:30-10:45, holds 8 minutes so far; depth is each step's peak.
    assert titles(depth)["2026-12-04 10:30\u201310:45 UTC"] == "waiting 9 jobs, running 3 jobs"
    assert "peak of each 15 min" in depth.subtitle
    assert "averaged over each 15 min" in jobs.subtitle
    peaks = [int(text.split()[1]) for text in titles(depth).values()]
    assert max(peaks) == 9, "three days ago (400 waiting) is out of the day"


async def test_the_week_reaches_three_days_back_and_no_further(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    await fill(conn)
    jobs, depth, failures, _ = await charts.overview_charts(conn, "week", now=NOW)
    assert len(titles(jobs)) == 168
    assert titles(jobs)["2026-12-01 09:00\u201310:00 UTC"] == "succeeded 2/min, failed 0.67/min"
    assert titles(failures)["2026-12-01 09:00\u201310:00 UTC"] == "failure rate 25%"
    # The current hour has begun 38 minutes ago: its 13 successes are 0.34 a minute.
    assert titles(jobs)["2026-12-04 10:00\u201311:00 UTC"] == "succeeded 0.34/min, failed 0.05/min"
    assert titles(depth)["2026-12-01 09:00\u201310:00 UTC"] == "waiting 400 jobs, running 7 jobs"
    assert "1,000,000" not in jobs.svg + depth.svg, "eight days ago is out of the week"
    assert "Fri 00:00" in jobs.svg


async def test_an_empty_range_draws_empty_charts(conn: DictConnection) -> None:
    await conn.set_autocommit(True)
    await add_stats(conn, at(10, 0, day=2), "a", "q1", 5, 0, buckets(b3=5))
    hour = await charts.overview_charts(conn, "hour", now=NOW)
    assert [is_empty(chart) for chart in hour] == [True, True, True, True]
    assert [titles(chart) for chart in hour] == [{}, {}, {}, {}]
    week = await charts.overview_charts(conn, "week", now=NOW)
    assert [is_empty(chart) for chart in week] == [False, True, False, False]


async def test_the_rollup_samples_real_jobs_and_prunes_old_samples(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "INSERT INTO taskhub.queue_depth (minute, queue_name, waiting, scheduled, running)"
        " SELECT date_trunc('minute', now()) - make_interval(days => d), 'old', 1, 0, 0"
        "   FROM generate_series(1, 40) d"
    )
    async with conn.transaction():
        await defer.batch_defer(conn, ping, [{}, {}, {}], queue="emails")
        await defer.defer(conn, ping, {}, queue="emails", schedule_in=3600)
    # A worker on the maintenance queue alone: it runs taskhub.rollup_stats, not the pings.
    async with running_worker(settings, db_url, queues=["maintenance"]):

        async def sampled_and_pruned() -> bool:
            cursor = await conn.execute(
                "SELECT count(*) FILTER (WHERE queue_name = 'emails') AS emails,"
                " count(*) FILTER (WHERE queue_name = 'old') AS old FROM taskhub.queue_depth"
            )
            row = await cursor.fetchone()
            return row is not None and row["emails"] > 0 and row["old"] < 40

        await eventually(sampled_and_pruned, within=20)
    cursor = await conn.execute(
        "SELECT minute, waiting, scheduled, running FROM taskhub.queue_depth"
        " WHERE queue_name = 'emails'"
    )
    [row] = await cursor.fetchall()
    assert (row["waiting"], row["scheduled"], row["running"]) == (3, 1, 0)
    assert row["minute"].second == 0
    assert row["minute"].microsecond == 0
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM taskhub.queue_depth WHERE queue_name = 'old'"
    )
    kept = await cursor.fetchone()
    assert kept is not None
    assert kept["n"] == 29, "samples 30 days old and older are pruned with task_stats"

    minute = row["minute"].astimezone(UTC)
    _, depth, *_ = await charts.overview_charts(conn, "hour", now=minute)
    assert titles(depth)[f"{minute:%Y-%m-%d %H:%M} UTC"].startswith("waiting 3 jobs")


async def test_a_queue_emptied_within_the_minute_is_sampled_as_zero(conn: DictConnection) -> None:
    # One transaction: now(), and so the sampled minute, stays the same.
    async with conn.transaction():
        ids = await defer.batch_defer(conn, ping, [{}, {}], queue="reports")
        await defer.defer(conn, ping, {}, queue="emails")
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (ids[0],)
        )
        assert await stats.sample_queue_depth(conn) == 2
        cursor = await conn.execute(
            "SELECT queue_name, waiting, scheduled, running FROM taskhub.queue_depth"
            " ORDER BY queue_name"
        )
        first = [tuple(row.values()) for row in await cursor.fetchall()]
        assert first == [("emails", 1, 0, 0), ("reports", 1, 0, 1)]
        await conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = 'reports'")
        assert await stats.sample_queue_depth(conn) == 2
        cursor = await conn.execute(
            "SELECT queue_name, waiting, scheduled, running FROM taskhub.queue_depth"
            " ORDER BY queue_name"
        )
        second = [tuple(row.values()) for row in await cursor.fetchall()]
        assert second == [("emails", 1, 0, 0), ("reports", 0, 0, 0)]


async def test_depth_samples_are_pruned_in_batches_after_the_retention(
    conn: DictConnection,
) -> None:
    await conn.set_autocommit(True)
    await conn.execute(
        "INSERT INTO taskhub.queue_depth (minute, queue_name, waiting, scheduled, running)"
        " SELECT now() - make_interval(days => d), 'q', 1, 0, 0 FROM generate_series(1, 40) d"
    )
    assert await stats.prune_depth_batch(conn) == 11, "30 days old and older"
    assert await stats.prune_depth_batch(conn) == 0
    assert await stats.prune_depth_batch(conn, retention_days=10) == 20


async def test_steps_without_durations_count_jobs_and_leave_p95_a_gap(
    conn: DictConnection,
) -> None:
    await conn.set_autocommit(True)
    await add_stats(conn, at(10, 5), "a", "q1", 4, 1, [])  # e.g. rate limits: no durations
    await add_stats(conn, at(10, 6), "a", "q1", 2, 0, buckets(b10=2))
    jobs, _, failures, p95 = await charts.overview_charts(conn, "hour", now=NOW)
    assert titles(jobs)["2026-12-04 10:05 UTC"] == "succeeded 4/min, failed 1/min"
    assert titles(failures)["2026-12-04 10:05 UTC"] == "failure rate 20%"
    assert titles(p95)["2026-12-04 10:05 UTC"] == "p95 no data"
    assert titles(p95)["2026-12-04 10:06 UTC"] == "p95 9.75 s"


async def test_the_chart_query_sums_every_bucket_of_the_bounds(conn: DictConnection) -> None:
    """chart_outcomes names its buckets one by one: as many as taskhub.stats_bounds() makes."""
    cursor = await conn.execute("SELECT cardinality(taskhub.stats_bounds()) + 1 AS buckets")
    row = await cursor.fetchone()
    assert row is not None
    subscripts = re.findall(r"buckets\[(\d+)\]", QUERIES["chart_outcomes"])
    assert [int(found) for found in subscripts] == list(range(1, row["buckets"] + 1))

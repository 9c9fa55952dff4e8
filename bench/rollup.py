"""What the statistics rollup (``taskhub.rollup_stats``) costs, per attempt it counts.

The rollup runs off the worker's hot path, as a maintenance job once a minute: a worker's
per-job work is unchanged. This measures the job itself: on a fresh database, N no-op jobs run
through a real worker (``taskhub worker --processes 1``), then every rollup window due is
rolled up in its own transaction, as the job does, and timed; a second pass (nothing new)
shows the cost of a minute with no finished job.

Run from the repository root::

    .venv/bin/python bench/rollup.py --jobs 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from common_latency import DEFAULT_ADMIN_URL
from measure import fresh_database, migrate_taskhub, settle
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from backend import defer
from backend.control import stats
from backend.declare.apps import builtin_apps

TASKHUB = str(Path(sys.executable).parent / "taskhub")


async def run_jobs(url: str, count: int) -> float:
    """Defer ``count`` pings and let one worker process drain them; seconds taken."""
    ping = builtin_apps().task("taskhub.ping")
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        await conn.execute("UPDATE taskhub.stats_watermark SET rolled_up_to = now()")
        for start in range(0, count, 1000):
            await defer.batch_defer(
                conn, ping, [{"message": n} for n in range(start, start + 1000)]
            )
        await conn.commit()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TASKHUB_LOG_LEVEL": "WARNING",
        "TASKHUB_FETCH_POLLING_INTERVAL": "0.2",
    }
    began = time.monotonic()
    # Only the pings: the worker's own periodic rollup (queue maintenance) would run first.
    command = [TASKHUB, "worker", "--processes", "1", "--queues", "default"]
    worker = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            while True:
                cursor = await conn.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                )
                row = await cursor.fetchone()
                if row is not None and row[0] >= count:
                    break
                await asyncio.sleep(0.2)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), timeout=60)
    return time.monotonic() - began


async def roll_up_all(url: str) -> tuple[int, int, float]:
    """Every window due, one transaction each; attempts counted, windows, seconds."""
    attempts = windows = 0
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        began = time.perf_counter()
        while True:
            async with conn.transaction():
                done = await stats.rollup_window(conn)
            if done is None:
                break
            windows += 1
            attempts += done.attempts
            if done.caught_up:
                break
        return attempts, windows, time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    options = parser.parse_args()
    async with fresh_database(options.admin_url, "rollup") as url:
        await asyncio.to_thread(migrate_taskhub, url)
        drained = await run_jobs(url, options.jobs)
        await asyncio.sleep(1.5)  # the newest events are past the rollup's safety margin
        await settle(url)
        attempts, windows, seconds = await roll_up_all(url)
        idle_attempts, idle_windows, idle_seconds = await roll_up_all(url)
    print(f"jobs drained by one worker process: {options.jobs:,} in {drained:.1f} s")
    print(
        f"rollup: {attempts:,} attempts in {windows} window(s), {seconds * 1000:.1f} ms "
        f"({seconds / max(attempts, 1) * 1e6:.1f} us per attempt)"
    )
    print(
        f"rollup with nothing new: {idle_windows} window(s), {idle_seconds * 1000:.1f} ms "
        f"({idle_attempts} attempts)"
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Enqueue rates of taskhub and every PostgreSQL peer, through one harness, in one run.

For each system of bench/throughput.py (taskhub, bare procrastinate, pgqueuer, and the peers
added there), on a fresh database with the system's schema and no worker running:

- **one job per transaction**: ``--single-jobs`` calls of the system's ``enqueue_one`` on one
  autocommit connection (each its own transaction, committed when the call returns), after 50
  untimed ones;
- **batched**: ``--batch-jobs`` jobs in calls of ``--batch-size`` (1,000), each call in a
  transaction of its own, through the system's batch enqueue (``enqueue``), after one untimed
  call (a first 1,000-row INSERT on a fresh database took ten times as long as the next).

Each figure is all jobs over all time, taken in two halves in the order of the systems and then
reversed, so drift in the machine's load falls on all alike. Run from the repository root::

    bench/.venv/bin/python bench/enqueue_peers.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import measure as bench_measure
import throughput
from measure import DEFAULT_ADMIN_URL, log
from psycopg import AsyncConnection

WARMUP: Final = 50


@dataclass(frozen=True)
class EnqueuePeersOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    # Every PostgreSQL system of throughput.py (Celery publishes to Redis: its rate is in the
    # throughput section's timings).
    systems: tuple[str, ...] = tuple(name for name in throughput.SYSTEMS if name != "celery")
    single_jobs: int = 2_000
    batch_jobs: int = 20_000
    batch_size: int = 1_000


@dataclass
class SystemEnqueue:
    key: str
    name: str
    single_seconds: float = 0.0
    single_jobs: int = 0
    batch_seconds: float = 0.0
    batch_jobs: int = 0
    error: str | None = None

    @property
    def single_rate(self) -> float:
        return self.single_jobs / self.single_seconds if self.single_seconds else 0.0

    @property
    def batch_rate(self) -> float:
        return self.batch_jobs / self.batch_seconds if self.batch_seconds else 0.0


@dataclass(frozen=True)
class EnqueuePeersFigures:
    options: EnqueuePeersOptions
    rows: list[SystemEnqueue]
    load_before: str
    load_after: str
    notes: list[str] = field(default_factory=list)

    def best_peer(self, attribute: str) -> SystemEnqueue | None:
        peers = [row for row in self.rows if row.key != "taskhub" and row.error is None]
        return max(peers, key=lambda row: float(getattr(row, attribute)), default=None)

    def row(self, key: str) -> SystemEnqueue | None:
        return next((row for row in self.rows if row.key == key and row.error is None), None)


def chosen_systems(options: EnqueuePeersOptions) -> list[throughput.PostgresSystem]:
    systems: list[throughput.PostgresSystem] = []
    seen: set[str] = set()
    for name in options.systems:
        for system in throughput.postgres_systems(
            name, throughput.taskhub_default_concurrency(), throughput.DEFAULT_PEER_CONCURRENCY
        ):
            # pgqueuer's two configurations differ in their workers only: enqueue once.
            family = system.key.split("_")[0]
            if family not in seen:
                seen.add(family)
                systems.append(system)
    return systems


async def single_half(system: Any, conn: AsyncConnection[Any], start: int, count: int) -> float:
    begin = time.perf_counter()
    for i in range(start, start + count):
        await system.enqueue_one(conn, {"message": i})
    return time.perf_counter() - begin


async def batch_half(
    system: throughput.PostgresSystem, conn: AsyncConnection[Any], count: int, size: int
) -> float:
    begin = time.perf_counter()
    for _ in range(count // size):
        async with conn.transaction():
            await system.enqueue(conn, size)
    return time.perf_counter() - begin


async def measure(options: EnqueuePeersOptions) -> EnqueuePeersFigures:
    load_before = (await asyncio.to_thread(bench_measure.quiet_check, warn=False)).describe()
    systems = chosen_systems(options)
    rows = {system.key: SystemEnqueue(system.key, system.name) for system in systems}
    opened: list[tuple[throughput.PostgresSystem, AsyncConnection[Any], str]] = []
    try:
        for system in systems:
            name = f"enqueue_{system.key}"
            try:
                url = await bench_measure.create_database(options.admin_url, name)
                await system.install(url)
                conn = await AsyncConnection.connect(url, autocommit=True)
                if not hasattr(system, "enqueue_one"):
                    raise RuntimeError(f"{system.key} has no enqueue_one")
                await single_half(system, conn, -WARMUP, WARMUP)
                await batch_half(system, conn, options.batch_size, options.batch_size)
                opened.append((system, conn, name))
            except Exception as exc:  # a peer that cannot run is a row that says why
                rows[system.key].error = f"{type(exc).__name__}: {exc}"
                log(f"enqueue_peers: {system.key}: {rows[system.key].error}")
        half_single = options.single_jobs // 2
        half_batch = options.batch_jobs // 2
        for order in (opened, list(reversed(opened))):
            for system, conn, _ in order:
                row = rows[system.key]
                log(f"enqueue_peers: {system.key}, one per transaction")
                row.single_seconds += await single_half(system, conn, row.single_jobs, half_single)
                row.single_jobs += half_single
                log(f"enqueue_peers: {system.key}, batches of {options.batch_size:,}")
                row.batch_seconds += await batch_half(system, conn, half_batch, options.batch_size)
                row.batch_jobs += half_batch - half_batch % options.batch_size
    finally:
        for _, conn, name in opened:
            await conn.close()
            await bench_measure.drop_database(options.admin_url, name)
    load_after = (await asyncio.to_thread(bench_measure.quiet_check, warn=False)).describe()
    return EnqueuePeersFigures(options, list(rows.values()), load_before, load_after)


def render(figures: EnqueuePeersFigures) -> str:
    o = figures.options
    lines = [
        "## Enqueue: taskhub and its peers",
        "",
        f"One harness for every PostgreSQL system (`bench/enqueue_peers.py`), each on a fresh "
        f"database with its schema and no worker: {o.single_jobs:,} jobs one per transaction "
        f"(the system's usual single enqueue on one autocommit connection, each call committed "
        f"when it returns) and {o.batch_jobs:,} in calls of {o.batch_size:,} (its batch enqueue, "
        f"a transaction per call), in two halves, the systems' order reversed for the second; "
        f"{figures.load_before} before, {figures.load_after} after.",
        "",
        f"| system | 1 job per transaction (jobs/s) | batches of {o.batch_size:,} (jobs/s) |",
        "|---|---:|---:|",
    ]
    for row in figures.rows:
        if row.error:
            lines.append(f"| {row.name} | not run: {row.error} | |")
        else:
            lines.append(f"| {row.name} | {row.single_rate:,.0f} | {row.batch_rate:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--systems", type=throughput.csv_of(str), default=None)
    parser.add_argument("--single-jobs", type=int, default=2_000)
    parser.add_argument("--batch-jobs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    ns = parser.parse_args(argv)
    options = EnqueuePeersOptions(
        admin_url=ns.database_url,
        single_jobs=ns.single_jobs,
        batch_jobs=ns.batch_jobs,
        batch_size=ns.batch_size,
        **({"systems": tuple(ns.systems)} if ns.systems else {}),
    )
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

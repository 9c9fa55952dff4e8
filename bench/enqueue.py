"""Enqueue rates of taskhub next to bare procrastinate, and a defer's cost in a business txn.

For each flavour, on a fresh database of its own:

1. one job per transaction, one after the other: (a) through a pool, the API's way; (b) on one
   held autocommit connection; (c) from K concurrent tasks (K = 4, 8 by default), like
   concurrent web requests, through the pool (their commits can share WAL flushes);
2. batched: transactions of 1,000 jobs.

Then, for taskhub: T1 = a one-row business transaction (BEGIN; INSERT an order; COMMIT) and
T2 = the same plus ``defer.defer(conn, ping, {"message": order_id})``, on one held connection,
alternated in blocks; plain, and in psycopg pipeline mode.

Run from the repository root::

    .venv/bin/python bench/enqueue.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import procrastinate
from common_latency import (
    DEFAULT_ADMIN_URL,
    fresh_database,
    load_average,
    markdown_table,
    progress,
    settle,
)
from procrastinate.schema import SchemaManager
from procrastinate.types import JSONDict
from psycopg import AsyncConnection

from backend import defer
from backend.db import create_pool
from backend.process import migrate
from backend.settings import Settings, load_settings
from backend.tasks.builtin import ping

FLAVOURS = ("taskhub", "procrastinate")
WARMUP = 20


@dataclass(frozen=True)
class EnqueueOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    #: Jobs for each one-per-transaction figure (sequential and concurrent).
    single_jobs: int = 2_000
    concurrency: tuple[int, ...] = (4, 8)
    batch_jobs: int = 20_000
    batch_size: int = 1_000
    #: Timed repetitions of each business-transaction variant.
    business_reps: int = 2_000
    business_block: int = 25
    business_warmup: int = 200
    flavours: tuple[str, ...] = FLAVOURS


@dataclass(frozen=True)
class FlavourEnqueue:
    """Jobs per second, one flavour."""

    flavour: str
    single_pool: float
    single_held: float
    #: One autocommit statement per job on a held connection: the defer is its transaction.
    single_statement: float
    concurrent: dict[int, float]
    batched: float


@dataclass(frozen=True)
class TxnVariant:
    """Per-transaction times of one business-transaction variant (ms)."""

    key: str
    description: str
    median_ms: float
    mean_ms: float
    p90_ms: float
    count: int


@dataclass(frozen=True)
class EnqueueFigures:
    options: EnqueueOptions
    flavours: list[FlavourEnqueue]
    business: list[TxnVariant]
    load_before: str
    load_after: str

    def variant(self, key: str) -> TxnVariant | None:
        return next((v for v in self.business if v.key == key), None)

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.variant(numerator), self.variant(denominator)
        if top is None or bottom is None or not bottom.median_ms:
            return None
        return top.median_ms / bottom.median_ms


# --------------------------------------------------------------------------- flavours


class Flavour:
    """What the enqueue figures need from one side of the comparison."""

    name: str

    def opened(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def defer_one(self, i: int) -> None:
        """One job in a transaction of its own, the flavour's usual way."""
        raise NotImplementedError

    async def defer_on(self, conn: AsyncConnection[Any], i: int) -> None:
        """One job on ``conn``, inside the transaction the caller has open."""
        raise NotImplementedError

    async def defer_batch(self, start: int, count: int) -> None:
        raise NotImplementedError


class TaskhubFlavour(Flavour):
    """taskhub's paths: ``defer.defer`` / ``defer.batch_defer`` in the caller's transaction."""

    name = "taskhub"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        # The pool the API defers through (backend.api.deps: one transaction per request).
        self.pool = create_pool(url, settings)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, self.url)
        async with self.pool:
            yield

    async def defer_one(self, i: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await defer.defer(conn, ping, {"message": i})

    async def defer_on(self, conn: AsyncConnection[Any], i: int) -> None:
        await defer.defer(conn, ping, {"message": i})

    async def defer_batch(self, start: int, count: int) -> None:
        many = [{"message": i} for i in range(start, start + count)]
        async with self.pool.connection() as conn, conn.transaction():
            await defer.batch_defer(conn, ping, many)


async def noop(message: Any = None, sleep: float = 0) -> Any:
    """The bare-procrastinate twin of ``taskhub.ping`` (never run here)."""
    return message


class ProcrastinateFlavour(Flavour):
    """Stock procrastinate: ``defer_async``, ``configure(connection=)``, ``batch_defer_async``."""

    name = "procrastinate"

    def __init__(self, url: str, settings: Settings) -> None:
        connector = procrastinate.PsycopgConnector(
            conninfo=url, min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        self.app = procrastinate.App(connector=connector)
        self.task = self.app.task(name="bench.noop")(noop)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        async with self.app.open_async():
            await SchemaManager(self.app.connector).apply_schema_async()
            yield

    async def defer_one(self, i: int) -> None:
        await self.task.defer_async(message=i, sleep=0)

    async def defer_on(self, conn: AsyncConnection[Any], i: int) -> None:
        await self.task.configure(connection=conn).defer_async(message=i, sleep=0)

    async def defer_batch(self, start: int, count: int) -> None:
        many: list[JSONDict] = [{"message": i, "sleep": 0} for i in range(start, start + count)]
        await self.task.batch_defer_async(*many)


# --------------------------------------------------------------------------- job rates


async def time_sequential(flavour: Flavour, count: int) -> float:
    """Seconds for ``count`` defers one after the other, the flavour's usual way."""
    for i in range(WARMUP):
        await flavour.defer_one(-1 - i)
    started = time.perf_counter()
    for i in range(count):
        await flavour.defer_one(i)
    return time.perf_counter() - started


async def time_held(flavour: Flavour, url: str, count: int) -> float:
    """Seconds for ``count`` transactions of one defer on one held autocommit connection."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(WARMUP):
            async with conn.transaction():
                await flavour.defer_on(conn, -1 - i)
        started = time.perf_counter()
        for i in range(count):
            async with conn.transaction():
                await flavour.defer_on(conn, i)
        return time.perf_counter() - started


async def time_statement(flavour: Flavour, url: str, count: int) -> float:
    """Seconds for ``count`` defers on one held autocommit connection with no transaction
    block: each defer is one statement, and that statement its own transaction (no BEGIN,
    no COMMIT round trips)."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(WARMUP):
            await flavour.defer_on(conn, -1 - i)
        started = time.perf_counter()
        for i in range(count):
            await flavour.defer_on(conn, i)
        return time.perf_counter() - started


async def time_concurrent(flavour: Flavour, count: int, tasks: int) -> float:
    """Seconds for ``tasks`` concurrent callers to share ``count`` one-job transactions."""

    async def run(total: int) -> float:
        remaining = total

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await flavour.defer_one(remaining)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(tasks)))
        return time.perf_counter() - started

    await run(WARMUP * tasks)  # also grows the pool to ``tasks`` connections
    return await run(count)


async def time_batched(flavour: Flavour, count: int, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        await flavour.defer_batch(start, min(batch_size, count - start))
    return time.perf_counter() - started


async def measure_rates(options: EnqueueOptions) -> list[FlavourEnqueue]:
    """Every rate for every flavour, each on a fresh database of its own, all open at once.

    Each figure is taken in two halves, in the order A B B A across the flavours, and the rate
    is all jobs over all time: drift in the machine's load (other processes, checkpoints)
    then falls on both flavours alike instead of on whichever ran second.
    """
    names = list(options.flavours)
    async with contextlib.AsyncExitStack() as stack:
        flavours: dict[str, Flavour] = {}
        urls: dict[str, str] = {}
        observers: dict[str, AsyncConnection[Any]] = {}
        for name in names:
            url = await stack.enter_async_context(
                fresh_database(options.admin_url, f"enqueue_{name}")
            )
            settings = load_settings(database_url=url)
            flavour: Flavour = (
                TaskhubFlavour(url, settings)
                if name == "taskhub"
                else ProcrastinateFlavour(url, settings)
            )
            await stack.enter_async_context(flavour.opened())
            observers[name] = await stack.enter_async_context(
                await AsyncConnection.connect(url, autocommit=True)
            )
            flavours[name], urls[name] = flavour, url

        half = max(1, options.single_jobs // 2)
        batch_half = max(1, options.batch_jobs // 2)

        async def abba(
            label: str, count: int, timed: Callable[[str], Awaitable[float]]
        ) -> dict[str, float]:
            seconds = dict.fromkeys(names, 0.0)
            for order in (names, names[::-1]):
                for name in order:
                    await settle(observers[name])
                    seconds[name] += await timed(name)
            rates = {name: 2 * count / seconds[name] for name in names}
            progress(
                "enqueue", f"{label}: " + ", ".join(f"{n} {r:,.0f}/s" for n, r in rates.items())
            )
            return rates

        pool = await abba(
            "1 job per transaction, pool", half, lambda n: time_sequential(flavours[n], half)
        )
        held = await abba(
            "1 job per transaction, held connection",
            half,
            lambda n: time_held(flavours[n], urls[n], half),
        )
        statement = await abba(
            "1 job per transaction, one autocommit statement",
            half,
            lambda n: time_statement(flavours[n], urls[n], half),
        )
        concurrent: dict[int, dict[str, float]] = {}

        async def concurrent_for(name: str, *, tasks: int) -> float:
            return await time_concurrent(flavours[name], half, tasks)

        for tasks in options.concurrency:
            concurrent[tasks] = await abba(
                f"1 job per transaction, {tasks} callers",
                half,
                functools.partial(concurrent_for, tasks=tasks),
            )
        for name in names:
            await observers[name].execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
        batched = await abba(
            f"batches of {options.batch_size:,}",
            batch_half,
            lambda n: time_batched(flavours[n], batch_half, options.batch_size),
        )
    return [
        FlavourEnqueue(
            name,
            pool[name],
            held[name],
            statement[name],
            {tasks: concurrent[tasks][name] for tasks in options.concurrency},
            batched[name],
        )
        for name in names
    ]


# --------------------------------------------------------------------------- business txn

ORDERS_TABLE = """
CREATE TABLE bench_orders (
    id bigserial PRIMARY KEY,
    customer text,
    amount numeric,
    created_at timestamptz DEFAULT now()
)
"""
INSERT_ORDER = "INSERT INTO bench_orders (customer, amount) VALUES (%s, %s)"
INSERT_ORDER_RETURNING = INSERT_ORDER + " RETURNING id"

Txn = Callable[[AsyncConnection[Any], int], Awaitable[None]]


async def t1_plain(conn: AsyncConnection[Any], i: int) -> None:
    async with conn.transaction():
        await conn.execute(INSERT_ORDER, (f"customer {i}", i))


async def t2_plain(conn: AsyncConnection[Any], i: int) -> None:
    async with conn.transaction():
        cursor = await conn.execute(INSERT_ORDER_RETURNING, (f"customer {i}", i))
        row = await cursor.fetchone()
        assert row is not None
        await defer.defer(conn, ping, {"message": row[0]})


async def t1_pipeline(conn: AsyncConnection[Any], i: int) -> None:
    async with conn.pipeline():
        await t1_plain(conn, i)


async def t2_pipeline(conn: AsyncConnection[Any], i: int) -> None:
    async with conn.pipeline():
        await t2_plain(conn, i)


@dataclass(frozen=True)
class Variant:
    key: str
    description: str
    txn: Txn
    #: Run the whole block of transactions inside one ``conn.pipeline()``: a connection kept
    #: in pipeline mode, as an application holding one could.
    held_pipeline: bool = False


VARIANTS: list[Variant] = [
    Variant("T1", "BEGIN; INSERT order; COMMIT (3 round trips)", t1_plain),
    Variant(
        "T2",
        "BEGIN; INSERT order RETURNING id; `defer.defer(conn, ping, {message: id})`; COMMIT "
        "(4 round trips)",
        t2_plain,
    ),
    Variant(
        "T1p",
        "T1 inside its own `conn.pipeline()`: BEGIN, INSERT, COMMIT go out together; leaving "
        "the pipeline syncs once more",
        t1_pipeline,
    ),
    Variant(
        "T2p",
        "T2 inside its own `conn.pipeline()`: reading the id and the defer's result each "
        "wait for the server, then COMMIT, then the pipeline's exit",
        t2_pipeline,
    ),
    Variant(
        "T1pp",
        "T1 on a connection kept in pipeline mode (one `conn.pipeline()` around many "
        "transactions): 1 round trip",
        t1_plain,
        held_pipeline=True,
    ),
    Variant(
        "T2pp",
        "T2 on a connection kept in pipeline mode: BEGIN+INSERT, the defer, COMMIT (3 round trips)",
        t2_plain,
        held_pipeline=True,
    ),
]


async def run_block(
    conn: AsyncConnection[Any], variant: Variant, first: int, count: int, into: list[float] | None
) -> None:
    """``count`` transactions of ``variant``, each timed into ``into`` (when given)."""
    async with conn.pipeline() if variant.held_pipeline else contextlib.nullcontext():
        for i in range(first, first + count):
            started = time.perf_counter()
            await variant.txn(conn, i)
            if into is not None:
                into.append((time.perf_counter() - started) * 1000)


async def measure_business(options: EnqueueOptions) -> list[TxnVariant]:
    """Each variant timed per transaction on one held connection, in blocks whose order
    rotates every round, so drift (checkpoints, other load, table growth) hits all alike."""
    times: dict[str, list[float]] = {v.key: [] for v in VARIANTS}
    block = options.business_block
    async with fresh_database(options.admin_url, "enqueue_business") as url:
        await asyncio.to_thread(migrate.upgrade, url)
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(ORDERS_TABLE)
            counter = 0
            for _ in range(-(-options.business_warmup // block)):
                for variant in VARIANTS:
                    await run_block(conn, variant, counter, block, None)
                    counter += block
            await settle(conn)
            rounds = -(-options.business_reps // block)
            for r in range(rounds):
                shift = r % len(VARIANTS)
                for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                    await run_block(conn, variant, counter, block, times[variant.key])
                    counter += block
                if (r + 1) % max(1, rounds // 5) == 0:
                    progress("business", f"round {r + 1}/{rounds}")
    results: list[TxnVariant] = []
    for variant in VARIANTS:
        values = times[variant.key]
        results.append(
            TxnVariant(
                key=variant.key,
                description=variant.description,
                median_ms=statistics.median(values),
                mean_ms=statistics.fmean(values),
                p90_ms=statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0],
                count=len(values),
            )
        )
    t1, t2 = results[0].median_ms, results[1].median_ms
    progress("business", f"T1 {t1:.3f} ms, T2 {t2:.3f} ms, T2/T1 {t2 / t1:.2f}")
    return results


async def measure(options: EnqueueOptions) -> EnqueueFigures:
    """All enqueue figures: each flavour on its own database, then the business transaction."""
    load_before = load_average()
    flavours = await measure_rates(options) if options.flavours else []
    business = await measure_business(options) if options.business_reps > 0 else []
    return EnqueueFigures(options, flavours, business, load_before, load_average())


# --------------------------------------------------------------------------- report


def render(figures: EnqueueFigures) -> str:
    """The figures as a markdown section."""
    o = figures.options
    names = [f.flavour for f in figures.flavours]
    rows: list[list[str]] = [
        [
            "1 job per transaction, pool (the API's path)",
            *[f"{f.single_pool:,.0f}" for f in figures.flavours],
        ],
        [
            "1 job per transaction, held connection (BEGIN, defer, COMMIT)",
            *[f"{f.single_held:,.0f}" for f in figures.flavours],
        ],
        [
            "1 job per transaction, held connection, the defer alone (autocommit statement)",
            *[f"{f.single_statement:,.0f}" for f in figures.flavours],
        ],
    ]
    for tasks in o.concurrency:
        rows.append(
            [
                f"1 job per transaction, {tasks} concurrent callers (pool)",
                *[f"{f.concurrent[tasks]:,.0f}" for f in figures.flavours],
            ]
        )
    rows.append([f"batches of {o.batch_size:,}", *[f"{f.batched:,.0f}" for f in figures.flavours]])
    if len(figures.flavours) == 2 and names[1] == "procrastinate":
        a, b = figures.flavours
        pairs = [
            (a.single_pool, b.single_pool),
            (a.single_held, b.single_held),
            (a.single_statement, b.single_statement),
            *[(a.concurrent[t], b.concurrent[t]) for t in o.concurrency],
            (a.batched, b.batched),
        ]
        for row, (x, y) in zip(rows, pairs, strict=True):
            row.append(f"{x / y:.2f}x")
        names.append(f"{names[0]} / procrastinate")
    parts = [
        "## Enqueue",
        "",
        f"Jobs per second; {o.single_jobs:,} jobs per one-per-transaction figure, "
        f"{o.batch_jobs:,} batched; {figures.load_before} before, {figures.load_after} after.",
        "",
        markdown_table(["enqueue (jobs/s)", *names], rows),
    ]
    if figures.business:
        brows = [
            [
                f"{v.key}: {v.description}",
                f"{v.median_ms:.3f}",
                f"{v.mean_ms:.3f}",
                f"{v.p90_ms:.3f}",
            ]
            for v in figures.business
        ]
        ratios = [
            ("T2 / T1 (plain; the headline figure, goal <= 1.3)", figures.ratio("T2", "T1")),
            (
                "T2p / T1 (pipelined defer vs plain business transaction)",
                figures.ratio("T2p", "T1"),
            ),
            ("T2p / T1p (each in its own pipeline)", figures.ratio("T2p", "T1p")),
            ("T2pp / T1 (connection kept in pipeline mode vs plain)", figures.ratio("T2pp", "T1")),
            (
                "T2pp / T1pp (both on a connection kept in pipeline mode)",
                figures.ratio("T2pp", "T1pp"),
            ),
        ]
        parts += [
            "",
            "### A defer inside a one-row business transaction",
            "",
            f"{o.business_reps:,} timed transactions per variant on one held autocommit "
            f"connection, after {o.business_warmup} warm-ups each, in blocks of "
            f"{o.business_block} whose order rotates every round.",
            "",
            markdown_table(["transaction", "median (ms)", "mean (ms)", "p90 (ms)"], brows),
            "",
            markdown_table(
                ["ratio of medians", "value"],
                [[label, "n/a" if value is None else f"{value:.2f}"] for label, value in ratios],
            ),
        ]
    return "\n".join(parts)


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None = None) -> EnqueueOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--single-jobs", type=int, default=2_000)
    parser.add_argument("--concurrency", type=_ints, default=(4, 8), help="e.g. 4,8")
    parser.add_argument("--batch-jobs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument(
        "--business-reps", type=int, default=2_000, help="per variant; 0 skips the business part"
    )
    parser.add_argument("--business-block", type=int, default=25)
    parser.add_argument(
        "--flavours", default=",".join(FLAVOURS), help="comma-separated: taskhub,procrastinate"
    )
    ns = parser.parse_args(argv)
    flavours = tuple(f for f in ns.flavours.split(",") if f)
    if any(f not in FLAVOURS for f in flavours):
        parser.error(f"--flavours: choose among {', '.join(FLAVOURS)}")
    if min(ns.single_jobs, ns.batch_jobs, ns.batch_size, ns.business_block) < 1:
        parser.error("job counts, batch size and block must be >= 1")
    return EnqueueOptions(
        admin_url=ns.database_url,
        single_jobs=ns.single_jobs,
        concurrency=ns.concurrency,
        batch_jobs=ns.batch_jobs,
        batch_size=ns.batch_size,
        business_reps=ns.business_reps,
        business_block=ns.business_block,
        flavours=flavours,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Steady state: pickup latency and backlog of taskhub and its peers under a constant arrival rate.

For each system ``throughput.py`` knows (taskhub, bare procrastinate, pgqueuer at concurrency
10 and with its defaults, Celery, and whatever peers ``throughput.SYSTEMS`` /
``throughput.postgres_systems()`` add) and each worker process count (1 by default):

1. the system's drain rate R: given (``--rates key=R``), else measured by a quick drain of
   ``--calibrate-jobs`` jobs with ``throughput.py``'s own measurement (fresh database);
2. on a fresh database (Celery: the flushed Redis database), the workers started by the
   system's CLI as ``throughput.py`` starts them and seen ready and idle;
3. for each load (50% and 90% of R), ``--seconds`` of open-loop arrivals: job i is due at
   ``t0 + i / rate`` whatever happened to the jobs before it; several deferring connections
   share the schedule (each takes the next due job), each job deferred one per transaction the
   system's usual way (``enqueue_one``: taskhub ``defer.defer`` on an autocommit connection,
   procrastinate ``defer_async``, pgqueuer ``Queries.enqueue`` of one job, Celery ``delay()``)
   with ``probe``/``token`` in its arguments; the task's first action is a UDP datagram
   ``"<token> <time.monotonic()>"`` to a collector in this process;
4. pickup latency = the task's start - the time the defer call returned (its commit), and -
   the time before the defer call; the backlog (jobs running or due) sampled every second;
   after the window, until every job has started (or a timeout): jobs never seen started are
   lost probes.

Run from the repository root, after ``bench/setup.sh``::

    bench/.venv/bin/python bench/steady.py --seconds 60

``bench/README.md`` says how each figure is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import throughput
from common_latency import Percentiles, markdown_table
from measure import (
    DEFAULT_ADMIN_URL,
    backend_pid,
    describe_environment,
    fetch_value,
    fresh_database,
    log,
    percentile,
    postgres_cpu_seconds,
    postmaster_pid,
    quiet_check,
    render_environment,
    settle,
)
from psycopg import AsyncConnection

DEFAULT_SECONDS: Final = 60.0
DEFAULT_FRACTIONS: Final = (0.5, 0.9)
DEFAULT_CALIBRATE_JOBS: Final = 5_000
#: Jobs/s per deferring connection when --deferrers is not given. One defer is a commit (a
#: WAL fsync here); a connection managed about 2,000/s alone on 2 cores, and more than 4 did
#: not add to it (each job's NOTIFY serialises commits), so the count stays small.
PER_DEFERRER: Final = 500
MAX_DEFERRERS: Final = 8
#: The backlog is "flat" when its mean over the last FLAT_WINDOW seconds stays below
#: max(2 x the first FLAT_WINDOW seconds' mean, that mean + FLAT_SLACK jobs).
FLAT_WINDOW: Final = 10.0
FLAT_SLACK: Final = 100
#: Below this share of the target rate, the enqueuing side was the limit, not the system.
ACHIEVED_SHARE: Final = 0.97
UDP_BUFFER: Final = 16 * 1024 * 1024
#: After the window, wait for the remaining starts while one comes at least every DRAIN_STALL
#: seconds, DRAIN_CAP seconds at most; what has not started by then is a lost probe.
DRAIN_STALL: Final = 15.0
DRAIN_CAP: Final = 600.0
SO_RCVBUFFORCE: Final = int(getattr(socket, "SO_RCVBUFFORCE", 33))  # Linux


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Phase:
    """One system, process count and load: ``seconds`` of arrivals at ``target`` jobs/s."""

    system: str  # the system's key (taskhub, pgqueuer_c10, ...)
    config: str
    processes: int
    rate: float  # R, jobs/s
    rate_source: str  # "given" or "calibrated"
    fraction: float
    target: float = 0.0  # jobs/s
    deferrers: int = 0
    sent: int = 0
    achieved: float = 0.0  # jobs/s: sent / (last commit - first due time)
    send_lag_p99_ms: float = 0.0  # how late the defer calls started against their schedule
    client_cpu: float = 0.0  # this process's CPU over the window, share of one core
    worker_cpu: float = 0.0  # the worker processes', share of one core
    store_cpu: float | None = None  # PostgreSQL's (every server process) or Redis's
    from_commit: Percentiles = field(default_factory=lambda: Percentiles.of([]))
    from_before: Percentiles = field(default_factory=lambda: Percentiles.of([]))
    defer_call_p50_ms: float = 0.0
    backlog: tuple[int, ...] = ()  # one sample a second over the window
    backlog_first: float = 0.0  # mean of the first FLAT_WINDOW seconds
    backlog_last: float = 0.0
    started: int = 0  # distinct tokens seen started
    lost: int = 0  # deferred, never seen started
    duplicates: int = 0  # a token seen started more than once
    drain_seconds: float = 0.0  # after the window, until every job started (or the timeout)
    error: str | None = None

    @property
    def flat(self) -> bool:
        bound = max(2 * self.backlog_first, self.backlog_first + FLAT_SLACK)
        return self.backlog_last < bound

    @property
    def client_limited(self) -> bool:
        return self.achieved < ACHIEVED_SHARE * self.target


@dataclass(frozen=True)
class SteadyOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    seconds: float = DEFAULT_SECONDS
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    processes: tuple[int, ...] = (1,)
    rates: dict[str, float] = field(default_factory=dict)
    calibrate_jobs: int = DEFAULT_CALIBRATE_JOBS
    systems: tuple[str, ...] = ()  # keys or names; empty: every system
    deferrers: int | None = None  # None: ceil(target / PER_DEFERRER)
    concurrency: int | None = None  # taskhub's; None: its default
    peer_concurrency: int = throughput.DEFAULT_PEER_CONCURRENCY
    redis_url: str = throughput.DEFAULT_REDIS_URL


@dataclass(frozen=True)
class SteadyFigures:
    options: SteadyOptions
    phases: list[Phase]
    environment: dict[str, str]
    quiet: str
    elapsed: float


# --------------------------------------------------------------------------- probes


class Collector(asyncio.DatagramProtocol):
    """Start times of the probes, by token (the first one; repeats are counted)."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.duplicates: dict[int, int] = {}
        self.malformed = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            token_text, moment = data.decode().split()
            token, at = int(token_text), float(moment)
        except ValueError:
            self.malformed += 1
            return
        if token in self.started:
            self.duplicates[token] = self.duplicates.get(token, 0) + 1
        else:
            self.started[token] = at


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    """A UDP collector on 127.0.0.1 (a free port, a big receive buffer); yields it and its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN (root here)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_BUFFER)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < UDP_BUFFER:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Collector, sock=sock)
    try:
        yield protocol, port
    finally:
        transport.close()


# --------------------------------------------------------------------------- systems


@runtime_checkable
class SteadySystem(throughput.PostgresSystem, Protocol):
    """A PostgreSQL system of throughput.py with the one-job enqueue of the shared interface."""

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None: ...


#: (before the defer call, after it returned), monotonic seconds.
Send = Callable[[dict[str, Any]], Awaitable[tuple[float, float]]]


class Target(Protocol):
    """What a phase needs from a running system: senders, the backlog, CPU counters."""

    workers: throughput.Workers
    store: str

    def store_cpu(self) -> float | None:
        """CPU seconds of the store so far: the PostgreSQL server's, or Redis's."""
        ...

    async def open(self, count: int) -> None:
        """Ready ``count`` senders."""
        ...

    def senders(self, count: int) -> list[Send]: ...

    async def backlog(self) -> int: ...


class PostgresTarget:
    """A PostgreSQL system's workers running on ``url``; deferring connections opened on demand."""

    store = "PostgreSQL"

    def __init__(
        self,
        system: SteadySystem,
        url: str,
        observer: AsyncConnection[Any],
        workers: throughput.Workers,
        postmaster: int | None,
    ) -> None:
        self.system = system
        self.url = url
        self.observer = observer
        self.workers = workers
        self.postmaster = postmaster
        self.connections: list[AsyncConnection[Any]] = []

    def store_cpu(self) -> float | None:
        return postgres_cpu_seconds(self.postmaster)

    async def open(self, count: int) -> None:
        while len(self.connections) < count:
            self.connections.append(await AsyncConnection.connect(self.url, autocommit=True))

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()
        self.connections.clear()

    def senders(self, count: int) -> list[Send]:
        def make(conn: AsyncConnection[Any]) -> Send:
            async def send(args: dict[str, Any]) -> tuple[float, float]:
                before = time.monotonic()
                await self.system.enqueue_one(conn, args)
                return before, time.monotonic()

            return send

        return [make(conn) for conn in self.connections[:count]]

    async def backlog(self) -> int:
        return int(await fetch_value(self.observer, self.system.busy_query()) or 0)


class CeleryTarget:
    """Celery on Redis: ``delay()`` from threads; backlog = published - runs counted in Redis."""

    store = "Redis"

    def __init__(self, task: Any, client: Any, done_key: str, workers: throughput.Workers) -> None:
        self.task = task
        self.client = client
        self.done_key = done_key
        self.workers = workers
        self.published = 0

    def store_cpu(self) -> float | None:
        return throughput.redis_cpu_seconds(self.client)

    async def open(self, count: int) -> None:
        pass  # Celery's producer pool connects on demand

    def senders(self, count: int) -> list[Send]:
        def timed_delay(args: dict[str, Any]) -> tuple[float, float]:
            before = time.monotonic()
            self.task.delay(args)
            return before, time.monotonic()

        async def send(args: dict[str, Any]) -> tuple[float, float]:
            times = await asyncio.to_thread(timed_delay, args)
            self.published += 1
            return times

        return [send] * count

    async def backlog(self) -> int:
        done = await asyncio.to_thread(self.client.get, self.done_key)
        return self.published - int(done or 0)


# --------------------------------------------------------------------------- one phase


@dataclass
class Load:
    """What the deferring side did in one window."""

    sent: dict[int, tuple[float, float]] = field(default_factory=dict)  # token -> times
    lags: list[float] = field(default_factory=list)
    first_due: float = 0.0
    last_commit: float = 0.0


async def open_loop(
    senders: Sequence[Send], rate: float, seconds: float, port: int, tokens: Sequence[int]
) -> Load:
    """Job i is due at t0 + i / rate, for ``seconds``; each sender takes the next due job.
    Jobs still unsent when the window ends (the deferring side fell behind) are not sent."""
    load = Load()
    count = min(len(tokens), math.ceil(rate * seconds))
    slots = iter(range(count))
    t0 = time.monotonic() + 0.05
    load.first_due = t0

    end = t0 + seconds

    async def deferrer(send: Send) -> None:
        for i in slots:  # a shared iterator: each slot goes to one deferrer
            due = t0 + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif time.monotonic() > end:
                return  # behind schedule at the window's end: the rest is not sent
            load.lags.append(time.monotonic() - due)
            token = tokens[i]
            args = {"message": token, "probe": port, "token": token}
            before, after = await send(args)
            load.sent[token] = (before, after)
            load.last_commit = max(load.last_commit, after)

    await asyncio.gather(*(deferrer(send) for send in senders))
    return load


async def sample_backlog(target: Target, into: list[int], stop: asyncio.Event) -> None:
    """One backlog reading a second until ``stop`` is set."""
    next_at = time.monotonic()
    while not stop.is_set():
        into.append(await target.backlog())
        next_at += 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def run_phase(
    base: Phase,
    target: Target,
    probes: Collector,
    port: int,
    deferrers: int,
    seconds: float,
    tokens: Sequence[int],
    check_alive: Callable[[], None],
) -> Phase:
    """One window of arrivals at ``base.target`` jobs/s, then until every job has started."""
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_backlog(target, samples, stop))
    cpu_before = process_cpu()
    workers_before = target.workers.cpu_seconds()
    store_before = target.store_cpu()
    wall_before = time.monotonic()
    try:
        load = await open_loop(target.senders(deferrers), base.target, seconds, port, tokens)
    finally:
        stop.set()
        await sampler
    wall = max(time.monotonic() - wall_before, 1e-9)
    client_cpu = (process_cpu() - cpu_before) / wall
    worker_cpu = (target.workers.cpu_seconds() - workers_before) / wall
    store_after = target.store_cpu()
    store_cpu = (
        None if store_after is None or store_before is None else (store_after - store_before) / wall
    )
    check_alive()
    # Until every job has been seen started, while starts keep coming (a backlog may drain far
    # slower than R), at most DRAIN_CAP.
    window_end = time.monotonic()
    pending = {token for token in load.sent if token not in probes.started}
    last_progress: float = window_end
    while pending:
        check_alive()
        now = time.monotonic()
        if now - last_progress > DRAIN_STALL or now - window_end > DRAIN_CAP:
            break
        await asyncio.sleep(0.2)
        left = len(pending)
        pending = {token for token in pending if token not in probes.started}
        if len(pending) < left:
            last_progress = time.monotonic()
    drain_seconds = time.monotonic() - window_end
    await asyncio.sleep(0.5)  # a repeated start would show up here
    from_commit: list[float] = []
    from_before: list[float] = []
    calls: list[float] = []
    for token, (before, after) in load.sent.items():
        calls.append((after - before) * 1000)
        started = probes.started.get(token)
        if started is not None:
            from_commit.append((started - after) * 1000)
            from_before.append((started - before) * 1000)
    span = load.last_commit - load.first_due
    window = min(FLAT_WINDOW, len(samples) / 2) or 1.0
    first = samples[: int(window)] or [0]
    last = samples[-int(window) :] or [0]
    return Phase(
        system=base.system,
        config=base.config,
        processes=base.processes,
        rate=base.rate,
        rate_source=base.rate_source,
        fraction=base.fraction,
        target=base.target,
        deferrers=deferrers,
        sent=len(load.sent),
        achieved=len(load.sent) / span if span > 0 else 0.0,
        send_lag_p99_ms=percentile(load.lags, 99) * 1000 if load.lags else 0.0,
        client_cpu=client_cpu,
        worker_cpu=worker_cpu,
        store_cpu=store_cpu,
        from_commit=Percentiles.of(from_commit),
        from_before=Percentiles.of(from_before),
        defer_call_p50_ms=percentile(calls, 50) if calls else 0.0,
        backlog=tuple(samples),
        backlog_first=sum(first) / len(first),
        backlog_last=sum(last) / len(last),
        started=len(from_commit),
        lost=len(load.sent) - len(from_commit),
        duplicates=sum(probes.duplicates.get(token, 0) for token in load.sent),
        drain_seconds=drain_seconds,
    )


def deferrer_count(options: SteadyOptions, target_rate: float) -> int:
    if options.deferrers is not None:
        return options.deferrers
    return max(1, min(MAX_DEFERRERS, math.ceil(target_rate / PER_DEFERRER)))


async def wait_idle(target: Target, check_alive: Callable[[], None], timeout: float) -> None:
    """Until no job is running or due (between two loads)."""
    deadline = time.monotonic() + timeout
    while await target.backlog():
        check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers were still busy after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def run_phases(
    bases: Sequence[Phase],
    target: Target,
    options: SteadyOptions,
    check_alive: Callable[[], None],
    tokens: Iterator[int],
) -> list[Phase]:
    """Every load in turn on the running workers, each once the previous one's jobs are done."""
    phases: list[Phase] = []
    async with collector() as (probes, port):
        for base in bases:
            label = f"[{base.system}, {base.processes}p, {base.fraction:.0%} of R]"
            count = deferrer_count(options, base.target)
            log(f"{label} {base.target:,.0f} jobs/s for {options.seconds:g} s, {count} deferrers")
            try:
                await wait_idle(target, check_alive, 60 + 2 * options.seconds)
                await target.open(count)
                planned = [next(tokens) for _ in range(math.ceil(base.target * options.seconds))]
                phase = await run_phase(
                    base, target, probes, port, count, options.seconds, planned, check_alive
                )
            except Exception as exc:
                log(f"  FAILED: {type(exc).__name__}: {exc}")
                phases.append(with_error(base, exc))
                continue
            log(
                f"  achieved {phase.achieved:,.0f} jobs/s (client CPU {phase.client_cpu:.0%}); "
                f"from commit p50 {phase.from_commit.p50:.2f} p99 {phase.from_commit.p99:.2f} "
                f"max {phase.from_commit.max:.1f} ms; backlog {phase.backlog_first:.0f} -> "
                f"{phase.backlog_last:.0f}; lost {phase.lost}"
            )
            phases.append(phase)
    return phases


def with_error(base: Phase, exc: BaseException) -> Phase:
    return dataclasses.replace(base, error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- per system


def given_rate(options: SteadyOptions, key: str, processes: int) -> float | None:
    """``--rates``: ``key@N=R`` for N processes, else ``key=R``."""
    return options.rates.get(f"{key}@{processes}", options.rates.get(key))


def bases_for(
    key: str, config: str, processes: int, rate: float, source: str, options: SteadyOptions
) -> list[Phase]:
    return [
        Phase(key, config, processes, rate, source, fraction, target=rate * fraction)
        for fraction in options.fractions
    ]


async def postgres_system_phases(
    system: throughput.PostgresSystem,
    processes: int,
    options: SteadyOptions,
    tokens: Iterator[int],
) -> list[Phase]:
    """The rate (given or calibrated), then every load on one fresh database and one set of
    workers."""
    if not isinstance(system, SteadySystem):
        raise RuntimeError(f"{system.key} has no enqueue_one")
    rate = given_rate(options, system.key, processes)
    source = "given"
    if rate is None:
        log(f"[{system.key}, {processes}p] calibrating: {options.calibrate_jobs:,} jobs")
        row = await throughput.measure_postgres(
            system,
            options.admin_url,
            options.calibrate_jobs,
            processes,
            throughput.DEFAULT_POLL_INTERVAL,
        )
        rate, source = row.jobs_per_second, "calibrated"
    bases = bases_for(system.key, system.config, processes, rate, source, options)
    label = f"steady_{system.key}_{processes}p"
    async with fresh_database(options.admin_url, label) as url:
        log(f"[{system.key}, {processes}p] R = {rate:,.0f} jobs/s ({source}); {url}")
        await system.install(url)
        async with await AsyncConnection.connect(url, autocommit=True) as observer:
            own = [await backend_pid(observer)]
            postmaster = await postmaster_pid(observer)
            async with throughput.running(system.commands(url, processes), label) as workers:
                target = PostgresTarget(system, url, observer, workers, postmaster)
                try:
                    await throughput.wait_ready(observer, workers, system, processes, own)
                    await settle(url)
                    return await run_phases(bases, target, options, workers.check_alive, tokens)
                finally:
                    await target.close()


async def celery_phases(
    processes: int, options: SteadyOptions, tokens: Iterator[int]
) -> list[Phase]:
    """As :func:`postgres_system_phases`, for Celery on the (flushed) Redis database."""
    rate = given_rate(options, "celery", processes)
    source = "given"
    if rate is None:
        log(f"[celery, {processes}p] calibrating: {options.calibrate_jobs:,} jobs")
        row = await throughput.measure_celery(
            options.redis_url, options.calibrate_jobs, processes, throughput.DEFAULT_POLL_INTERVAL
        )
        rate, source = row.jobs_per_second, "calibrated"
    config = throughput.celery_config(processes)
    bases = bases_for("celery", config, processes, rate, source, options)
    os.environ["BENCH_REDIS_URL"] = options.redis_url  # read when peers.celery_app is imported
    import redis
    from peers import celery_app

    celery_app.app.conf.broker_url = options.redis_url
    client = redis.Redis.from_url(options.redis_url)
    client.flushdb()
    nodename = f"steady-{os.getpid()}-{processes}"
    log(f"[celery, {processes}p] R = {rate:,.0f} jobs/s ({source}); {options.redis_url}")
    try:
        commands = throughput.celery_commands(options.redis_url, processes, nodename)
        async with throughput.running(commands, f"steady_celery_{processes}p") as workers:
            await throughput.wait_celery_ready(celery_app.app, workers, nodename)
            target = CeleryTarget(celery_app.noop, client, celery_app.DONE_KEY, workers)
            return await run_phases(bases, target, options, workers.check_alive, tokens)
    finally:
        client.flushdb()
        client.close()


def selected(options: SteadyOptions, *names: str) -> bool:
    return not options.systems or any(name in options.systems for name in names)


async def guarded(placeholders: list[Phase], phases: Awaitable[list[Phase]]) -> list[Phase]:
    """A system's phases; on failure, log it and return the placeholders with the error."""
    try:
        return await phases
    except Exception as exc:
        log(f"  FAILED: {type(exc).__name__}: {exc}")
        return [with_error(p, exc) for p in placeholders]


def placeholders(key: str, config: str, processes: int, options: SteadyOptions) -> list[Phase]:
    return bases_for(key, config, processes, 0.0, "", options)


async def measure(options: SteadyOptions) -> SteadyFigures:
    """Every selected system (``throughput.SYSTEMS``, each through
    ``throughput.postgres_systems()``, or Celery) and process count, one after the other."""
    quiet = await asyncio.to_thread(quiet_check)
    environment = await describe_environment(
        options.admin_url,
        ("taskhub", "procrastinate", "psycopg", "pgqueuer", "asyncpg", "celery", "redis"),
    )
    concurrency = options.concurrency
    if concurrency is None:
        concurrency = throughput.taskhub_default_concurrency()
    wall = time.perf_counter()
    tokens = itertools.count(1)
    phases: list[Phase] = []
    for name in throughput.SYSTEMS:
        if name == "celery":
            if selected(options, "celery"):
                for n in options.processes:
                    phases += await guarded(
                        placeholders("celery", throughput.celery_config(n), n, options),
                        celery_phases(n, options, tokens),
                    )
            continue
        try:
            systems = await asyncio.to_thread(
                throughput.postgres_systems, name, concurrency, options.peer_concurrency
            )
        except Exception as exc:
            log(f"[{name}] skipped: {type(exc).__name__}: {exc}")
            continue
        for system in systems:
            if not selected(options, system.key, system.name):
                continue
            for n in options.processes:
                phases += await guarded(
                    placeholders(system.key, system.config, n, options),
                    postgres_system_phases(system, n, options, tokens),
                )
    return SteadyFigures(
        options=options,
        phases=phases,
        environment=environment,
        quiet=quiet.describe(),
        elapsed=time.perf_counter() - wall,
    )


# --------------------------------------------------------------------------- report


def backlog_text(phase: Phase) -> str:
    verdict = "flat" if phase.flat else "**growing**"
    peak = max(phase.backlog, default=0)
    return f"{verdict} ({phase.backlog_first:,.0f} -> {phase.backlog_last:,.0f}, max {peak:,})"


def render(figures: SteadyFigures) -> str:
    """The figures as a markdown section."""
    o = figures.options
    latency_rows: list[list[str]] = []
    load_rows: list[list[str]] = []
    notes: list[str] = []
    for p in figures.phases:
        name = f"{p.system}, {p.processes}p, {p.fraction:.0%}"
        if p.error is not None:
            latency_rows.append([name, f"failed: {p.error.splitlines()[0]}", *[""] * 5])
            continue
        c, b = p.from_commit, p.from_before
        latency_rows.append(
            [
                name,
                f"{c.p50:.2f}",
                f"{c.p95:.2f}",
                f"{c.p99:.2f}",
                f"{c.max:.1f}",
                f"{b.p50:.2f} / {b.p99:.2f}",
                f"{p.defer_call_p50_ms:.2f}",
            ]
        )
        achieved = f"{p.achieved:,.0f}"
        if p.client_limited:
            achieved = f"**{achieved}**"
            notes.append(
                f"- {name}: the enqueuing side was the limit: {p.achieved:,.0f} of "
                f"{p.target:,.0f} jobs/s with {p.deferrers} connections, this process at "
                f"{p.client_cpu:.0%} of a core, defer calls up to "
                f"{p.send_lag_p99_ms:.1f} ms late (p99)"
            )
        lost = f"{p.lost:,}" + (f" (+{p.duplicates} repeats)" if p.duplicates else "")
        load_rows.append(
            [
                name,
                f"{p.rate:,.0f} ({p.rate_source})",
                f"{p.target:,.0f}",
                achieved,
                f"{p.deferrers}",
                f"{p.client_cpu:.0%}",
                f"{p.worker_cpu:.0%}",
                "n/a" if p.store_cpu is None else f"{p.store_cpu:.0%}",
                f"{p.send_lag_p99_ms:.1f}",
                backlog_text(p),
                lost,
                f"{p.drain_seconds:.1f}",
            ]
        )
    latency_table = markdown_table(
        [
            "system, processes, load",
            "p50",
            "p95",
            "p99",
            "max",
            "from before the defer p50 / p99",
            "defer call p50",
        ],
        latency_rows,
    )
    load_table = markdown_table(
        [
            "system, processes, load",
            "R jobs/s",
            "target /s",
            "achieved /s",
            "deferring conns",
            "bench CPU",
            "workers CPU",
            "PostgreSQL / Redis CPU",
            "send lag p99 ms",
            "backlog (jobs running or due)",
            "lost probes",
            "drain after s",
        ],
        load_rows,
    )
    window = f"{FLAT_WINDOW:g} s"
    parts = [
        "## Steady state: pickup latency at 50% and 90% of the drain rate",
        "",
        render_environment(figures.environment),
        f"- machine before the run: {figures.quiet}; the run took {figures.elapsed:.0f} s",
        "",
        f"{o.seconds:g} s of open-loop arrivals per load (job i due at t0 + i/rate), one job per "
        "transaction, each system's usual one-job enqueue; R is the system's drain rate with "
        f"the same worker processes (given, or a drain of {o.calibrate_jobs:,} jobs by "
        "`throughput.py`'s measurement).",
        "",
        "Pickup latency (ms): the task's first action (a UDP datagram with `time.monotonic()`) "
        "minus the moment the defer call returned (its commit); also minus the moment before "
        "the defer call.",
        "",
        latency_table,
        "",
        f"Arrivals and backlog: the backlog is sampled every second; **flat** when the last "
        f"{window}' mean is below max(2 x the first {window}' mean, that mean + {FLAT_SLACK} "
        f"jobs). Lost probes: jobs deferred but never seen started (after the window, the "
        f"bench waits while starts keep coming, {DRAIN_STALL:g} s without one or "
        f"{DRAIN_CAP:g} s in all ends the wait; *drain after* is that wait). Achieved in "
        f"bold: below {ACHIEVED_SHARE:.0%} of the target, the enqueuing side (this process, "
        "on the same cores) was the limit. CPU columns: shares of one core over the window "
        "(200% = both cores of a 2-core machine): this process (the deferring side), the "
        "worker processes, and every PostgreSQL server process (the deferring connections' "
        "backends included) or Redis.",
        "",
        load_table,
    ]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- CLI


def parse_rates(value: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        key, sep, number = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r}: use key=jobs_per_second")
        rates[key.strip()] = float(number)
    return rates


def parse_args(argv: Sequence[str] | None = None) -> tuple[SteadyOptions, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per load")
    parser.add_argument(
        "--loads",
        type=throughput.csv_of(float),
        default=list(DEFAULT_FRACTIONS),
        help="fractions of R, comma-separated (default: 0.5,0.9)",
    )
    parser.add_argument(
        "--processes",
        type=throughput.csv_of(int),
        default=[1],
        help="worker process counts, comma-separated (default: 1; 1,2 for both)",
    )
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default={},
        help="drain rates, key=R or key@N=R (N processes), comma-separated, keys as in the "
        "report (taskhub, procrastinate, pgqueuer_c10, pgqueuer_defaults, celery, ...); "
        "the others are calibrated",
    )
    parser.add_argument("--calibrate-jobs", type=int, default=DEFAULT_CALIBRATE_JOBS)
    parser.add_argument(
        "--systems",
        type=throughput.csv_of(str),
        default=[],
        help="keys or names to run, comma-separated (default: every system)",
    )
    parser.add_argument(
        "--deferrers",
        type=int,
        default=None,
        help=f"deferring connections (default: target / {PER_DEFERRER}, at most {MAX_DEFERRERS})",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="taskhub's, per process")
    parser.add_argument("--peer-concurrency", type=int, default=throughput.DEFAULT_PEER_CONCURRENCY)
    parser.add_argument(
        "--redis-url",
        default=throughput.DEFAULT_REDIS_URL,
        help="Celery's broker; this Redis database is FLUSHED (default: %(default)s)",
    )
    parser.add_argument("--output", default=None, help="also write the report here")
    ns = parser.parse_args(argv)
    if ns.seconds <= 0 or not ns.loads or min(ns.loads) <= 0:
        parser.error("--seconds and every --loads value must be > 0")
    if not ns.processes or min(ns.processes) < 1 or ns.calibrate_jobs < 1:
        parser.error("--processes and --calibrate-jobs must be >= 1")
    if ns.deferrers is not None and ns.deferrers < 1:
        parser.error("--deferrers must be >= 1")
    options = SteadyOptions(
        admin_url=ns.database_url,
        seconds=ns.seconds,
        fractions=tuple(ns.loads),
        processes=tuple(ns.processes),
        rates=ns.rates,
        calibrate_jobs=ns.calibrate_jobs,
        systems=tuple(ns.systems),
        deferrers=ns.deferrers,
        concurrency=ns.concurrency,
        peer_concurrency=ns.peer_concurrency,
        redis_url=ns.redis_url,
    )
    return options, ns.output


def main(argv: Sequence[str] | None = None) -> int:
    options, output = parse_args(argv)
    figures = asyncio.run(measure(options))
    report = render(figures)
    print(report)
    if output is not None:
        with open(output, "w", encoding="utf-8") as out:
            out.write(report)
        log(f"wrote {output}")
    return 0 if all(p.error is None for p in figures.phases) else 1


if __name__ == "__main__":
    sys.exit(main())

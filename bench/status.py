"""``GET /jobs/{id}`` latency at an open-loop request rate, while workers drain a backlog flat out.

On a fresh database: defer a backlog of ``taskhub.ping`` jobs, start ``taskhub api`` (its own
process), start ``taskhub worker`` (one process per core), let them finish a first slice, then
send ``GET /jobs/{id}`` at a fixed rate for a fixed time. Requests are scheduled on a fixed
clock and each latency is counted from its scheduled send time, so a stall (in the API, the
database or the network) delays every request due meanwhile, as it would for real clients.
Then the workers stop and the same is measured with no worker running.

Run from the repository root::

    .venv/bin/python bench/status.py --rate 200 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common_latency import (
    DEFAULT_ADMIN_URL,
    Children,
    Percentiles,
    children,
    fetch_value,
    free_port,
    fresh_database,
    load_average,
    markdown_table,
    progress,
    settle,
    subprocess_env,
    taskhub_command,
    worker_supports_processes,
)
from psycopg import AsyncConnection

from backend import defer
from backend.process import migrate
from backend.tasks.builtin import ping

START_TIMEOUT = 60.0
ENQUEUE_BATCH = 5_000


@dataclass(frozen=True)
class StatusOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    rate: float = 200.0
    duration: float = 15.0
    backlog: int = 150_000
    #: Worker processes (one per core on the 2-core reference machine).
    processes: int = 2
    #: Jobs finished before the timed window, so that there are finished ids to ask for.
    predrain: int = 2_000
    connections: int = 8
    #: Close each connection after its request instead of keeping it alive (a diagnostic:
    #: it shows the endpoint without what keep-alive connections add or avoid).
    fresh_connections: bool = False
    idle_phase: bool = True


@dataclass(frozen=True)
class Phase:
    """One timed window of requests."""

    label: str
    latency: Percentiles
    requests: int
    errors: int
    #: Scheduled send -> the client actually sent: the bench client's own lag (ms), p99.
    client_lag_p99: float
    #: States the API answered, e.g. {"SUCCESS": 1000, "PENDING": 990, "STARTED": 10}.
    states: dict[str, int]
    #: ids asked for, per intent (finished / running / queued).
    asked: dict[str, int]
    jobs_finished_per_s: float
    api_cpu: float
    workers_cpu: float
    #: Backlog jobs still queued at the end (0: the workers ran out of work in the window).
    queued_at_end: int


@dataclass(frozen=True)
class StatusFigures:
    options: StatusOptions
    phases: list[Phase]
    #: Median of sequential ``GET /health`` on one connection, before the workers start: about
    #: 40 ms instead of well under 1 when the server's sockets lack TCP_NODELAY (Nagle's
    #: algorithm waiting for the client's delayed ACK).
    sequential_health_ms: float
    worker_command: str
    load_before: str
    load_after: str


# --------------------------------------------------------------------------- ids to ask for


class IdPicker:
    """Picks job ids by intent: finished, running or queued, from a view of the backlog
    refreshed every 100 ms. Which state the API then reports is counted separately."""

    def __init__(self, first_id: int, last_id: int) -> None:
        self.first_id = first_id
        self.last_id = last_id
        self.frontier = first_id  # lowest id still queued
        self.running: list[int] = []
        self.intents = ("finished", "running", "queued")
        self.turn = 0

    async def refresh(self, observer: AsyncConnection[Any]) -> None:
        cursor = await observer.execute(
            # The oldest queued job by the workers' own index (every backlog job has priority
            # 0): min(id) walked the primary key through every finished job, 20 times a second.
            "SELECT (SELECT id FROM procrastinate_jobs "
            "         WHERE status = 'todo' AND id BETWEEN %(first)s AND %(last)s "
            "         ORDER BY priority DESC, id LIMIT 1), "
            "       (SELECT array_agg(id) FROM procrastinate_jobs "
            "         WHERE worker_id IS NOT NULL AND status = 'doing')",
            {"first": self.first_id, "last": self.last_id},
        )
        row = await cursor.fetchone()
        assert row is not None
        self.frontier = self.last_id + 1 if row[0] is None else int(row[0])
        self.running = list(row[1] or [])

    async def follow(self, observer: AsyncConnection[Any]) -> None:
        while True:
            await self.refresh(observer)
            await asyncio.sleep(0.1)

    def pick(self) -> tuple[int, str]:
        for _ in range(3):
            intent = self.intents[self.turn % 3]
            self.turn += 1
            done_top = self.frontier - 1_000
            if intent == "finished" and done_top > self.first_id:
                return random.randint(self.first_id, done_top), intent
            if intent == "running" and self.running:
                return random.choice(self.running), intent
            queued_low = self.frontier + 2_000
            if intent == "queued" and queued_low < self.last_id:
                return random.randint(queued_low, self.last_id), intent
        return random.randint(self.first_id, self.last_id), "any"


# --------------------------------------------------------------------------- the client


class HttpError(Exception):
    """A request that got no HTTP answer (the connection broke, or the answer was not HTTP)."""


class Response:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpError(f"HTTP {self.status_code}: {self.body[:200]!r}")


class LeanClient:
    """HTTP/1.1 GETs over up to ``connections`` keep-alive connections, and nothing more.

    The load generator shares the machine's two cores with the API, the workers and
    PostgreSQL, so it must cost far less than what it measures: httpx took about 2 ms of CPU
    per request (0.4 cores at 200 requests/s, more than the API itself), and the window with
    the workers measured the client's queue as much as the API. This one writes the request
    line and reads the answer by its Content-Length (uvicorn always sends one here).
    """

    def __init__(self, port: int, token: str, connections: int, fresh: bool = False) -> None:
        self.port = port
        self.headers = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.fresh = fresh
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )
        for _ in range(connections):
            self._idle.put_nowait(None)  # opened on first use

    async def get(self, path: str) -> Response:
        connection = await self._idle.get()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = connection
            closing = "Connection: close\r\n" if self.fresh else ""
            writer.write(f"GET {path} HTTP/1.1\r\n{self.headers}{closing}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self._drop(connection)
            connection = None
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._drop(connection)
            connection = None
            raise
        finally:
            if self.fresh and connection is not None:
                self._drop(connection)
                connection = None
            self._idle.put_nowait(connection)
        return Response(status, body)

    @staticmethod
    def _drop(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if connection is not None:
            connection[1].close()

    async def aclose(self) -> None:
        while not self._idle.empty():
            self._drop(self._idle.get_nowait())


# --------------------------------------------------------------------------- requests


@dataclass
class Outcome:
    latency_ms: float
    lag_ms: float
    status: int
    state: str


async def request(client: LeanClient, job_id: int, scheduled: float) -> Outcome:
    sent = time.perf_counter()
    try:
        response = await client.get(f"/jobs/{job_id}")
    except HttpError as exc:
        done = time.perf_counter()
        return Outcome((done - scheduled) * 1000, (sent - scheduled) * 1000, 0, type(exc).__name__)
    done = time.perf_counter()
    state = response.json().get("state", "?") if response.status_code == 200 else "error"
    return Outcome(
        (done - scheduled) * 1000, (sent - scheduled) * 1000, response.status_code, str(state)
    )


async def open_loop(
    client: LeanClient, rate: float, duration: float, pick: Callable[[], tuple[int, str]]
) -> tuple[list[Outcome], Counter[str]]:
    """Send ``rate`` requests per second for ``duration`` seconds on a fixed schedule."""
    count = max(1, int(rate * duration))
    asked: Counter[str] = Counter()
    tasks: list[asyncio.Task[Outcome]] = []
    start = time.perf_counter() + 0.01
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        job_id, intent = pick()
        asked[intent] += 1
        tasks.append(asyncio.create_task(request(client, job_id, scheduled)))
    return list(await asyncio.gather(*tasks)), asked


async def queued_count(observer: AsyncConnection[Any], first: int, last: int) -> int:
    found = await fetch_value(
        observer,
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND id BETWEEN %s AND %s",
        first,
        last,
    )
    return int(found or 0)


async def finished_count(observer: AsyncConnection[Any], first: int, last: int) -> int:
    found = await fetch_value(
        observer,
        "SELECT count(*) FROM procrastinate_jobs "
        "WHERE status = 'succeeded' AND id BETWEEN %s AND %s",
        first,
        last,
    )
    return int(found or 0)


async def timed_phase(
    label: str,
    client: LeanClient,
    observer: AsyncConnection[Any],
    picker: IdPicker,
    options: StatusOptions,
    api: Children,
    workers: Children | None,
) -> Phase:
    first, last = picker.first_id, picker.last_id
    finished_before = await finished_count(observer, first, last)
    api_cpu, workers_cpu = api.cpu_seconds(), workers.cpu_seconds() if workers else 0.0
    started = time.perf_counter()
    outcomes, asked = await open_loop(client, options.rate, options.duration, picker.pick)
    elapsed = time.perf_counter() - started
    api_cpu = api.cpu_seconds() - api_cpu
    workers_cpu = (workers.cpu_seconds() - workers_cpu) if workers else 0.0
    finished = await finished_count(observer, first, last) - finished_before
    api.check_alive()
    if workers is not None:
        workers.check_alive()
    ok = [o for o in outcomes if o.status == 200]
    phase = Phase(
        label=label,
        latency=Percentiles.of([o.latency_ms for o in ok]),
        requests=len(outcomes),
        errors=len(outcomes) - len(ok),
        client_lag_p99=Percentiles.of([o.lag_ms for o in outcomes]).p99,
        states=dict(Counter(o.state for o in outcomes)),
        asked=dict(asked),
        jobs_finished_per_s=finished / elapsed,
        api_cpu=api_cpu / elapsed,
        workers_cpu=workers_cpu / elapsed,
        queued_at_end=await queued_count(observer, first, last),
    )
    progress(
        label,
        f"p50 {phase.latency.p50:.2f} ms, p99 {phase.latency.p99:.2f} ms, "
        f"{phase.errors} errors, {phase.jobs_finished_per_s:,.0f} jobs/s finished",
    )
    return phase


# --------------------------------------------------------------------------- the run


async def sequential_health(client: LeanClient, count: int = 20) -> float:
    """Median time of ``count`` one-after-the-other ``GET /health`` (ms)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        (await client.get("/health")).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def enqueue_backlog(url: str, count: int) -> tuple[int, int]:
    ids: list[int] = []
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for start in range(0, count, ENQUEUE_BATCH):
            many = [{"message": i} for i in range(start, min(count, start + ENQUEUE_BATCH))]
            async with conn.transaction():
                batch = await defer.batch_defer(conn, ping, many)
            ids += (batch[0], batch[-1])
    return min(ids), max(ids)


async def wait_for(check: Callable[[], Any], what: str, group: Children) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not await check():
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {START_TIMEOUT:.0f} s waiting for {what}\n{group.output()}"
            )
        await asyncio.sleep(0.1)


def worker_argvs(processes: int) -> tuple[list[list[str]], str]:
    """``taskhub worker --processes N`` when the CLI has it, else N ``taskhub worker``."""
    base = [*taskhub_command(), "worker"]
    if worker_supports_processes():
        return [[*base, "--processes", str(processes)]], f"taskhub worker --processes {processes}"
    return [base] * processes, f"{processes} x taskhub worker"


async def measure(options: StatusOptions) -> StatusFigures:
    """The loaded window, then (optionally) the idle one, on one fresh database."""
    load_before = load_average()
    secret = secrets.token_urlsafe(24)
    argvs, worker_command = worker_argvs(options.processes)
    phases: list[Phase] = []
    async with fresh_database(options.admin_url, "status") as url:
        await asyncio.to_thread(migrate.upgrade, url)
        progress("status", f"deferring a backlog of {options.backlog:,} jobs")
        first, last = await enqueue_backlog(url, options.backlog)
        port = free_port()
        env = subprocess_env(url, TASKHUB_TOKENS=f"bench=read:{secret}")
        async with await AsyncConnection.connect(url, autocommit=True) as observer:
            await settle(observer)
            picker = IdPicker(first, last)
            await picker.refresh(observer)
            with children("api") as api, children("workers") as workers:
                api.start(
                    [*taskhub_command(), "api", "--host", "127.0.0.1", "--port", str(port)], env
                )
                client = LeanClient(
                    port, secret, options.connections, fresh=options.fresh_connections
                )
                try:

                    async def healthy() -> bool:
                        with contextlib.suppress(HttpError):
                            return (await client.get("/health")).status_code == 200
                        return False

                    await wait_for(healthy, "the API", api)
                    for _ in range(200):  # warm up the API's pool and the keep-alive connections
                        (
                            await client.get(f"/jobs/{random.randint(first, last)}")
                        ).raise_for_status()
                    health_ms = await sequential_health(client)
                    progress("status", f"sequential GET /health: {health_ms:.2f} ms")

                    for argv in argvs:
                        workers.start(argv, subprocess_env(url, TASKHUB_WORKER_PROCESSES="1"))

                    async def predrained() -> bool:
                        return await finished_count(observer, first, last) >= options.predrain

                    await wait_for(predrained, f"{options.predrain} finished jobs", workers)
                    follower = asyncio.create_task(picker.follow(observer))
                    try:
                        progress(
                            "status",
                            f"{options.rate:g} req/s for {options.duration:g} s, "
                            f"workers running ({worker_command})",
                        )
                        phases.append(
                            await timed_phase(
                                "workers draining", client, observer, picker, options, api, workers
                            )
                        )
                    finally:
                        follower.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await follower
                    if options.idle_phase:
                        workers.stop()
                        await picker.refresh(observer)
                        picker.running = []
                        progress("status", "workers stopped; idle window")
                        phases.append(
                            await timed_phase(
                                "no worker", client, observer, picker, options, api, None
                            )
                        )
                finally:
                    await client.aclose()
    return StatusFigures(options, phases, health_ms, worker_command, load_before, load_average())


# --------------------------------------------------------------------------- report


def render(figures: StatusFigures) -> str:
    """The figures as a markdown section."""
    o = figures.options
    headers = ["GET /jobs/{id}", *[p.label for p in figures.phases]]

    def row(label: str, value: Callable[[Phase], str]) -> list[str]:
        return [label, *[value(p) for p in figures.phases]]

    def mix(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))

    rows = [
        row("latency p50 (ms)", lambda p: f"{p.latency.p50:.2f}"),
        row("latency p95 (ms)", lambda p: f"{p.latency.p95:.2f}"),
        row("latency p99 (ms)", lambda p: f"{p.latency.p99:.2f}"),
        row("latency max (ms)", lambda p: f"{p.latency.max:.2f}"),
        row(
            "sequential GET /health, before the windows (ms)",
            lambda p: f"{figures.sequential_health_ms:.2f}",
        ),
        row("requests / errors", lambda p: f"{p.requests:,} / {p.errors}"),
        row("client lag p99 (ms)", lambda p: f"{p.client_lag_p99:.2f}"),
        row("ids asked for", lambda p: mix(p.asked)),
        row("states answered", lambda p: mix(p.states)),
        row("jobs finished per second", lambda p: f"{p.jobs_finished_per_s:,.0f}"),
        row("API process CPU (cores)", lambda p: f"{p.api_cpu:.2f}"),
        row("worker processes CPU (cores)", lambda p: f"{p.workers_cpu:.2f}"),
        row("backlog still queued at the end", lambda p: f"{p.queued_at_end:,}"),
    ]
    notes = []
    if figures.sequential_health_ms > 20 and not o.fresh_connections:
        notes.append(
            f"**Sequential requests on one kept-alive connection take "
            f"{figures.sequential_health_ms:.0f} ms**: the API's sockets most likely lack "
            "TCP_NODELAY (a listening socket created with protocol 0 makes asyncio skip it), so "
            "each response waits for the client's delayed ACK. Compare `--fresh-connections`."
        )
    for p in figures.phases:
        if p.label == "workers draining" and p.queued_at_end == 0:
            notes.append("**The backlog ran out during the loaded window**: raise `--backlog`.")
    return "\n".join(
        [
            "## Status endpoint under load",
            "",
            f"Open loop: {o.rate:g} requests/s for {o.duration:g} s per window, latency from "
            f"each request's scheduled send time; a lean asyncio client with up to {o.connections} "
            f"{'new (one per request)' if o.fresh_connections else 'keep-alive'} "
            f"connections; backlog {o.backlog:,} `taskhub.ping` jobs, workers: "
            f"`{figures.worker_command}`; {figures.load_before} before, {figures.load_after} "
            "after. Goal with the workers draining: p99 < 10 ms.",
            *(["", *notes] if notes else []),
            "",
            markdown_table(headers, rows),
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> StatusOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    parser.add_argument("--backlog", type=int, default=150_000, help="jobs queued first")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--predrain", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--no-idle", action="store_true", help="skip the no-worker window")
    parser.add_argument(
        "--fresh-connections",
        action="store_true",
        help="a new connection per request instead of keep-alive (diagnostic)",
    )
    ns = parser.parse_args(argv)
    if ns.rate <= 0 or ns.duration <= 0 or ns.backlog < 10_000 or ns.processes < 1:
        parser.error("--rate, --duration > 0; --backlog >= 10000; --processes >= 1")
    return StatusOptions(
        admin_url=ns.database_url,
        rate=ns.rate,
        duration=ns.duration,
        backlog=ns.backlog,
        processes=ns.processes,
        predrain=min(ns.predrain, ns.backlog // 4),
        connections=ns.connections,
        fresh_connections=ns.fresh_connections,
        idle_phase=not ns.no_idle,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

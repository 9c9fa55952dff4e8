"""Operator endpoints on 10 million finished jobs, against the same on an empty database.

Every figure ``GET /queues``, pause and resume, ``GET /workers``, ``GET /alerts``,
``GET /metrics``, ``GET /stats`` and ``taskhub doctor`` compute should cost the waiting and
running jobs (or the statistics rollup), never the finished ones. For each database (empty:
freshly migrated; big: a clone of bigtable.py's template of ``--finished`` succeeded jobs),
both holding the same few hundred waiting and running jobs and the same per-minute rollup
(the one the big database's jobs would have left; the rollup outlives pruning), so that they
differ by the finished jobs alone:

1. start ``taskhub api`` in its own process (an operate token);
2. probe each path once (a 404 is reported as "not served"), warm each up;
3. ``--requests`` sequential requests per endpoint on one kept-alive connection, the
   endpoints taking turns, each timed from the send to the last byte of the answer;
4. ``taskhub doctor`` ``--doctor-runs`` times (wall time of the command), and doctor's own
   SQL statements in this process.

Run from the repository root::

    .venv/bin/python bench/endpoints.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bigtable import BigtableOptions, ensure_template
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
)
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from backend import defer
from backend.process import migrate
from backend.queries import QUERIES
from backend.tasks.builtin import ping

START_TIMEOUT = 60.0
GOAL_P99_MS = 20.0
GOAL_RATIO = 2.0
#: The queue paused and resumed (it holds waiting jobs).
PAUSED_QUEUE = "emails"
#: Waiting jobs per queue (the last quarter of each scheduled an hour ahead), and running jobs
#: per fake worker (fetched by taskhub's own fetch statement).
WAITING = {"default": 150, "emails": 100, "reports": 50}
RUNNING = {"default": 60, "emails": 40}


@dataclass(frozen=True)
class EndpointsOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    finished: int = 10_000_000
    requests: int = 300
    warmup: int = 20
    doctor_runs: int = 10


@dataclass(frozen=True)
class Endpoint:
    label: str
    method: str
    path: str


def endpoints(since: datetime.datetime) -> list[Endpoint]:
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        Endpoint("GET /queues", "GET", "/queues"),
        Endpoint(f"POST /queues/{PAUSED_QUEUE}/pause", "POST", f"/queues/{PAUSED_QUEUE}/pause"),
        Endpoint(f"POST /queues/{PAUSED_QUEUE}/resume", "POST", f"/queues/{PAUSED_QUEUE}/resume"),
        Endpoint("GET /workers", "GET", "/workers"),
        Endpoint("GET /alerts", "GET", "/alerts"),
        Endpoint("GET /metrics", "GET", "/metrics"),
        Endpoint("GET /stats?since=<1 h ago>", "GET", f"/stats?since={stamp}"),
    ]


@dataclass
class DatabaseFigures:
    label: str
    #: Endpoint label -> latencies (ms), or None when the path answered 404.
    latency: dict[str, Percentiles | None] = field(default_factory=dict)
    #: Endpoint label -> answer size (bytes) of the probe.
    size: dict[str, int] = field(default_factory=dict)
    doctor_wall: Percentiles | None = None
    doctor_exit: int = 0
    doctor_queries: Percentiles | None = None
    api_cpu_ms_per_request: float = 0.0
    setup_seconds: float = 0.0


@dataclass(frozen=True)
class EndpointsFigures:
    options: EndpointsOptions
    template: str
    databases: list[DatabaseFigures]
    load_before: str
    load_after: str


# --------------------------------------------------------------------------- the client


class HttpError(Exception):
    """No HTTP answer (the connection broke, or the answer was not HTTP)."""


class SequentialClient:
    """One keep-alive HTTP/1.1 connection, one request at a time; reads the answer by its
    Content-Length (uvicorn sends one for these endpoints). Far cheaper than httpx, whose
    CPU per request would land on the same two cores as the API it measures."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        body = "Content-Length: 0\r\n" if method == "POST" else ""
        try:
            if self.connection is None:
                self.connection = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self.connection
            writer.write(f"{method} {path} HTTP/1.1\r\n{self.headers}{body}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await reader.readexactly(length)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.connection is not None:
            self.connection[1].close()
            self.connection = None


# --------------------------------------------------------------------------- databases


async def add_jobs_in_flight(url: str) -> None:
    """The same waiting and running jobs in both databases: ``WAITING`` per queue (a quarter
    scheduled an hour ahead) and ``RUNNING`` per queue, each queue's held by a worker
    registered as taskhub's worker registers (procrastinate's row, then taskhub's)."""
    async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for queue, count in WAITING.items():
            due = count - count // 4
            async with conn.transaction():
                await defer.batch_defer(
                    conn, ping, [{"message": i} for i in range(due)], queue=queue
                )
                await defer.batch_defer(
                    conn,
                    ping,
                    [{"message": i} for i in range(count - due)],
                    queue=queue,
                    schedule_in=3600,
                )
        for n, (queue, count) in enumerate(RUNNING.items()):
            async with conn.transaction():
                await defer.batch_defer(
                    conn, ping, [{"message": i} for i in range(count)], queue=queue
                )
                worker_id = await fetch_value(
                    conn, "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
                )
                await conn.execute(
                    QUERIES["register_worker_row"],
                    {
                        "worker_id": worker_id,
                        "host": "bench",
                        "pid": 90_000 + n,
                        "queues": [queue],
                        "concurrency": count,
                    },
                )
                cursor = await conn.execute(
                    QUERIES["fetch_jobs"],
                    {"queues": [queue], "worker_id": worker_id, "count": count},
                )
                fetched = len(await cursor.fetchall())
            assert fetched == count, f"fetched {fetched} of {count} jobs on {queue}"


async def add_rollup(url: str, finished: int) -> None:
    """The statistics rollup the template's jobs would have left (the template is loaded with
    triggers and the rollup off): one ``taskhub.task_stats`` row per minute of the 6 days
    their finishes span, and their ``taskhub.task_totals`` row. No-op jobs of 1-3 ms: every
    duration in the first bucket (5 ms). The empty database gets it too: the rollup outlives
    pruning, so this is also a database whose finished jobs were all pruned, and the two
    databases then differ by the finished jobs alone."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            """
            INSERT INTO taskhub.task_stats
                   (minute, task_name, queue_name, succeeded, duration_count, duration_sum,
                    buckets)
            SELECT m, 'taskhub.ping', 'default', %(per)s, %(per)s, %(per)s * 0.002,
                   %(per)s::bigint
                   || array_fill(0::bigint, ARRAY[cardinality(taskhub.stats_bounds())])
              FROM generate_series(date_trunc('minute', now() - interval '6 days'),
                                   date_trunc('minute', now()) - interval '1 minute',
                                   interval '1 minute') m
            ON CONFLICT DO NOTHING
            """,
            {"per": finished // (6 * 24 * 60)},
        )
        await conn.execute(
            """
            INSERT INTO taskhub.task_totals
                   (task_name, succeeded, duration_count, duration_sum, buckets)
            SELECT task_name, sum(succeeded), sum(duration_count), sum(duration_sum),
                   taskhub.sum_counts(buckets)
              FROM taskhub.task_stats GROUP BY task_name
            ON CONFLICT (task_name) DO UPDATE
               SET succeeded = excluded.succeeded, duration_count = excluded.duration_count,
                   duration_sum = excluded.duration_sum, buckets = excluded.buckets
            """
        )
        await conn.execute("UPDATE taskhub.stats_watermark SET rolled_up_to = now()")
        await conn.execute("ANALYZE taskhub.task_stats")


async def prepare(url: str, big: bool, finished: int) -> None:
    if not big:
        await asyncio.to_thread(migrate.upgrade, url)
    await add_jobs_in_flight(url)
    await add_rollup(url, finished)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("taskhub.workers", "procrastinate_workers", "taskhub.paused_queues"):
            await conn.execute(f"ANALYZE {table}".encode())
        await settle(conn)


# --------------------------------------------------------------------------- measuring


async def wait_healthy(client: SequentialClient, api: Children) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(HttpError):
            if (await client.request("GET", "/health"))[0] == 200:
                return
        api.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not answer in {START_TIMEOUT:.0f} s\n{api.output()}")
        await asyncio.sleep(0.1)


async def measure_api(
    url: str, options: EndpointsOptions, figures: DatabaseFigures, since: datetime.datetime
) -> None:
    secret = secrets.token_urlsafe(24)
    port = free_port()
    env = subprocess_env(url, TASKHUB_TOKENS=f"bench=operate:{secret}")
    with children(f"{figures.label} api") as api:
        api.start([*taskhub_command(), "api", "--host", "127.0.0.1", "--port", str(port)], env)
        client = SequentialClient(port, secret)
        try:
            await wait_healthy(client, api)
            served: list[Endpoint] = []
            for endpoint in endpoints(since):
                status, body = await client.request(endpoint.method, endpoint.path)
                if status == 404:
                    figures.latency[endpoint.label] = None
                    progress(figures.label, f"{endpoint.label}: not served (404)")
                    continue
                if status != 200:
                    raise HttpError(f"{endpoint.label}: HTTP {status}: {body[:300]!r}")
                figures.size[endpoint.label] = len(body)
                served.append(endpoint)
            for _ in range(options.warmup):
                for endpoint in served:
                    await client.request(endpoint.method, endpoint.path)
            times: dict[str, list[float]] = {e.label: [] for e in served}
            cpu_before = api.cpu_seconds()
            # Turns rather than blocks: drift in the machine's load falls on every endpoint.
            for _ in range(options.requests):
                for endpoint in served:
                    started = time.perf_counter()
                    status, body = await client.request(endpoint.method, endpoint.path)
                    times[endpoint.label].append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        raise HttpError(f"{endpoint.label}: HTTP {status}: {body[:300]!r}")
            figures.api_cpu_ms_per_request = (
                (api.cpu_seconds() - cpu_before) * 1000 / max(1, options.requests * len(served))
            )
            api.check_alive()
        finally:
            client.close()
    for label, values in times.items():
        figures.latency[label] = Percentiles.of(values)
        p = figures.latency[label]
        assert p is not None
        progress(figures.label, f"{label}: p50 {p.p50:.2f} ms, p99 {p.p99:.2f} ms")


async def measure_doctor(url: str, options: EndpointsOptions, figures: DatabaseFigures) -> None:
    """``taskhub doctor``'s wall time, and its database statements alone (this process, one
    connection): the figures it computes, without the interpreter's start-up and connects."""
    env = subprocess_env(url)
    walls, exits = [], set()
    for _ in range(options.doctor_runs):
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            [*taskhub_command(), "doctor"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        walls.append((time.perf_counter() - started) * 1000)
        exits.add(done.returncode)
    figures.doctor_wall = Percentiles.of(walls)
    figures.doctor_exit = max(exits)
    statements = [
        ("doctor_server", None),
        ("doctor_queue_coverage", {"rescue_after": 30.0}),
        ("doctor_last_backup", None),
    ]
    times = []
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(options.warmup + options.requests):
            started = time.perf_counter()
            for name, params in statements:
                await (await conn.execute(QUERIES[name], params)).fetchall()
            if i >= options.warmup:
                times.append((time.perf_counter() - started) * 1000)
    figures.doctor_queries = Percentiles.of(times)
    progress(
        figures.label,
        f"taskhub doctor: p50 {figures.doctor_wall.p50:.0f} ms wall; its statements p99 "
        f"{figures.doctor_queries.p99:.2f} ms",
    )


async def measure(options: EndpointsOptions) -> EndpointsFigures:
    load_before = load_average()
    template, _built = await ensure_template(
        BigtableOptions(admin_url=options.admin_url, finished=options.finished)
    )
    big_label = f"{options.finished / 1e6:g}M finished"
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    results = []
    for label, clone_of in (("empty", None), (big_label, template)):
        figures = DatabaseFigures(label)
        started = time.perf_counter()
        name = "endpoints_big" if clone_of else "endpoints_empty"
        progress(label, f"preparing {name}")
        async with fresh_database(options.admin_url, name, template=clone_of) as url:
            await prepare(url, clone_of is not None, options.finished)
            figures.setup_seconds = time.perf_counter() - started
            await measure_api(url, options, figures, since)
            await measure_doctor(url, options, figures)
        results.append(figures)
    return EndpointsFigures(options, template, results, load_before, load_average())


# --------------------------------------------------------------------------- report


def verdict(empty: Percentiles | None, big: Percentiles | None, absolute: bool = True) -> str:
    if empty is None or big is None:
        return "not served"
    ratio = big.p99 / empty.p99
    misses = []
    if absolute and big.p99 >= GOAL_P99_MS:
        misses.append(f"p99 {big.p99:.1f} ms")
    if ratio > GOAL_RATIO:
        misses.append(f"{ratio:.2f}x empty")
    return "met" if not misses else "**not met**: " + ", ".join(misses)


def render(figures: EndpointsFigures) -> str:
    o = figures.options
    empty, big = figures.databases
    rows = []

    def cells(e: Percentiles | None, b: Percentiles | None, digits: int = 2) -> list[str]:
        if e is None or b is None:
            return ["not served"] * 4 + [""]
        return [
            f"{e.p50:.{digits}f}",
            f"{e.p99:.{digits}f}",
            f"{b.p50:.{digits}f}",
            f"{b.p99:.{digits}f}",
            f"{b.p99 / e.p99:.2f}",
        ]

    for label in empty.latency:
        e, b = empty.latency[label], big.latency.get(label)
        size = f"{big.size[label]:,}" if label in big.size else ""
        rows.append([label, *cells(e, b), size, verdict(e, b)])
    rows.append(
        [
            "doctor's statements (server, queue coverage, last backup; in-process)",
            *cells(empty.doctor_queries, big.doctor_queries),
            "",
            verdict(empty.doctor_queries, big.doctor_queries),
        ]
    )
    rows.append(
        [
            f"`taskhub doctor`, wall time of the command ({o.doctor_runs} runs)",
            *cells(empty.doctor_wall, big.doctor_wall, 0),
            "",
            verdict(empty.doctor_wall, big.doctor_wall, absolute=False)
            + " (ratio only: a Python process's start is not under 20 ms)",
        ]
    )
    waiting = sum(WAITING.values())
    running = sum(RUNNING.values())
    return "\n".join(
        [
            f"## Endpoints on {o.finished / 1e6:g} million finished jobs",
            "",
            f"`taskhub api` in its own process, one kept-alive connection, {o.requests} "
            f"sequential requests per endpoint after {o.warmup} warm-ups, the endpoints taking "
            "turns; latency from the send to the answer's last byte. Both databases hold "
            f"{waiting} waiting jobs in {len(WAITING)} queues (a quarter scheduled an hour "
            f"ahead) and {running} running ones held by {len(RUNNING)} registered workers "
            f"(registered just before, no heartbeat since); the big one is a clone of "
            f"`{figures.template}` ({o.finished:,} succeeded jobs with their events and "
            "results). Both hold the rollup those jobs would have left (a `taskhub.task_stats` "
            "row per minute over their 6 days, `taskhub.task_totals`): it outlives pruning, so "
            "the empty one is also a database whose finished jobs were all pruned. Pause and "
            f"resume alternate on `{PAUSED_QUEUE}` (each a real change, audited). API CPU per "
            "request: "
            f"{empty.api_cpu_ms_per_request:.2f} ms (empty), {big.api_cpu_ms_per_request:.2f} "
            f"ms (big). {figures.load_before} before, {figures.load_after} after. Goal: p99 "
            f"< {GOAL_P99_MS:g} ms and p99 <= {GOAL_RATIO:g}x the empty database's.",
            "",
            markdown_table(
                [
                    "endpoint (ms)",
                    "empty p50",
                    "empty p99",
                    "big p50",
                    "big p99",
                    "big / empty (p99)",
                    "answer bytes (big)",
                    "goal",
                ],
                rows,
            ),
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> EndpointsOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument(
        "--finished", type=int, default=10_000_000, help="jobs in bigtable.py's template"
    )
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per endpoint")
    parser.add_argument("--doctor-runs", type=int, default=10, help="timed `taskhub doctor` runs")
    ns = parser.parse_args(argv)
    if ns.finished < 1 or ns.requests < 2 or ns.warmup < 0 or ns.doctor_runs < 2:
        parser.error("--finished >= 1, --requests >= 2, --warmup >= 0, --doctor-runs >= 2")
    return EndpointsOptions(
        admin_url=ns.database_url,
        finished=ns.finished,
        requests=ns.requests,
        warmup=ns.warmup,
        doctor_runs=ns.doctor_runs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

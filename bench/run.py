"""Every benchmark in one run, and bench/RESULTS.md with the goals of issue 7 checked.

Runs, one after the other on one machine: throughput (taskhub and its peers), enqueue and the
business transaction, pickup latency, the status endpoint under load, the 10-million-row
table, the statements a no-op job costs (pg_stat_statements) and a million queued jobs. Each
section is the script's own report; the goals table at the top reads its figures from the
same run. By default every script runs against a dedicated PostgreSQL started for the run
(``bench/server.py``: settings copied from ``--database-url``'s server, pg_stat_statements
preloaded), removed afterwards; ``--no-dedicated-server`` uses ``--database-url`` itself.
Needs bench/.venv (``bench/setup.sh``) for the peers::

    bench/setup.sh && bench/.venv/bin/python bench/run.py --output bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bigtable
import enqueue
import latency
import measure
import million
import server
import statements
import status
import throughput
from psycopg import AsyncConnection


@dataclass(frozen=True)
class Goal:
    figure: str
    goal: str
    measured: str
    met: bool | None  # None: not measured

    def row(self) -> str:
        verdict = "n/a" if self.met is None else ("met" if self.met else "**not met**")
        return f"| {self.figure} | {self.goal} | {self.measured} | {verdict} |"


def _rate(rows: Sequence[throughput.Row], system: str, processes: int, config: str = "") -> float:
    rates = [
        row.jobs_per_second
        for row in rows
        if row.system == system
        and row.processes == processes
        and row.error is None
        and config in row.config
    ]
    return max(rates, default=0.0)


def goals(
    rows: Sequence[throughput.Row],
    enqueued: enqueue.EnqueueFigures,
    pickup: latency.LatencyFigures,
    endpoint: status.StatusFigures,
    big: bigtable.BigtableFigures,
    per_statement: statements.StatementsFigures | None = None,
    queued: million.MillionFigures | None = None,
) -> list[Goal]:
    one, two = _rate(rows, "taskhub", 1), _rate(rows, "taskhub", 2)
    peers = [row for row in rows if row.system != "taskhub" and row.error is None]
    best_peer = max(peers, key=lambda row: row.jobs_per_second, default=None)
    best = best_peer.jobs_per_second if best_peer else 0.0
    taskhub_rows = [row for row in rows if row.system == "taskhub" and row.error is None]
    txn = max((row.transactions_per_job or 0.0) for row in taskhub_rows) if taskhub_rows else 0.0
    fsync = max((row.fsyncs_per_job or 0.0) for row in taskhub_rows) if taskhub_rows else 0.0
    ours = next((f for f in enqueued.flavours if f.flavour == "taskhub"), None)
    ratio = enqueued.ratio("T2", "T1")
    probe = next((f for f in pickup.flavours if f.flavour == "taskhub"), None)
    loaded = next((p for p in endpoint.phases if p.label == "workers draining"), None)
    empty, full = big.rate("empty", 1), big.rate(f"{big.options.finished / 1e6:g}M finished", 1)
    peer_name = (
        f"{best_peer.system}, {best_peer.config}, {best_peer.processes}" if best_peer else ""
    )
    result = [
        Goal("work, 2 processes", "≥ 7,000 jobs/s", f"{two:,.0f}", two >= 7_000),
        Goal("work, 1 process", "≥ 3,000 jobs/s", f"{one:,.0f}", one >= 3_000),
        Goal(
            "work vs the best peer",
            "≥ 1.5x",
            f"{max(one, two) / best:.2f}x ({peer_name}: {best:,.0f})" if best else "n/a",
            max(one, two) >= 1.5 * best if best else None,
        ),
        Goal("transactions per job (worst taskhub row)", "≤ 0.1", f"{txn:.3f}", txn <= 0.1),
        Goal("WAL fsyncs per job (worst taskhub row)", "≤ 0.1", f"{fsync:.3f}", fsync <= 0.1),
    ]
    if ours is not None:
        fastest = max(ours.single_statement, ours.single_held)
        result.append(
            Goal(
                "enqueue, 1 job per transaction (held connection; the defer its own transaction)",
                "≥ 2,000 jobs/s",
                f"{ours.single_statement:,.0f} (in BEGIN/COMMIT: {ours.single_held:,.0f}; "
                + "; ".join(
                    f"{callers} concurrent callers: {rate:,.0f}"
                    for callers, rate in sorted(ours.concurrent.items())
                )
                + ")",
                fastest >= 2_000,
            )
        )
    result.append(
        Goal(
            "defer in a one-row business transaction / the transaction alone",
            "≤ 1.3x",
            f"{ratio:.2f}x" if ratio else "n/a",
            ratio <= 1.3 if ratio else None,
        )
    )
    if probe is not None:
        result += [
            Goal(
                "pickup from the commit, p50",
                "≤ 0.5 ms",
                f"{probe.from_commit.p50:.2f} ms",
                probe.from_commit.p50 <= 0.5,
            ),
            Goal(
                "pickup from the commit, p99",
                "≤ 1 ms",
                f"{probe.from_commit.p99:.2f} ms",
                probe.from_commit.p99 <= 1.0,
            ),
            Goal(
                "pickup from before the defer, p50",
                "≤ 2.5 ms",
                f"{probe.from_before_defer.p50:.2f} ms",
                probe.from_before_defer.p50 <= 2.5,
            ),
        ]
    result.append(
        Goal(
            f"work with {big.options.finished / 1e6:g}M finished jobs / empty table, 1 process",
            "≥ 0.9",
            f"{full / empty:.2f} ({full:,.0f} vs {empty:,.0f} jobs/s)" if empty else "n/a",
            full / empty >= 0.9 if empty else None,
        )
    )
    if loaded is not None:
        result.append(
            Goal(
                "`GET /jobs/{id}` p99 at 200 requests/s, workers flat out",
                "< 10 ms",
                f"{loaded.latency.p99:.1f} ms",
                loaded.latency.p99 < 10,
            )
        )
    if per_statement is not None:
        for run_ in per_statement.runs:
            if run_.postgres_cpu_s is None:
                continue
            cpu = (run_.worker_cpu_s + run_.postgres_cpu_s) * 1000 / run_.jobs
            result.append(
                Goal(
                    f"CPU per no-op job, worker + PostgreSQL, {run_.processes} process(es)",
                    f"≤ {statements.BUDGET_MS} ms",
                    f"{cpu:.3f} ms",
                    cpu <= statements.BUDGET_MS,
                )
            )
    if queued is not None:
        result.append(
            Goal(
                f"drain of {queued.million.jobs:,} queued jobs / of {queued.reference.jobs:,}",
                f"≥ {million.GOAL:.2f}",
                f"{queued.ratio:.2f} ({queued.million.jobs_per_s:,.0f} vs "
                f"{queued.reference.jobs_per_s:,.0f} jobs/s)",
                queued.ratio >= million.GOAL,
            )
        )
    return result


async def has_pg_stat_statements(admin_url: str) -> bool:
    async with await AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cursor = await conn.execute("SHOW shared_preload_libraries")
        row = await cursor.fetchone()
    return row is not None and "pg_stat_statements" in str(row[0])


async def run(admin_url: str, jobs: int, where: str = "") -> str:
    quiet = await asyncio.to_thread(measure.quiet_check)
    environment = await measure.describe_environment(
        admin_url,
        ("taskhub", "procrastinate", "psycopg", "pgqueuer", "asyncpg", "celery", "redis"),
    )
    wall = time.perf_counter()
    rows = await throughput.run_throughput(admin_url, jobs)
    throughput_section = throughput.render_report(
        rows, environment, quiet, time.perf_counter() - wall, throughput.DEFAULT_POLL_INTERVAL
    )
    enqueued = await enqueue.measure(enqueue.EnqueueOptions(admin_url=admin_url))
    pickup = await latency.measure(latency.LatencyOptions(admin_url=admin_url))
    endpoint = await status.measure(status.StatusOptions(admin_url=admin_url))
    big = await bigtable.measure(bigtable.BigtableOptions(admin_url=admin_url))
    per_statement = None
    if await has_pg_stat_statements(admin_url):
        per_statement = await statements.measure(
            statements.StatementsOptions(admin_url=admin_url, jobs=jobs)
        )
        statements_section = statements.render(per_statement)
    else:
        statements_section = (
            "## Where a no-op job's time goes, per statement\n\nSkipped: the server does not "
            "preload pg_stat_statements (run with `--dedicated-server`)."
        )
    queued = await million.measure(million.MillionOptions(admin_url=admin_url, reference_jobs=jobs))
    elapsed = time.perf_counter() - wall
    table = "\n".join(
        goal.row() for goal in goals(rows, enqueued, pickup, endpoint, big, per_statement, queued)
    )
    after = await asyncio.to_thread(measure.quiet_check)
    sections = [
        throughput_section.replace("# Throughput", "## Throughput", 1),
        enqueue.render(enqueued),
        latency.render(pickup),
        status.render(endpoint),
        bigtable.render(big),
        statements_section,
        million.render(queued),
    ]
    demoted = [section.replace("\n## ", "\n### ").replace("\n# ", "\n## ") for section in sections]
    return f"""# taskhub benchmarks: one run, every figure

All figures below come from one run of `bench/run.py` ({elapsed / 60:.0f} minutes) on this
machine{where}. Machine before the run: {quiet.describe()}; after: {after.describe()}.

| figure | goal | measured | |
|---|---|---|---|
{table}

Why the goals that are not met are not: see [Where the time goes](#where-the-time-goes).

{chr(10).join(demoted)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin connection; with --dedicated-server, the server whose settings are copied",
    )
    parser.add_argument(
        "--dedicated-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run everything on a throwaway PostgreSQL 15 (bench/server.py) with "
        "pg_stat_statements preloaded (default: on)",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per throughput drain")
    parser.add_argument("--output", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.dedicated_server:
        with server.dedicated_server(args.database_url) as url:
            where = (
                ", on a dedicated PostgreSQL started for the run (`bench/server.py`: the "
                f"settings of `{args.database_url}` copied, pg_stat_statements preloaded)"
            )
            report = asyncio.run(run(url, args.jobs, where))
    else:
        report = asyncio.run(run(args.database_url, args.jobs, f", server `{args.database_url}`"))
    print(report)
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

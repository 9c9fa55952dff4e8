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
import enqueue_peers
import idle
import latency
import measure
import million
import server
import statements
import status
import steady
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
    big: bigtable.BigtableFigures | None,
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
    if big is not None:
        empty = big.rate("empty", 1)
        full = big.rate(f"{big.options.finished / 1e6:g}M finished", 1)
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


def _best(rows: Sequence[throughput.Row], processes: int | None) -> throughput.Row | None:
    peers = [
        row
        for row in rows
        if row.system != "taskhub"
        and row.error is None
        and (processes is None or row.processes == processes)
    ]
    return max(peers, key=lambda row: row.jobs_per_second, default=None)


def _label(row: throughput.Row) -> str:
    return f"{row.system}, {row.config}, {row.processes}p: {row.jobs_per_second:,.0f}"


def issue21_goals(
    rows: Sequence[throughput.Row],
    enqueued: enqueue_peers.EnqueuePeersFigures | None,
    settled: steady.SteadyFigures | None,
    resting: idle.IdleFigures | None,
) -> list[Goal]:
    """The goals of issue 21 (throughput round two) that the sections above do not check."""
    result: list[Goal] = []
    for processes, peers_processes, text in ((2, None, "best configuration"), (1, 1, "1 process")):
        ours = _rate(rows, "taskhub", processes)
        best = _best(rows, peers_processes)
        result.append(
            Goal(
                f"work, {processes} process(es) / the best peer ({text})",
                "≥ 1.5x",
                f"{ours / best.jobs_per_second:.2f}x ({ours:,.0f} vs {_label(best)})"
                if best and best.jobs_per_second
                else "n/a",
                ours >= 1.5 * best.jobs_per_second if best else None,
            )
        )
    if enqueued is not None:
        ours_row = enqueued.row("taskhub")
        for attribute, text in (
            ("single_rate", "1 job per transaction"),
            ("batch_rate", "batches of 1,000"),
        ):
            peer = enqueued.best_peer(attribute)
            ours_rate = float(getattr(ours_row, attribute)) if ours_row else 0.0
            peer_rate = float(getattr(peer, attribute)) if peer else 0.0
            result.append(
                Goal(
                    f"enqueue, {text} / the best peer",
                    "≥ 1x",
                    f"{ours_rate / peer_rate:.2f}x"
                    f" ({ours_rate:,.0f} vs {peer.name}: {peer_rate:,.0f})"
                    if peer and peer_rate
                    else "n/a",
                    ours_rate >= peer_rate if peer else None,
                )
            )
    if settled is not None:
        for phase in settled.phases:
            if phase.system != "taskhub" or phase.error or phase.fraction < 0.85:
                continue
            p99 = phase.from_commit.p99
            result.append(
                Goal(
                    f"steady state at {phase.fraction:.0%} of the drain rate, {phase.processes}p:"
                    " pickup p99, backlog",
                    "≤ 5 ms, flat",
                    f"{p99:.1f} ms, {'flat' if phase.flat else 'growing'}"
                    f" (arrivals {phase.achieved:,.0f}/s of {phase.target:,.0f} asked)",
                    p99 <= 5 and phase.flat,
                )
            )
    if resting is not None:
        for row_ in resting.rows:
            if row_.system != "taskhub" or row_.error:
                continue
            per_second = row_.per_second(row_.counted)
            per_process = per_second / row_.processes if per_second is not None else None
            result.append(
                Goal(
                    "idle: queries per second per idle worker process",
                    "≤ 1",
                    f"{per_process:.2f}" if per_process is not None else "n/a",
                    per_process <= 1 if per_process is not None else None,
                )
            )
    return result


def steady_rates(rows: Sequence[throughput.Row]) -> dict[str, float]:
    """Each system's drain rate in this run, by the key steady.py knows it by."""
    rates: dict[str, float] = {}
    for name in throughput.SYSTEMS:
        if name == "celery":
            for row in rows:
                if row.system == "celery" and row.error is None:
                    rates[f"celery@{row.processes}"] = row.jobs_per_second
            continue
        for system in throughput.postgres_systems(
            name, throughput.taskhub_default_concurrency(), throughput.DEFAULT_PEER_CONCURRENCY
        ):
            for row in rows:
                if (row.system, row.config) == (system.name, system.config) and row.error is None:
                    rates[f"{system.key}@{row.processes}"] = row.jobs_per_second
    return rates


async def has_pg_stat_statements(admin_url: str) -> bool:
    async with await AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cursor = await conn.execute("SHOW shared_preload_libraries")
        row = await cursor.fetchone()
    return row is not None and "pg_stat_statements" in str(row[0])


async def run(admin_url: str, jobs: int, where: str = "", skip: Sequence[str] = ()) -> str:
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
    peers_enqueued = await enqueue_peers.measure(
        enqueue_peers.EnqueuePeersOptions(admin_url=admin_url)
    )
    enqueued = await enqueue.measure(enqueue.EnqueueOptions(admin_url=admin_url))
    pickup = await latency.measure(latency.LatencyOptions(admin_url=admin_url))
    endpoint = await status.measure(status.StatusOptions(admin_url=admin_url))
    big = (
        None
        if "bigtable" in skip
        else await bigtable.measure(bigtable.BigtableOptions(admin_url=admin_url))
    )
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
    settled = (
        None
        if "steady" in skip
        else await steady.measure(
            steady.SteadyOptions(admin_url=admin_url, rates=steady_rates(rows))
        )
    )
    resting = None if "idle" in skip else await idle.measure(idle.IdleOptions(admin_url=admin_url))
    elapsed = time.perf_counter() - wall
    table = "\n".join(
        goal.row()
        for goal in [
            *issue21_goals(rows, peers_enqueued, settled, resting),
            *goals(rows, enqueued, pickup, endpoint, big, per_statement, queued),
        ]
    )
    after = await asyncio.to_thread(measure.quiet_check)
    sections = [
        throughput_section.replace("# Throughput", "## Throughput", 1),
        enqueue_peers.render(peers_enqueued),
        enqueue.render(enqueued),
        latency.render(pickup),
        status.render(endpoint),
        *([] if big is None else [bigtable.render(big)]),
        statements_section,
        million.render(queued),
        *([] if settled is None else [steady.render(settled)]),
        *([] if resting is None else [idle.render(resting)]),
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
    parser.add_argument(
        "--skip",
        type=throughput.csv_of(str),
        default=[],
        help="sections to leave out: bigtable (builds a 10M-job template the first time: "
        "10+ minutes, ~20 GB), steady, idle",
    )
    args = parser.parse_args(argv)
    if args.dedicated_server:
        with server.dedicated_server(args.database_url) as url:
            where = (
                ", on a dedicated PostgreSQL started for the run (`bench/server.py`: the "
                f"settings of `{args.database_url}` copied, pg_stat_statements preloaded)"
            )
            report = asyncio.run(run(url, args.jobs, where, args.skip))
    else:
        report = asyncio.run(
            run(args.database_url, args.jobs, f", server `{args.database_url}`", args.skip)
        )
    print(report)
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

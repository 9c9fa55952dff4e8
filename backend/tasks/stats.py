"""taskhub.rollup_stats: per-minute statistics that outlive pruning (backend/control/stats.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from backend.control import stats
from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()

# A run that fell behind (workers down for days) catches up over several runs.
MAX_WINDOWS = 50


@blueprint.task(
    name="taskhub.rollup_stats",
    queue="maintenance",
    cron="* * * * *",
    queueing_lock="taskhub.rollup_stats",
)
async def rollup_stats(args: PeriodicArgs, ctx: TaskContext) -> stats.RollupReport:
    """Count the attempts that ended since the last run into taskhub.task_stats (per minute,
    task and queue, kept 30 days) and taskhub.task_totals; one window per transaction, the
    watermark row locked, so two runs at once never count an event twice. Sample each queue's
    depth into taskhub.queue_depth (the latest sample of a minute wins). Then delete per-minute
    rows and samples past retention, in batches."""
    report = stats.RollupReport()
    for _ in range(MAX_WINDOWS):
        async with ctx.connection() as conn:
            done = await stats.rollup_window(conn)
        if done is None:
            break
        report.rolled_up_to = done.until
        report.attempts += done.attempts
        report.windows += 1
        if done.caught_up:
            break
    async with ctx.connection() as conn:
        report.queues_sampled = await stats.sample_queue_depth(conn)
    report.pruned = await prune(ctx, stats.prune_batch)
    report.depth_pruned = await prune(ctx, stats.prune_depth_batch)
    return report


async def prune(ctx: TaskContext, batch: Callable[[DictConnection], Awaitable[int]]) -> int:
    """Delete in batches, one transaction each, until a batch comes back short."""
    pruned = 0
    while True:
        async with ctx.connection() as conn:
            deleted = await batch(conn)
        pruned += deleted
        if deleted < stats.PRUNE_BATCH:
            return pruned

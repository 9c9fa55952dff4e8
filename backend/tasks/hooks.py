"""``taskhub.on_failure``: runs a task's on_failure hook once per final failure.

The worker defers this job in the very statement that marks the failed job ``failed``, so a
final failure gets exactly one hook job, whatever crashes; the hook job itself is retried.
"""

from __future__ import annotations

import asyncio
import inspect

from pydantic import BaseModel

from backend.control.jobs import get_job
from backend.declare.policy import Retry
from backend.declare.registry import TaskBlueprint
from backend.runtime.app import definition_of
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()


class FailureHookArgs(BaseModel):
    job_id: int


class FailureHookReport(BaseModel):
    job_id: int
    task: str
    hook: str | None


@blueprint.task(name="taskhub.on_failure", retry=Retry(retries=3, backoff=10))
async def run_failure_hook(args: FailureHookArgs, ctx: TaskContext) -> FailureHookReport:
    """Call the failed task's on_failure hook with the failed job (errors included)."""
    async with ctx.connection() as conn:
        job = await get_job(conn, args.job_id)
    definition = definition_of(ctx.app, job.task)
    hook = definition.on_failure if definition else None
    if hook is not None:
        outcome = (
            hook(job) if inspect.iscoroutinefunction(hook) else await asyncio.to_thread(hook, job)
        )
        if inspect.isawaitable(outcome):
            await outcome
    return FailureHookReport(
        job_id=job.id, task=job.task, hook=getattr(hook, "__qualname__", None) if hook else None
    )

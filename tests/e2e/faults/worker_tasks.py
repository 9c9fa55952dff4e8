"""Tasks of test_worker_faults.py, loaded with ``--app tests.e2e.faults.worker_tasks``."""

from __future__ import annotations

import os
import signal

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()
MB = 1024 * 1024


class KilledArgs(BaseModel):
    mb: int = 64


@blueprint.task(name="faults.oom_killed", queue="poison", time_limit=60, retry=2)
def oom_killed(args: KilledArgs) -> int:
    """A poison job the kernel's OOM killer ends: it takes memory, then gets SIGKILL (sent to
    itself here, as the killer would), with no chance to report. Sync with a time limit, so
    it runs in a child of the worker."""
    held = [b"\x01" * MB for _ in range(args.mb)]
    os.kill(os.getpid(), signal.SIGKILL)
    return len(held)


class TallyArgs(BaseModel):
    n: int
    fail_first: bool = False


class FirstAttemptFailed(Exception):
    """The planned failure of a tally job's first attempt."""


@blueprint.task(name="faults.tally", queue="tally", retry=1)
async def tally(args: TallyArgs, ctx: TaskContext) -> int:
    """Returns its number; with ``fail_first``, only on its second attempt, so a run of many
    jobs has retried attempts among them."""
    if args.fail_first and ctx.attempt == 1:
        raise FirstAttemptFailed(f"job {args.n} fails its first attempt")
    return args.n


app = TaskhubApp(name="faults_workers", blueprints=[blueprint])

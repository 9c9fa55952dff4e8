"""The fault suite's own tasks, loaded by workers with ``--app tests.e2e.faults.tasks``."""

from __future__ import annotations

import asyncio
import os
import resource
import signal

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()
MB = 1024 * 1024


class HoldArgs(BaseModel):
    seconds: float


@blueprint.task(name="faults.hold", queue="held")
async def hold(args: HoldArgs, ctx: TaskContext) -> int:
    """Keeps one of the worker's pooled connections busy for ``seconds``."""
    async with ctx.connection() as conn:
        await conn.execute("SELECT pg_sleep(%s)", (args.seconds,))
    return os.getpid()


class WhoArgs(BaseModel):
    sleep: float = 0
    first_sleep: float | None = None  # the first attempt's sleep, if not ``sleep``


@blueprint.task(name="faults.whoami", queue="faults")
async def whoami(args: WhoArgs, ctx: TaskContext) -> dict[str, int]:
    """Says which process ran which attempt: two runs of one job tell themselves apart."""
    first = ctx.attempt == 1 and args.first_sleep is not None
    await asyncio.sleep(args.first_sleep if first and args.first_sleep else args.sleep)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


class WorkArgs(BaseModel):
    n: int
    sleep: float = 0.05


@blueprint.task(name="faults.work", queue="steady")
async def work(args: WorkArgs) -> int:
    """A well-behaved job whose pace the poison must not take away."""
    await asyncio.sleep(args.sleep)
    return args.n


class GobbleArgs(BaseModel):
    cap_mb: int = 300
    chunk_mb: int = 16


@blueprint.task(name="faults.gobble", queue="poison", time_limit=60, retry=2)
def gobble(args: GobbleArgs) -> int:
    """A poison job: it takes memory until there is none. Sync with a time limit, so it runs
    in a child of the worker, whose address space is capped at ``cap_mb`` above its size now
    (as a container's memory limit would be): the child ends with a MemoryError."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = size + args.cap_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    held = []
    while True:
        held.append(b"\x01" * (args.chunk_mb * MB))


class OomArgs(BaseModel):
    mb: int = 200


@blueprint.task(name="faults.oom", queue="oom")
def oom(args: OomArgs) -> None:
    """A poison job that takes its worker down: it fills the worker's own memory (sync with no
    time limit, so in the worker's thread pool) and the worker is killed, as the kernel's OOM
    killer kills a process at a container's memory limit (SIGKILL stands in for it here)."""
    held = b"\x01" * (args.mb * MB)
    os.kill(os.getpid(), signal.SIGKILL)
    del held


app = TaskhubApp(name="faults", blueprints=[blueprint])

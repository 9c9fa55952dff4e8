"""A second poison for the fault suite, loaded with ``--app tests.e2e.faults.poison``."""

from __future__ import annotations

import os
import signal

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint

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


app = TaskhubApp(name="faults_poison", blueprints=[blueprint])

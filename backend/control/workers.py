"""Workers: every worker process taskhub has seen, live or dead, until pruning forgets it."""

from __future__ import annotations

import datetime

from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.queries import QUERIES


class WorkerInfo(BaseModel):
    id: int = Field(description="procrastinate's worker id (the jobs' worker_id)")
    host: str
    pid: int
    queues: list[str] | None = Field(description="Queues it serves; null: all queues")
    concurrency: int = Field(description="Jobs it runs at once")
    started_at: datetime.datetime
    last_heartbeat: datetime.datetime
    stopped_at: datetime.datetime | None = Field(description="Set when it stopped cleanly")
    alive: bool = Field(
        description="False when it stopped, or sent no heartbeat for TASKHUB_RESCUE_AFTER"
    )
    jobs_running: int = Field(description="Its jobs running now")
    jobs_done: int = Field(description="Jobs it finished, as of its last heartbeat")


async def list_workers(conn: DictConnection, rescue_after: float) -> list[WorkerInfo]:
    """Live workers first, then dead ones (kept 7 days: pruning deletes them)."""
    cursor = await conn.execute(QUERIES["list_workers"], {"rescue_after": rescue_after})
    return [WorkerInfo.model_validate(row) for row in await cursor.fetchall()]

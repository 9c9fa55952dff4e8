"""Queues: what waits where, and pausing a queue (its jobs wait; other queues go on)."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.queries import QUERIES


class QueueInfo(BaseModel):
    name: str = Field(examples=["emails"])
    todo: int = Field(description="Jobs waiting (scheduled ones included)")
    doing: int = Field(description="Jobs running now")
    oldest_todo_at: datetime.datetime | None = Field(
        description="When the oldest waiting job was deferred"
    )
    paused: bool
    paused_at: datetime.datetime | None
    paused_by: str | None


class PurgeResult(BaseModel):
    name: str = Field(examples=["emails"])
    purged: int = Field(description="Waiting jobs deleted")


async def purge(conn: DictConnection, name: str, actor: str) -> PurgeResult:
    """Delete the queue's waiting jobs (running ones go on), audited when any was deleted.
    A job a worker is fetching at that instant is left to run."""
    cursor = await conn.execute(QUERIES["purge_queue"], {"queue": name, "actor": actor})
    row = await cursor.fetchone()
    return PurgeResult(name=name, purged=int(row["purged"]) if row else 0)


async def list_queues(conn: DictConnection) -> list[QueueInfo]:
    return await _queues(conn, None)


async def _queues(conn: DictConnection, name: str | None) -> list[QueueInfo]:
    cursor = await conn.execute(QUERIES["list_queues"], {"queue": name})
    return [QueueInfo.model_validate(row) for row in await cursor.fetchall()]


async def get_queue(conn: DictConnection, name: str) -> QueueInfo:
    """A queue's figures; an unknown queue is simply empty (queues exist by use)."""
    for queue in await _queues(conn, name):
        return queue
    return QueueInfo(
        name=name, todo=0, doing=0, oldest_todo_at=None, paused=False, paused_at=None,
        paused_by=None,
    )  # fmt: skip


async def pause(conn: DictConnection, name: str, actor: str) -> bool:
    """Stop workers from taking this queue's jobs; running ones finish. Idempotent: False when
    it was paused already."""
    return await _change(conn, "pause", name, actor, {"queue": name, "actor": actor})


async def resume(conn: DictConnection, name: str, actor: str) -> bool:
    """Let workers take this queue's jobs again, at once. Idempotent: False when it was not
    paused."""
    return await _change(conn, "resume", name, actor, {"queue": name})


async def _change(
    conn: DictConnection,
    action: Literal["pause", "resume"],
    name: str,
    actor: str,
    params: dict[str, str],
) -> bool:
    """Run the ``<action>_queue`` query; audit it when it changed something."""
    cursor = await conn.execute(QUERIES[f"{action}_queue"], params)
    if await cursor.fetchone() is None:
        return False
    await conn.execute(
        QUERIES["record_queue_audit"], {"actor": actor, "action": action, "queue": name}
    )
    return True


async def pause_queue(conn: DictConnection, name: str, actor: str) -> QueueInfo:
    """``pause``, then the queue's figures (waiting and running jobs only)."""
    await pause(conn, name, actor)
    return await get_queue(conn, name)


async def resume_queue(conn: DictConnection, name: str, actor: str) -> QueueInfo:
    """``resume``, then the queue's figures (waiting and running jobs only)."""
    await resume(conn, name, actor)
    return await get_queue(conn, name)
